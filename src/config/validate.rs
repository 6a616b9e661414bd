//! Validation: everything serde cannot see on its own (names, paths,
//! cross-field rules, user lookups), and defaults applied.

use super::raw::{RawCgi, RawConfig, RawStatic};
use super::*;
use std::ops::Range;
use toml::Spanned;

type Invalid = (Range<usize>, String);

/// `[limits] park_after`: see `http::worker` for how it was chosen.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_millis(100);
/// `[server] max_connections_per_ip`: an eighth of the default
/// `max_connections`, so that one host cannot hold more than that many
/// workers, nor fill the gate.
pub const DEFAULT_PER_IP: usize = 64;
/// `[server] temp_dir`: for files that may be large (`/tmp` is often a small
/// tmpfs); under systemd's `PrivateTmp=` it is the service's own.
pub const DEFAULT_TEMP_DIR: &str = "/var/tmp";
/// `[limits] cgi_body_in_memory`: most form posts fit; uploads go to disk.
pub const DEFAULT_CGI_BODY_IN_MEMORY: u64 = 64 << 10;

pub(super) fn validate(raw: RawConfig) -> Result<Config, Invalid> {
    let user = match &raw.server.user {
        None => None,
        Some(u) => match crate::users::user(u.get_ref()) {
            Some((uid, gid)) => Some((u.get_ref().clone(), uid, gid)),
            None => return Err((u.span(), format!("unknown user {:?}", u.get_ref()))),
        },
    };
    let group = match &raw.server.group {
        None => None,
        Some(g) => Some((g.get_ref().clone(), lookup_group(g)?)),
    };

    let mut listen: Vec<ListenSpec> = Vec::new();
    let mut names: Vec<(String, Range<usize>)> = Vec::new();
    for l in &raw.listen {
        let span = l.span();
        if listen.len() == MAX_LISTENERS {
            return Err((
                span,
                format!("more than {MAX_LISTENERS} [[listen]] entries"),
            ));
        }
        let l = l.get_ref();
        let address = l.address.get_ref().0.clone();
        if listen.iter().any(|o| o.address == address) {
            return Err((
                l.address.span(),
                format!("duplicate listen address {address}"),
            ));
        }
        let name = match &l.name {
            None => None,
            Some(n) => {
                let s = n.get_ref();
                if s.is_empty() || s.contains(':') || s.len() > 255 {
                    return Err((
                        n.span(),
                        format!("bad listener name {s:?}: 1-255 characters, no ':'"),
                    ));
                }
                if names.iter().any(|(o, _)| o == s) {
                    return Err((n.span(), format!("duplicate listener name {s:?}")));
                }
                names.push((s.clone(), n.span()));
                Some(s.clone())
            }
        };
        let is_unix = matches!(address, ListenAddr::Unix(_));
        for (key, v) in [("mode", &l.mode), ("owner", &l.owner), ("group", &l.group)] {
            if let (Some(v), false) = (v, is_unix) {
                return Err((v.span(), format!("{key} applies to unix sockets only")));
            }
        }
        if l.v6only && !matches!(address, ListenAddr::Tcp(SocketAddr::V6(_))) {
            return Err((span, "v6only applies to IPv6 addresses only".into()));
        }
        let mode = match &l.mode {
            None => None,
            Some(m) => match u32::from_str_radix(m.get_ref(), 8) {
                Ok(v) if v <= 0o777 => Some(v),
                _ => {
                    return Err((
                        m.span(),
                        format!("bad mode {:?}: expected octal like \"0660\"", m.get_ref()),
                    ))
                }
            },
        };
        let owner = match &l.owner {
            None => None,
            Some(u) => match crate::users::user(u.get_ref()) {
                Some((uid, _)) => Some(uid),
                None => return Err((u.span(), format!("unknown user {:?}", u.get_ref()))),
            },
        };
        let group = match &l.group {
            None => None,
            Some(g) => Some(lookup_group(g)?),
        };
        let backlog = l
            .backlog
            .as_ref()
            .map_or(1024, |b| b.0.min(i32::MAX as u64) as i32);
        listen.push(ListenSpec {
            address,
            backlog,
            name,
            v6only: l.v6only,
            mode,
            owner,
            group,
        });
    }

    let mut routes: Vec<Route> = Vec::new();
    for r in &raw.route {
        let span = r.span();
        let r = r.get_ref();
        let prefix = r.prefix.get_ref();
        if !prefix.starts_with('/') {
            return Err((
                r.prefix.span(),
                format!("route prefix {prefix:?} must start with '/'"),
            ));
        }
        if routes.iter().any(|o| &o.prefix == prefix) {
            return Err((
                r.prefix.span(),
                format!("duplicate route prefix {prefix:?}"),
            ));
        }
        let actions = [
            r.respond.is_some(),
            r.static_.is_some(),
            r.redirect.is_some(),
            r.cgi.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() > 1 {
            return Err((
                span,
                "a route has one action: respond, static, redirect or cgi".into(),
            ));
        }
        if let Some(c) = &r.cgi {
            routes.push(Route {
                prefix: prefix.clone(),
                action: Action::Cgi(cgi_route(c)?),
            });
            continue;
        }
        if let Some(st) = &r.static_ {
            routes.push(Route {
                prefix: prefix.clone(),
                action: Action::Static(static_route(st.get_ref())?),
            });
            continue;
        }
        if let Some(rd) = &r.redirect {
            let v = rd.get_ref();
            let status = v.status.as_ref().map_or(Ok(301), |s| match *s.get_ref() {
                n @ (301 | 302 | 303 | 307 | 308) => Ok(n),
                n => Err((
                    s.span(),
                    format!("redirect status {n} is not one of 301, 302, 303, 307, 308"),
                )),
            })?;
            let to = v.to.get_ref();
            if to.is_empty() || to.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err((
                    v.to.span(),
                    "redirect target must be a non-empty URL without spaces or control characters"
                        .into(),
                ));
            }
            routes.push(Route {
                prefix: prefix.clone(),
                action: Action::Redirect {
                    to: to.clone(),
                    status,
                },
            });
            continue;
        }
        let action = match &r.respond {
            Some(resp) => {
                let v = resp.get_ref();
                let status = *v.status.get_ref();
                if !(200..=599).contains(&status) {
                    return Err((
                        v.status.span(),
                        format!("status {status} out of range 200-599"),
                    ));
                }
                Action::Respond {
                    status,
                    body: v.body.clone(),
                    content_type: v
                        .content_type
                        .clone()
                        .unwrap_or_else(|| "text/plain".into()),
                }
            }
            None => {
                return Err((
                    span,
                    "route needs an action: respond, static, redirect or cgi".into(),
                ))
            }
        };
        routes.push(Route {
            prefix: prefix.clone(),
            action,
        });
    }
    // Longest prefix first: a stable sort keeps file order among equals (none: duplicates refused).
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    let temp_dir = temp_dir(&raw, user.as_ref(), group.as_ref())?;

    let limits = Limits {
        header_timeout: raw
            .limits
            .header_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        max_header_bytes: raw
            .limits
            .max_header_bytes
            .map_or(16 << 10, |s| s.0 as usize),
        max_headers: raw.limits.max_headers.map_or(100, |c| c.0 as usize),
        max_uri_bytes: raw.limits.max_uri_bytes.map_or(8 << 10, |s| s.0 as usize),
        max_body_bytes: raw.limits.max_body_bytes.map_or(10 << 20, |s| s.0),
        keepalive_timeout: raw
            .limits
            .keepalive_timeout
            .map_or(Duration::from_secs(5), |d| d.0),
        park_after: raw.limits.park_after.map_or(DEFAULT_PARK_AFTER, |d| d.0),
        body_timeout: raw
            .limits
            .body_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        min_body_rate: raw.limits.min_body_rate.map_or(500, |s| s.0),
        min_send_rate: raw.limits.min_send_rate.map_or(500, |s| s.0),
        stall_timeout: raw
            .limits
            .stall_timeout
            .map_or(Duration::from_secs(60), |d| d.0),
        max_requests_per_connection: raw.limits.max_requests_per_connection.map_or(1000, |c| c.0),
        cgi_body_in_memory: raw
            .limits
            .cgi_body_in_memory
            .map_or(DEFAULT_CGI_BODY_IN_MEMORY, |s| s.0),
    };
    let access = match &raw.log.access {
        None => AccessLog::Off,
        Some(a) => match a.get_ref().as_str() {
            "off" => AccessLog::Off,
            "stderr" => AccessLog::Stderr,
            "syslog" => AccessLog::Syslog,
            p if p.starts_with('/') => AccessLog::File(PathBuf::from(p)),
            other => {
                return Err((a.span(), format!("access log {other:?}: expected \"off\", \"stderr\", \"syslog\" or an absolute path")))
            }
        },
    };

    Ok(Config {
        source: String::new(),
        server: Server {
            user,
            group,
            max_connections: raw.server.max_connections.map_or(512, |c| c.0 as usize),
            max_pending: raw.server.max_pending.map(|c| c.0 as usize),
            max_connections_per_ip: raw
                .server
                .max_connections_per_ip
                .map_or(DEFAULT_PER_IP, |c| c.0 as usize),
            shutdown_timeout: raw
                .server
                .shutdown_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            server_header: raw.server.server_header.unwrap_or(true),
            temp_dir,
        },
        listen,
        log: LogConfig {
            level: raw.log.level.map_or(Level::Info, |l| l.0),
            target: raw.log.target.map_or(LogTarget::Auto, |t| t.0),
            access,
        },
        limits,
        routes,
    })
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

/// `[server] temp_dir`: an absolute path; and, when a CGI route may need it,
/// a directory where the workers can create unlinked files. Refused here
/// (at start, `check` and reload) rather than with a 500 on the first large
/// body; the error points at the key, or at the first CGI route when the
/// default is the problem.
fn temp_dir(
    raw: &RawConfig,
    user: Option<&(String, u32, u32)>,
    group: Option<&(String, u32)>,
) -> Result<PathBuf, Invalid> {
    let set = raw.server.temp_dir.as_ref();
    let dir = set.map_or(DEFAULT_TEMP_DIR, |d| d.get_ref().as_str());
    if !dir.starts_with('/') || dir.contains('\0') {
        let span = set.map_or(0..0, |d| d.span());
        return Err((span, format!("temp_dir {dir:?} must be an absolute path")));
    }
    let dir = PathBuf::from(dir);
    let Some(cgi) = raw.route.iter().find_map(|r| r.get_ref().cgi.as_ref()) else {
        return Ok(dir); // nothing will use it
    };
    let gid = group.map(|g| g.1).or(user.map(|u| u.2));
    if let Err(why) = usable_temp_dir(&dir, user.map(|u| (u.0.as_str(), u.1)), gid) {
        return Err(match set {
            Some(d) => (d.span(), format!("temp_dir {:?}: {why}", dir.display())),
            None => (
                cgi.span(),
                format!(
                    "CGI request bodies go to [server] temp_dir, by default {:?}: {why}",
                    dir.display()
                ),
            ),
        });
    }
    Ok(dir)
}

/// Can the workers create an unlinked file in `dir`? Tried as this process
/// (which is what the workers will be, unless started as root to drop to
/// `user`: then the directory's permissions must let that user write too).
fn usable_temp_dir(dir: &Path, user: Option<(&str, u32)>, gid: Option<u32>) -> Result<(), String> {
    use nix::errno::Errno;
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    use std::os::unix::fs::MetadataExt;
    let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
    if let Err(e) = open(dir, flags, Mode::S_IRUSR | Mode::S_IWUSR) {
        return Err(match e {
            Errno::ENOENT => "no such directory".to_string(),
            Errno::ENOTDIR => "not a directory".to_string(),
            Errno::EACCES | Errno::EPERM => "not writable".to_string(),
            Errno::EROFS => "on a read-only file system".to_string(),
            Errno::EOPNOTSUPP | Errno::EISDIR => {
                "its file system cannot make unlinked files (O_TMPFILE)".to_string()
            }
            e => format!("cannot make a file there: {e}"),
        });
    }
    let Some((name, uid)) = user else {
        return Ok(());
    };
    if !nix::unistd::geteuid().is_root() || uid == 0 {
        return Ok(()); // no privilege drop: what was tried is what will be
    }
    let m = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    let may = if m.uid() == uid {
        m.mode() & 0o300 == 0o300
    } else if Some(m.gid()) == gid {
        m.mode() & 0o030 == 0o030
    } else {
        m.mode() & 0o003 == 0o003
    };
    if may {
        Ok(())
    } else {
        Err(format!("not writable by user {name}"))
    }
}

fn lookup_group(g: &Spanned<String>) -> Result<u32, Invalid> {
    crate::users::group(g.get_ref())
        .ok_or_else(|| (g.span(), format!("unknown group {:?}", g.get_ref())))
}
