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

mod cidr;
mod raw;
mod routes;
mod validate;

pub use cidr::Cidr;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// `proxy_protocol = true`: every connection begins with a PROXY header
    /// (v1 or v2), whose source is the client. `Some(proxy_from)`: the
    /// balancers allowed to send it (empty on a Unix socket, where the
    /// socket file's permissions say who may connect).
    pub proxy: Option<Vec<Cidr>>,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Resolved at validation time: (name, uid, primary gid of the user).
    pub user: Option<(String, u32, u32)>,
    pub group: Option<(String, u32)>,
    /// Live workers: requests in flight, each in a process of its own.
    pub max_connections: usize,
    /// Connections waiting in the gate (no complete head yet, or parked
    /// between requests); `None`: sized from `RLIMIT_NOFILE` at start.
    pub max_pending: Option<usize>,
    /// Connections from one IPv4 address or IPv6 /64, waiting, parked and
    /// served together; 0 turns the limit off.
    pub max_connections_per_ip: usize,
    pub shutdown_timeout: Duration,
    /// Under socket activation: exit after this long with nothing to do.
    pub exit_idle_after: Option<Duration>,
    /// Send `Server: lbaws`.
    pub server_header: bool,
    /// Where request bodies larger than [`Limits::cgi_body_in_memory`] are
    /// kept for a CGI script: unlinked files (`O_TMPFILE`) in this directory.
    pub temp_dir: PathBuf,
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
    /// An idle keep-alive connection goes back to the supervisor (parks)
    /// after this long without a request; zero parks at once.
    pub park_after: Duration,
    /// The longest a request body or a response may stall (no byte moving).
    pub body_timeout: Duration,
    /// Bytes per second a request body must keep up, on average (0: off).
    pub min_body_rate: u64,
    /// Bytes per second a client must read a response at, on average (0: off).
    pub min_send_rate: u64,
    /// The supervisor's backstop: a worker with no progress for this long
    /// (or longer, see [`Config::stall_backstop`]) is ended.
    pub stall_timeout: Duration,
    pub max_requests_per_connection: u64,
    /// A CGI request body up to this size is kept in memory (a memfd);
    /// a larger one in an unlinked file in [`Server::temp_dir`].
    pub cgi_body_in_memory: u64,
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
    /// The status page (`http::status`), from the scoreboard.
    Status(StatusFormat),
}

/// `status = { format = ... }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// A page for people, like Apache's mod_status.
    Text,
    Json,
    /// The Prometheus text exposition format (0.0.4).
    Prometheus,
}

/// A route's `allow`: the peers that may use it (others get 403).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allow {
    pub ranges: Vec<Cidr>,
    /// `"unix"` in the list: peers on Unix socket listeners.
    pub unix: bool,
}

impl Allow {
    pub fn permits(&self, peer: crate::listen::Peer) -> bool {
        match peer {
            crate::listen::Peer::Inet(a) => self.ranges.iter().any(|c| c.contains(a.ip())),
            crate::listen::Peer::Unix => self.unix,
        }
    }
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
    /// What the route's `sandbox` adds for its scripts.
    pub widen: Widen,
    /// This route's place among the CGI routes (its scripts' sandbox).
    pub slot: usize,
}

/// A route's `sandbox = { read, write, connect_ports }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Widen {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub connect_ports: Vec<u16>,
}

/// `[sandbox] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Enforce what the kernel supports; say once what is not.
    #[default]
    BestEffort,
    /// Refuse to start (or reload) without all of it.
    Required,
    Off,
}

/// `[sandbox]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sandbox {
    pub mode: SandboxMode,
    /// Static-only configurations: a seccomp allow-list per worker too.
    pub strict_syscalls: bool,
}

/// The most CGI routes a configuration may have: each keeps a sandbox
/// ready in every worker (a descriptor).
pub const MAX_CGI_ROUTES: usize = 64;

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
    /// `None`: everyone may use the route.
    pub allow: Option<Allow>,
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
    pub sandbox: Sandbox,
}

/// The most workers any configuration may have (`max_connections`' bound).
pub const MAX_WORKERS: usize = 4_194_304;

/// The most `[[listen]]` entries a configuration may have.
pub const MAX_LISTENERS: usize = 256;

/// Descriptors the gate keeps for itself besides waiting connections.
const GATE_RESERVE: u64 = 64;
/// The default `max_pending` never exceeds this, however high the limit on
/// descriptors (each waiting connection is also a few kB of kernel memory).
const DEFAULT_PENDING_CAP: u64 = 65_536;

impl Config {
    /// `[server] max_pending` for a process allowed `nofile` descriptors:
    /// the configured value, or by default as many as the limit leaves room
    /// for (at most 65,536). The second value says the configured value did
    /// not fit under the limit and was lowered.
    pub fn max_pending(&self, nofile: u64) -> (usize, bool) {
        let room = nofile.saturating_sub(GATE_RESERVE).max(16) as usize;
        match self.server.max_pending {
            Some(n) if n > room => (room, true),
            Some(n) => (n, false),
            None => (room.min(DEFAULT_PENDING_CAP as usize), false),
        }
    }

    /// How long a worker may go without progress before the supervisor
    /// ends it: `stall_timeout`, but never less than the longest wait a
    /// worker may legitimately make (each of which has its own deadline)
    /// plus the graces that follow it, so that the backstop only catches
    /// what the worker's own deadlines did not.
    pub fn stall_backstop(&self) -> Duration {
        let l = &self.limits;
        let mut longest = l
            .header_timeout
            .max(l.body_timeout)
            .max(l.keepalive_timeout);
        for r in &self.routes {
            if let Action::Cgi(c) = &r.action {
                longest = longest.max(c.timeout);
            }
        }
        l.stall_timeout.max(longest + Duration::from_secs(5))
    }

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
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| at(e.span(), clean(e.message())))?;
    let mut cfg = validate::validate(raw).map_err(|(span, msg)| at(Some(span), msg))?;
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

#[cfg(test)]
mod tests {
    use super::raw::{parse_duration, parse_size};
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
            "t.toml:2:1: unknown field `max_connection`, expected one of `user`, `group`, `max_connections`, `max_pending`, `max_connections_per_ip`, `shutdown_timeout`, `server_header`, `temp_dir`, `exit_idle_after`"
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
    fn proxy_protocol() {
        let tcp = |extra: &str| format!("[[listen]]\naddress = \"127.0.0.1:1\"\n{extra}");
        let c = parse(
            &tcp("proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\", \"::1\"]\n"),
            "t",
        )
        .unwrap();
        let from = c.listen[0].proxy.as_ref().unwrap();
        assert_eq!(from.len(), 2);
        assert!(from[0].contains("10.1.2.3".parse().unwrap()));
        assert_eq!(parse(&tcp(""), "t").unwrap().listen[0].proxy, None);
        assert!(err(&tcp("proxy_protocol = true\n"))
            .starts_with("t.toml:1:1: proxy_protocol = true needs proxy_from"));
        assert!(err(&tcp("proxy_from = [\"10.0.0.0/8\"]\n"))
            .starts_with("t.toml:3:14: proxy_from needs proxy_protocol = true"));
        assert!(err(&tcp("proxy_protocol = true\nproxy_from = []\n"))
            .starts_with("t.toml:4:14: proxy_from is empty"));
        assert_eq!(
            err(&tcp(
                "proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n"
            )),
            "t.toml:4:29: bad address range \"10.0.0.1/8\": the address has bits set beyond the /8 prefix"
        );
        assert!(err(&tcp(
            "proxy_protocol = true\nproxy_from = [\"10.0.0.0/40\"]\n"
        ))
        .starts_with("t.toml:4:15: bad address range \"10.0.0.0/40\": prefix length above 32"));
        let unix = "[[listen]]\naddress = \"unix:/run/x.sock\"\nproxy_protocol = true\n";
        assert_eq!(parse(unix, "t").unwrap().listen[0].proxy, Some(Vec::new()));
        assert!(err(&format!("{unix}proxy_from = [\"10.0.0.0/8\"]\n"))
            .starts_with("t.toml:4:14: proxy_from does not apply to unix sockets"));
    }

    #[test]
    fn values_are_bounded() {
        assert_eq!(
            err("[server]\nmax_connections = 1000000000000\n"),
            "t.toml:2:19: must be at most 4194304, not 1000000000000"
        );
        assert_eq!(
            err("[limits]\nmax_headers = 100000000000\n"),
            "t.toml:2:15: must be at most 10000, not 100000000000"
        );
        assert_eq!(
            err("[limits]\nmax_header_bytes = \"2MiB\"\n"),
            "t.toml:2:20: size \"2MiB\" is too large: at most 1MiB"
        );
        assert_eq!(
            err("[limits]\nbody_timeout = \"2h\"\n"),
            "t.toml:2:16: duration \"2h\" is too long: at most 1h"
        );
        assert_eq!(
            err("[limits]\nmax_body_bytes = 0\n"),
            "t.toml:2:18: size 0 must be greater than zero"
        );
        assert_eq!(
            err("[server]\nmax_connections_per_ip = -1\n"),
            "t.toml:2:26: must be an integer >= 0, not -1"
        );
        let c = parse(
            "[server]\nmax_connections_per_ip = 0\n[limits]\npark_after = \"0s\"\nmin_body_rate = 0\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.server.max_connections_per_ip, 0);
        assert_eq!(c.limits.park_after, Duration::ZERO);
        assert_eq!(c.limits.min_body_rate, 0);
        assert_eq!(c.limits.min_send_rate, 500, "the default");
    }

    #[test]
    fn temp_dir_is_checked_where_cgi_needs_it() {
        let cgi = "[[route]]\nprefix = \"/c/\"\ncgi = { dir = \"/srv\" }\n";
        let c = parse("", "t").unwrap();
        assert_eq!(c.server.temp_dir, Path::new(validate::DEFAULT_TEMP_DIR));
        assert_eq!(c.limits.cgi_body_in_memory, 64 << 10);
        // No CGI route: nothing will write there, nothing to check.
        let c = parse("[server]\ntemp_dir = \"/nonexistent/lbaws\"\n", "t").unwrap();
        assert_eq!(c.server.temp_dir, Path::new("/nonexistent/lbaws"));
        assert_eq!(
            err(&format!(
                "[server]\ntemp_dir = \"/nonexistent/lbaws\"\n{cgi}"
            )),
            "t.toml:2:12: temp_dir \"/nonexistent/lbaws\": no such directory"
        );
        assert_eq!(
            err("[server]\ntemp_dir = \"tmp\"\n"),
            "t.toml:2:12: temp_dir \"tmp\" must be an absolute path"
        );
        let c = parse(&format!("[limits]\ncgi_body_in_memory = 0\n{cgi}"), "t").unwrap();
        assert_eq!(c.limits.cgi_body_in_memory, 0, "every body to a file");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
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

    #[test]
    fn status_routes_and_allow() {
        let c = parse(
            "[[route]]\nprefix = \"/s\"\nstatus = { format = \"prometheus\" }\nallow = [\"10.0.0.0/8\", \"::1\", \"unix\"]\n\n[[route]]\nprefix = \"/t\"\nstatus = {}\n",
            "t.toml",
        )
        .unwrap();
        let s = c.route("/s").unwrap();
        assert!(matches!(s.action, Action::Status(StatusFormat::Prometheus)));
        let allow = s.allow.as_ref().unwrap();
        assert!(allow.unix && allow.ranges.len() == 2);
        let peer = |a: &str| crate::listen::Peer::Inet(a.parse().unwrap());
        assert!(allow.permits(peer("10.1.2.3:80")));
        assert!(allow.permits(peer("[::1]:80")));
        assert!(!allow.permits(peer("192.0.2.1:80")));
        assert!(allow.permits(crate::listen::Peer::Unix));
        let t = c.route("/t").unwrap();
        assert!(matches!(t.action, Action::Status(StatusFormat::Text)) && t.allow.is_none());
        assert_eq!(
            err("[[route]]\nprefix = \"/s\"\nstatus = { format = \"xml\" }\n"),
            "t.toml:3:21: unknown status format \"xml\": expected text, json or prometheus"
        );
        assert_eq!(
            err("[[route]]\nprefix = \"/s\"\nstatus = {}\nallow = [\"127.0.0.1/33\"]\n"),
            "t.toml:4:10: bad address range \"127.0.0.1/33\": prefix length above 32"
        );
        assert!(err("[[route]]\nprefix = \"/s\"\nstatus = {}\nallow = []\n")
            .contains("allow needs at least one address range"));
        assert!(
            err("[[route]]\nprefix = \"/s\"\nstatus = {}\nrespond = { status = 200 }\n")
                .contains("a route has one action")
        );
    }
}
