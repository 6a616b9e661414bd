//! `[[route]]` and `[[site.route]]` entries: a prefix and exactly one
//! action, each action's fields checked (absolute paths, plain index names,
//! redirect statuses and targets with their placeholders, environment
//! names).

use super::raw::{
    RawCgi, RawCgiLimits, RawRedirect, RawRespond, RawRoute, RawStatic, RawStatus, RawWiden,
};
use super::validate::Invalid;
use super::*;
use toml::Spanned;

/// One route: its prefix and its one action (its site, fields and origin
/// are the caller's to fill in).
pub(super) fn route(r: &Spanned<RawRoute>) -> Result<Route, Invalid> {
    let span = r.span();
    let r = r.get_ref();
    let prefix = r.prefix.get_ref();
    if !prefix.starts_with('/') {
        return Err((
            r.prefix.span(),
            format!("route prefix {prefix:?} must start with '/'"),
        ));
    }
    if let (Some(w), None) = (&r.sandbox, &r.cgi) {
        return Err((
            w.span(),
            "sandbox widens what a route's CGI scripts get: this route runs none".into(),
        ));
    }
    let actions = [
        r.respond.is_some(),
        r.static_.is_some(),
        r.redirect.is_some(),
        r.cgi.is_some(),
        r.status.is_some(),
    ];
    const ACTIONS: &str = "respond, static, redirect, cgi or status";
    match actions.iter().filter(|&&a| a).count() {
        0 => return Err((span, format!("route needs an action: {ACTIONS}"))),
        1 => {}
        _ => return Err((span, format!("a route has one action: {ACTIONS}"))),
    }
    let action = if let Some(v) = &r.respond {
        respond(v)?
    } else if let Some(st) = &r.static_ {
        Action::Static(static_route(st.get_ref())?)
    } else if let Some(rd) = &r.redirect {
        redirect(rd)?
    } else if let Some(c) = &r.cgi {
        Action::Cgi(Box::new(CgiRoute {
            widen: match &r.sandbox {
                Some(w) => widen(w.get_ref())?,
                None => Widen::default(),
            },
            ..cgi_route(c)?
        }))
    } else if let Some(s) = &r.status {
        Action::Status(status_format(s.get_ref())?)
    } else {
        unreachable!("one action counted above")
    };
    let allow = match &r.allow {
        Some(list) => Some(allow(list)?),
        None => None,
    };
    Ok(Route {
        prefix: prefix.clone(),
        action,
        allow,
        site: 0,
        fields: Fields::default(),
        origin: String::new(),
    })
}

/// `status = { format = "text" | "json" | "prometheus" }` (text by default).
fn status_format(s: &RawStatus) -> Result<StatusFormat, Invalid> {
    let Some(f) = &s.format else {
        return Ok(StatusFormat::Text);
    };
    match f.get_ref().as_str() {
        "text" => Ok(StatusFormat::Text),
        "json" => Ok(StatusFormat::Json),
        "prometheus" => Ok(StatusFormat::Prometheus),
        other => Err((
            f.span(),
            format!("unknown status format {other:?}: expected text, json or prometheus"),
        )),
    }
}

/// A route's `allow = ["127.0.0.1/32", "::1/128", "unix"]`: address ranges
/// (and `"unix"` for Unix socket peers); at least one entry, at most 1024.
fn allow(list: &Spanned<Vec<Spanned<String>>>) -> Result<Allow, Invalid> {
    if list.get_ref().is_empty() {
        return Err((
            list.span(),
            "allow needs at least one address range (leave it out to allow everyone)".into(),
        ));
    }
    if list.get_ref().len() > 1024 {
        return Err((list.span(), "allow has more than 1024 entries".into()));
    }
    let mut a = Allow::default();
    for entry in list.get_ref() {
        match entry.get_ref().as_str() {
            "unix" => a.unix = true,
            s => a
                .ranges
                .push(Cidr::parse(s).map_err(|e| (entry.span(), e))?),
        }
    }
    Ok(a)
}

fn respond(resp: &Spanned<RawRespond>) -> Result<Action, Invalid> {
    let v = resp.get_ref();
    let status = *v.status.get_ref();
    if !(200..=599).contains(&status) {
        return Err((
            v.status.span(),
            format!("status {status} out of range 200-599"),
        ));
    }
    Ok(Action::Respond {
        status,
        body: v.body.clone(),
        content_type: v
            .content_type
            .clone()
            .unwrap_or_else(|| "text/plain".into()),
    })
}

fn redirect(rd: &Spanned<RawRedirect>) -> Result<Action, Invalid> {
    let v = rd.get_ref();
    let status = v.status.as_ref().map_or(Ok(301), |s| match *s.get_ref() {
        n @ (301 | 302 | 303 | 307 | 308) => Ok(n),
        n => Err((
            s.span(),
            format!("redirect status {n} is not one of 301, 302, 303, 307, 308"),
        )),
    })?;
    let to = Template::parse(v.to.get_ref()).map_err(|e| (v.to.span(), e))?;
    Ok(Action::Redirect { to, status })
}

fn cgi_route(c: &Spanned<RawCgi>) -> Result<CgiRoute, Invalid> {
    let raw = c.get_ref();
    let absolute = |v: &Spanned<String>, what: &str| -> Result<PathBuf, Invalid> {
        if v.get_ref().starts_with('/') {
            Ok(PathBuf::from(v.get_ref()))
        } else {
            Err((
                v.span(),
                format!("cgi {what} {:?} must be an absolute path", v.get_ref()),
            ))
        }
    };
    let target = match (&raw.dir, &raw.script) {
        (Some(d), None) => CgiTarget::Dir(absolute(d, "dir")?),
        (None, Some(s)) => CgiTarget::Script(absolute(s, "script")?),
        _ => return Err((c.span(), "cgi needs exactly one of dir or script".into())),
    };
    let mut interpreters = Vec::new();
    for (ext, path) in &raw.interpreters {
        if !ext.starts_with('.') || ext.len() < 2 || ext[1..].contains('.') {
            return Err((
                path.span(),
                format!("interpreter key {ext:?} must be an extension like \".py\""),
            ));
        }
        interpreters.push((ext.clone(), absolute(path, "interpreter")?));
    }
    let mut env = Vec::new();
    for (k, v) in &raw.env {
        let valid = !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid || v.get_ref().contains('\0') {
            return Err((v.span(), format!("bad environment variable {k:?}")));
        }
        env.push((k.clone(), v.get_ref().clone()));
    }
    Ok(CgiRoute {
        target,
        timeout: raw
            .timeout
            .as_ref()
            .map_or(Duration::from_secs(30), |d| d.0),
        interpreters,
        env,
        widen: Widen::default(),
        limits: cgi_limits(raw.limits.as_ref()),
        stderr: raw.stderr.map_or(DEFAULT_CGI_STDERR, |s| s.0),
        slot: 0,
        buffer_body: raw.buffer_body.unwrap_or(true),
    })
}

/// `limits = { processes, memory, cpu, open_files, file_size }`, each
/// bounded where it is parsed (`raw::RawCgiLimits`); defaults for the rest.
fn cgi_limits(raw: Option<&RawCgiLimits>) -> CgiLimits {
    let d = CgiLimits::default();
    let Some(l) = raw else { return d };
    CgiLimits {
        processes: l.processes.map_or(d.processes, |c| c.0),
        memory: l.memory.map_or(d.memory, |s| s.0),
        // RLIMIT_CPU counts whole seconds: a part of one is one.
        cpu_secs: l
            .cpu
            .map_or(d.cpu_secs, |c| c.0.as_millis().div_ceil(1000) as u64),
        open_files: l.open_files.map_or(d.open_files, |c| c.0),
        file_size: l.file_size.map_or(d.file_size, |s| s.0),
    }
}

/// A route's `sandbox = { read, write, connect_ports, connect_unix,
/// udp_ports }`: absolute paths
/// (they need not exist yet: a missing one grants nothing, and is said at
/// start), ports other than 0.
fn widen(w: &RawWiden) -> Result<Widen, Invalid> {
    let paths = |list: &[Spanned<String>], what: &str| -> Result<Vec<PathBuf>, Invalid> {
        list.iter()
            .map(|p| match p.get_ref().starts_with('/') {
                true => Ok(PathBuf::from(p.get_ref())),
                false => Err((
                    p.span(),
                    format!("sandbox {what} path {:?} must be absolute", p.get_ref()),
                )),
            })
            .collect()
    };
    let ports = |list: &[Spanned<u16>], what: &str| -> Result<Vec<u16>, Invalid> {
        list.iter()
            .map(|p| match *p.get_ref() {
                0 => Err((p.span(), format!("sandbox {what}: port 0"))),
                n => Ok(n),
            })
            .collect()
    };
    let connect_unix = paths(&w.connect_unix, "connect_unix")?;
    for (p, raw) in connect_unix.iter().zip(&w.connect_unix) {
        // sun_path holds 108 bytes with the terminating NUL.
        if p.as_os_str().len() > 107 {
            return Err((
                raw.span(),
                "sandbox connect_unix: a socket path has at most 107 bytes".into(),
            ));
        }
    }
    Ok(Widen {
        read: paths(&w.read, "read")?,
        write: paths(&w.write, "write")?,
        connect_ports: ports(&w.connect_ports, "connect_ports")?,
        connect_unix,
        udp_ports: ports(&w.udp_ports, "udp_ports")?,
    })
}

fn static_route(st: &RawStatic) -> Result<StaticRoute, Invalid> {
    let root = st.root.get_ref();
    if !root.starts_with('/') {
        return Err((
            st.root.span(),
            format!("static root {root:?} must be an absolute path"),
        ));
    }
    let index = match &st.index {
        None => vec!["index.html".to_string()],
        Some(list) => {
            let mut v = Vec::new();
            for i in list {
                let name = i.get_ref();
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err((
                        i.span(),
                        format!("index {name:?} must be a plain file name"),
                    ));
                }
                v.push(name.clone());
            }
            v
        }
    };
    Ok(StaticRoute {
        root: PathBuf::from(root),
        index,
        autoindex: st.autoindex,
        dotfiles: st.dotfiles,
        precompressed: st.precompressed,
    })
}
