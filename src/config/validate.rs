//! Validation: everything serde cannot see on its own (names, paths,
//! cross-field rules, user lookups), and defaults applied.

use super::raw::{RawConfig, RawLimits, RawLog};
use super::*;
use std::ops::Range;
use toml::Spanned;

/// A refusal: the span of the offending text and why.
pub(super) type Invalid = (Range<usize>, String);

/// `[limits] park_after`: see `http::worker` for how it was chosen.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_millis(100);
/// `[server] worker_reserve` is `max_connections` divided by this: one
/// source alone may use seven eighths of the workers, and the last eighth
/// is kept for the others.
pub const RESERVE_DIVISOR: usize = 8;
/// `[server] temp_dir`: for files that may be large (`/tmp` is often a small
/// tmpfs); under systemd's `PrivateTmp=` it is the service's own.
pub const DEFAULT_TEMP_DIR: &str = "/var/tmp";
/// `[limits] cgi_body_in_memory`: most form posts fit; uploads go to disk.
pub const DEFAULT_CGI_BODY_IN_MEMORY: u64 = 64 << 10;

/// A valid configuration, and what deserves a warning in it.
pub(super) fn validate(raw: &RawConfig) -> Result<(Config, Vec<Invalid>), Invalid> {
    let mut warnings = Vec::new();
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

    let listen = listeners(raw)?;
    let temp_dir = temp_dir_path(raw)?;
    let limits = limits(&raw.limits);
    let access = access_log(&raw.log)?;
    let format = access_format(&raw.log)?;
    let sandbox = Sandbox {
        mode: sandbox_mode(raw)?,
        strict_syscalls: raw.sandbox.strict_syscalls.unwrap_or(false),
    };

    let max_connections = raw.server.max_connections.map_or(512, |c| c.0 as usize);
    let (worker_reserve, max_pending_per_source) = admission(raw, max_connections, &mut warnings)?;

    let cfg = Config {
        source: String::new(),
        text: String::new(),
        warnings: Vec::new(),
        server: Server {
            user,
            group,
            max_connections,
            max_pending: raw.server.max_pending.map(|c| c.0 as usize),
            max_pending_per_source,
            worker_reserve,
            shutdown_timeout: raw
                .server
                .shutdown_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            server_header: raw.server.server_header.unwrap_or(true),
            exit_idle_after: raw.server.exit_idle_after.map(|d| d.0),
            temp_dir,
        },
        listen,
        log: LogConfig {
            level: raw.log.level.as_ref().map_or(Level::Info, |l| l.0),
            target: raw.log.target.as_ref().map_or(LogTarget::Auto, |t| t.0),
            access,
            format,
            site_files: Vec::new(),
            line_budget: limits.max_header_bytes,
        },
        limits,
        routes: Vec::new(),
        sites: Vec::new(),
        default_site: 0,
        hosts: Names::default(),
        sandbox,
    };
    Ok((cfg, warnings))
}

/// `[server] worker_reserve` and `max_pending_per_source`, and what an old
/// `max_connections_per_ip` still means: 0 (which turned the per-source
/// limit off, e.g. behind a reverse proxy) turns fair admission's limits off
/// unless they are set; any other value is ignored. Either way a warning.
fn admission(
    raw: &RawConfig,
    max_connections: usize,
    warnings: &mut Vec<Invalid>,
) -> Result<(usize, Option<usize>), Invalid> {
    let s = &raw.server;
    let off = match &s.max_connections_per_ip {
        Some(old) => {
            let off = old.get_ref().0 == 0;
            let what = if off {
                "0 turns worker_reserve off and lets one source fill the gate, unless they are set"
            } else {
                "it is ignored"
            };
            warnings.push((
                old.span(),
                format!("max_connections_per_ip is no longer used (admission is fair by source: see worker_reserve and max_pending_per_source in lbaws.toml(5)); {what}"),
            ));
            off
        }
        None => false,
    };
    let reserve = match &s.worker_reserve {
        Some(r) if r.get_ref().0 as usize > max_connections => {
            return Err((
                r.span(),
                format!(
                    "worker_reserve = {} is more than max_connections ({max_connections})",
                    r.get_ref().0
                ),
            ))
        }
        Some(r) => r.get_ref().0 as usize,
        None if off => 0,
        None => max_connections / RESERVE_DIVISOR,
    };
    let per_source = match s.max_pending_per_source {
        Some(c) => Some(c.0 as usize),
        None if off => Some(usize::MAX),
        None => None,
    };
    Ok((reserve, per_source))
}

/// `[sandbox] mode`.
fn sandbox_mode(raw: &RawConfig) -> Result<SandboxMode, Invalid> {
    let Some(m) = &raw.sandbox.mode else {
        return Ok(SandboxMode::BestEffort);
    };
    match m.get_ref().as_str() {
        "best-effort" => Ok(SandboxMode::BestEffort),
        "required" => Ok(SandboxMode::Required),
        "off" => Ok(SandboxMode::Off),
        other => Err((
            m.span(),
            format!("sandbox mode {other:?}: expected \"best-effort\", \"required\" or \"off\""),
        )),
    }
}

/// The `[[listen]]` entries: distinct addresses and names, options that
/// fit their kind of socket.
fn listeners(raw: &RawConfig) -> Result<Vec<ListenSpec>, Invalid> {
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
        let proxy = proxy(l, span.clone(), is_unix)?;
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
            proxy,
        });
    }
    Ok(listen)
}

/// The most ranges one `proxy_from` may list.
pub const MAX_PROXY_FROM: usize = 256;

/// `proxy_protocol` and `proxy_from`: on TCP, the balancers allowed to send
/// the header must be listed (a listener that believed anyone's header would
/// let every client pick its own address); on a Unix socket they cannot be
/// (the socket file's mode, owner and group say who may connect).
fn proxy(
    l: &super::raw::RawListen,
    span: Range<usize>,
    is_unix: bool,
) -> Result<Option<Vec<Cidr>>, Invalid> {
    let from = match (&l.proxy_from, l.proxy_protocol, is_unix) {
        (None, false, _) => return Ok(None),
        (Some(f), false, _) => {
            return Err((f.span(), "proxy_from needs proxy_protocol = true".into()))
        }
        (None, true, true) => return Ok(Some(Vec::new())),
        (Some(f), true, true) => {
            return Err((
                f.span(),
                "proxy_from does not apply to unix sockets (their mode, owner and group say who may connect)".into(),
            ))
        }
        (None, true, false) => {
            return Err((
                span,
                "proxy_protocol = true needs proxy_from: the addresses of the balancers allowed to send the header".into(),
            ))
        }
        (Some(f), true, false) => f,
    };
    if from.get_ref().is_empty() {
        return Err((
            from.span(),
            "proxy_from is empty: list the balancers' addresses".into(),
        ));
    }
    if from.get_ref().len() > MAX_PROXY_FROM {
        return Err((
            from.span(),
            format!("proxy_from: more than {MAX_PROXY_FROM} entries"),
        ));
    }
    from.get_ref()
        .iter()
        .map(|c| Cidr::parse(c.get_ref()).map_err(|e| (c.span(), e)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `[limits]`, with defaults (the bounds were checked as the file was read).
fn limits(raw: &RawLimits) -> Limits {
    Limits {
        header_timeout: raw.header_timeout.map_or(Duration::from_secs(10), |d| d.0),
        queue_timeout: raw.queue_timeout.map_or(Duration::from_secs(10), |d| d.0),
        max_header_bytes: raw.max_header_bytes.map_or(16 << 10, |s| s.0 as usize),
        max_headers: raw.max_headers.map_or(100, |c| c.0 as usize),
        max_uri_bytes: raw.max_uri_bytes.map_or(8 << 10, |s| s.0 as usize),
        max_body_bytes: raw.max_body_bytes.map_or(10 << 20, |s| s.0),
        keepalive_timeout: raw
            .keepalive_timeout
            .map_or(Duration::from_secs(5), |d| d.0),
        park_after: raw.park_after.map_or(DEFAULT_PARK_AFTER, |d| d.0),
        body_timeout: raw.body_timeout.map_or(Duration::from_secs(30), |d| d.0),
        min_body_rate: raw.min_body_rate.map_or(500, |s| s.0),
        min_send_rate: raw.min_send_rate.map_or(500, |s| s.0),
        stall_timeout: raw.stall_timeout.map_or(Duration::from_secs(60), |d| d.0),
        max_requests_per_connection: raw.max_requests_per_connection.map_or(1000, |c| c.0),
        cgi_body_in_memory: raw
            .cgi_body_in_memory
            .map_or(DEFAULT_CGI_BODY_IN_MEMORY, |s| s.0),
    }
}

/// `[log] access_format`.
fn access_format(raw: &RawLog) -> Result<AccessFormat, Invalid> {
    let Some(f) = &raw.access_format else {
        return Ok(AccessFormat::Combined);
    };
    match f.get_ref().as_str() {
        "combined" => Ok(AccessFormat::Combined),
        "vhost_combined" => Ok(AccessFormat::VhostCombined),
        "json" => Ok(AccessFormat::Json),
        other => Err((
            f.span(),
            format!(
                "access_format {other:?}: expected \"combined\", \"vhost_combined\" or \"json\""
            ),
        )),
    }
}

/// `[log] access`.
fn access_log(raw: &RawLog) -> Result<AccessLog, Invalid> {
    Ok(match &raw.access {
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
    })
}

/// `[server] temp_dir`: an absolute path.
fn temp_dir_path(raw: &RawConfig) -> Result<PathBuf, Invalid> {
    let set = raw.server.temp_dir.as_ref();
    let dir = set.map_or(DEFAULT_TEMP_DIR, |d| d.get_ref().as_str());
    if !dir.starts_with('/') || dir.contains('\0') {
        let span = set.map_or(0..0, |d| d.span());
        return Err((span, format!("temp_dir {dir:?} must be an absolute path")));
    }
    Ok(PathBuf::from(dir))
}

/// When a CGI route may need it, `[server] temp_dir` must be a directory
/// where the workers can create unlinked files. Refused here (at start,
/// `check` and reload) rather than with a 500 on the first large body.
/// `Err(None, why)`: the default is the problem (the caller points at the
/// first CGI route); `Err(Some(span), why)`: the key is.
pub(super) fn check_temp_dir(
    raw: &RawConfig,
    cfg: &Config,
) -> Result<(), (Option<Range<usize>>, String)> {
    if !cfg
        .routes
        .iter()
        .any(|r| matches!(r.action, Action::Cgi(_)))
    {
        return Ok(()); // nothing will use it
    }
    let dir = &cfg.server.temp_dir;
    let user = cfg.server.user.as_ref();
    let gid = cfg.server.group.as_ref().map(|g| g.1).or(user.map(|u| u.2));
    match (
        usable_temp_dir(dir, user.map(|u| (u.0.as_str(), u.1)), gid),
        &raw.server.temp_dir,
    ) {
        (Ok(()), _) => Ok(()),
        (Err(why), Some(d)) => Err((
            Some(d.span()),
            format!("temp_dir {:?}: {why}", dir.display()),
        )),
        (Err(why), None) => Err((
            None,
            format!(
                "CGI request bodies go to [server] temp_dir, by default {:?}: {why}",
                dir.display()
            ),
        )),
    }
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
