//! `config.toml`: parsing and complete validation.
//!
//! Invariant 4: a configuration is parsed *and validated* in full before the first
//! accept (and before a reload replaces the running one). Every error carries the
//! `FILE:LINE:COLUMN` of the offending key or value, so that `lbaws check`, the
//! start-up path and a failed SIGHUP reload all report it the same way.
//!
//! The raw serde structs (`Raw*`) mirror the file with `deny_unknown_fields`; the
//! public structs are what the rest of lbaws reads: defaults applied, values parsed
//! into their real types, routes sorted for longest-prefix matching.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The file read when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/lbaws/config.toml";

/// Name shown in messages for the built-in configuration.
pub const BUILTIN_NAME: &str = "<built-in>";

/// Used when there is neither `--config` nor [`DEFAULT_PATH`].
pub const BUILTIN: &str = r#"
[[listen]]
address = "127.0.0.1:8080"
name = "http"

[[route]]
prefix = "/"
respond = { status = 200, body = "Hello, World!\n", content_type = "text/plain" }
"#;

/// A configuration error, located in its file when it can be.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column; `None` when the error is about the whole file.
    pub pos: Option<(usize, usize)>,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((l, c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.msg),
            None => write!(f, "{}: {}", self.file, self.msg),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Auto,
    Stderr,
    Syslog,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub address: ListenAddr,
    pub backlog: i32,
    pub name: Option<String>,
    pub v6only: bool,
    /// Unix sockets only: permission bits of the socket file.
    pub mode: Option<u32>,
    /// Unix sockets only: owner and group of the socket file.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Resolved at validation time: (name, uid, primary gid of the user).
    pub user: Option<(String, u32, u32)>,
    pub group: Option<(String, u32)>,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    /// Send `Server: lbaws`.
    pub server_header: bool,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: Level,
    pub target: LogTarget,
    pub access: AccessLog,
}

/// `[log] access`: where workers write one Combined Log Format line per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stderr,
    Syslog,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: u64,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    pub max_requests_per_connection: u64,
}

#[derive(Debug, Clone)]
pub enum Action {
    Respond {
        status: u16,
        body: String,
        content_type: String,
    },
    Static(StaticRoute),
    Cgi(CgiRoute),
    Redirect {
        to: String,
        status: u16,
    },
}

/// `cgi = { dir = ... }` (scripts in a directory) or `{ script = ... }` (one
/// program for a whole subtree).
#[derive(Debug, Clone)]
pub struct CgiRoute {
    pub target: CgiTarget,
    /// How long a script may take to send its response header.
    pub timeout: Duration,
    /// Interpreters by file extension (".py" -> "/usr/bin/python3").
    pub interpreters: Vec<(String, PathBuf)>,
    /// Extra environment for every script (PATH defaults to a standard one).
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum CgiTarget {
    Dir(PathBuf),
    Script(PathBuf),
}

#[derive(Debug, Clone)]
pub struct StaticRoute {
    pub root: PathBuf,
    pub index: Vec<String>,
    pub autoindex: bool,
    /// Serve names starting with '.' (refused by default).
    pub dotfiles: bool,
    /// Serve `FILE.br` / `FILE.gz` when present and accepted.
    pub precompressed: bool,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a path, or [`BUILTIN_NAME`].
    pub source: String,
    pub server: Server,
    pub listen: Vec<ListenSpec>,
    pub log: LogConfig,
    pub limits: Limits,
    /// Longest prefix first, so the first match wins.
    pub routes: Vec<Route>,
}

impl Config {
    /// The route for a request path: the longest matching prefix.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }
}

// ---------------------------------------------------------------------------
// Loading

/// Which configuration to run: `--config FILE`, else [`DEFAULT_PATH`] if it
/// exists, else the built-in one (`None`).
pub fn choose_path(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new(DEFAULT_PATH).exists() => Some(PathBuf::from(DEFAULT_PATH)),
        None => None,
    }
}

/// Read and validate a configuration file (or the built-in one for `None`).
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        None => parse(BUILTIN, BUILTIN_NAME),
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                file: name.clone(),
                pos: None,
                msg: format!("cannot read: {e}"),
            })?;
            parse(&text, &name)
        }
    }
}

/// Parse and validate configuration text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let at = |span: Option<Range<usize>>, msg: String| ConfigError {
        file: file.to_string(),
        pos: span.map(|s| line_col(text, s.start)),
        msg,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| at(e.span(), clean(e.message())))?;
    let mut cfg = validate(raw).map_err(|(span, msg)| at(Some(span), msg))?;
    cfg.source = file.to_string();
    Ok(cfg)
}

/// serde's messages end with a newline and sometimes list the expected keys
/// over several lines; keep them on one line.
fn clean(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

// ---------------------------------------------------------------------------
// The file as written

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    listen: Vec<Spanned<RawListen>>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    max_connections: Option<Count>,
    shutdown_timeout: Option<Dur>,
    server_header: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Spanned<Addr>,
    backlog: Option<Count>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    v6only: bool,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<LevelName>,
    target: Option<TargetName>,
    access: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    header_timeout: Option<Dur>,
    max_header_bytes: Option<Size>,
    max_headers: Option<Count>,
    max_uri_bytes: Option<Size>,
    max_body_bytes: Option<Size>,
    keepalive_timeout: Option<Dur>,
    body_timeout: Option<Dur>,
    max_requests_per_connection: Option<Count>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Spanned<String>,
    respond: Option<Spanned<RawRespond>>,
    #[serde(rename = "static")]
    static_: Option<Spanned<RawStatic>>,
    redirect: Option<Spanned<RawRedirect>>,
    cgi: Option<Spanned<RawCgi>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCgi {
    dir: Option<Spanned<String>>,
    script: Option<Spanned<String>>,
    timeout: Option<Dur>,
    #[serde(default)]
    interpreters: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatic {
    root: Spanned<String>,
    index: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    autoindex: bool,
    #[serde(default)]
    dotfiles: bool,
    #[serde(default)]
    precompressed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    to: Spanned<String>,
    status: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRespond {
    status: Spanned<u16>,
    #[serde(default)]
    body: String,
    content_type: Option<String>,
}

// Value types whose parse errors serde attaches to the value's own span.

/// A positive integer (limits may not be zero).
struct Count(u64);
impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if n <= 0 {
            return Err(de::Error::custom(format!(
                "must be a positive integer, not {n}"
            )));
        }
        Ok(Count(n as u64))
    }
}

/// "10s", "500ms", "2m", "1h"; zero is refused.
struct Dur(Duration);
impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("bad duration {s:?}: expected a number and a unit (ms, s, m, h), e.g. \"10s\"");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(bad()),
    };
    if ms == 0 {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(Duration::from_millis(ms))
}

/// A byte size: an integer, or "16KiB", "10MiB", "1GiB" (also kB/MB/GB, powers of 1000).
struct Size(u64);
impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrStr {
            Int(i64),
            Str(String),
        }
        let v = match IntOrStr::deserialize(d)? {
            IntOrStr::Int(n) if n > 0 => n as u64,
            IntOrStr::Int(n) => {
                return Err(de::Error::custom(format!("size must be positive, not {n}")))
            }
            IntOrStr::Str(s) => parse_size(&s).map_err(de::Error::custom)?,
        };
        Ok(Size(v))
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("bad size {s:?}: expected bytes or a number with a unit, e.g. \"16KiB\"");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("size {s:?} must be greater than zero")),
        Some(v) => Ok(v),
        None => Err(bad()),
    }
}

/// "0.0.0.0:8080", "[::]:8080", "unix:/run/lbaws/http.sock".
struct Addr(ListenAddr);
impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_address(&s).map(Addr).map_err(de::Error::custom)
    }
}

pub fn parse_address(s: &str) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "bad address {s:?}: a unix socket path must be absolute"
            ));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if path.len() > 107 {
            return Err(format!(
                "bad address {s:?}: unix socket path longer than 107 bytes"
            ));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
        format!("bad address {s:?}: expected IPv4:PORT, [IPv6]:PORT or unix:/absolute/path")
    })
}

struct LevelName(Level);
impl<'de> Deserialize<'de> for LevelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(LevelName(match s.as_str() {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => {
                return Err(de::Error::custom(format!(
                    "unknown level {s:?}: expected error, warn, info or debug"
                )))
            }
        }))
    }
}

struct TargetName(LogTarget);
impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(TargetName(match s.as_str() {
            "auto" => LogTarget::Auto,
            "stderr" => LogTarget::Stderr,
            "syslog" => LogTarget::Syslog,
            _ => {
                return Err(de::Error::custom(format!(
                    "unknown log target {s:?}: expected auto, stderr or syslog"
                )))
            }
        }))
    }
}

// ---------------------------------------------------------------------------
// Validation: everything serde cannot see on its own.

type Invalid = (Range<usize>, String);

fn validate(raw: RawConfig) -> Result<Config, Invalid> {
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
        body_timeout: raw
            .limits
            .body_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        max_requests_per_connection: raw.limits.max_requests_per_connection.map_or(1000, |c| c.0),
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
            shutdown_timeout: raw
                .server
                .shutdown_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            server_header: raw.server.server_header.unwrap_or(true),
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

fn lookup_group(g: &Spanned<String>) -> Result<u32, Invalid> {
    crate::users::group(g.get_ref())
        .ok_or_else(|| (g.span(), format!("unknown group {:?}", g.get_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn builtin_is_valid() {
        let c = parse(BUILTIN, BUILTIN_NAME).unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.server.max_connections, 512);
        assert!(c.route("/anything").is_some());
    }

    #[test]
    fn errors_carry_line_and_column() {
        assert_eq!(
            err("[server]\nmax_connection = 3\n"),
            "t.toml:2:1: unknown field `max_connection`, expected one of `user`, `group`, `max_connections`, `shutdown_timeout`, `server_header`"
        );
        assert!(err("[server]\nshutdown_timeout = \"10 parsecs\"\n")
            .starts_with("t.toml:2:20: bad duration"));
        assert!(
            err("[server]\nmax_connections = 0\n").starts_with("t.toml:2:19: must be a positive")
        );
        assert!(err("[[listen]]\naddress = \"1.2.3:80\"\n").starts_with("t.toml:2:11: bad address"));
        assert!(err("[[listen]]\naddress = \"127.0.0.1:1\"\nname = \"a\"\n[[listen]]\naddress = \"127.0.0.1:2\"\nname = \"a\"\n")
            .starts_with("t.toml:6:8: duplicate listener name"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10").is_err());
        assert_eq!(parse_size("16KiB").unwrap(), 16384);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("10XB").is_err());
    }

    #[test]
    fn longest_prefix_wins() {
        let c = parse(
            "[[route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"root\" }\n\
             [[route]]\nprefix = \"/api/\"\nrespond = { status = 200, body = \"api\" }\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.route("/api/x").unwrap().prefix, "/api/");
        assert_eq!(c.route("/apix").unwrap().prefix, "/");
    }
}
