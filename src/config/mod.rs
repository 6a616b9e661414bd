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
mod fields;
mod include;
mod raw;
mod routes;
mod sites;
mod validate;

pub use cidr::Cidr;
pub use fields::Fields;
pub use lbaws::proto::template::Template;
pub use lbaws::proto::vhost::{Found, Names, Pattern};
pub use sites::MAX_SITE_LOGS;
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
    /// Connections waiting in the gate (no complete head yet, parked
    /// between requests, complete and waiting for a worker, closing);
    /// `None`: sized from `RLIMIT_NOFILE` at start.
    pub max_pending: Option<usize>,
    /// Of those, from one source at most; `None`: a quarter of
    /// `max_pending` (see [`Config::pending_per_source`]).
    pub max_pending_per_source: Option<usize>,
    /// The last this many free workers go only to sources that hold fewer
    /// than this many (fair admission: `supervisor::sources`).
    pub worker_reserve: usize,
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
    pub format: AccessFormat,
    /// The sites' own access log files, each once ([`SiteLog::File`]).
    pub site_files: Vec<PathBuf>,
    /// The most bytes of request data (target, host, referer, user agent)
    /// one JSON line carries: `[limits] max_header_bytes`.
    pub line_budget: usize,
}

/// `[log] access_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// Apache's and nginx's Combined Log Format.
    #[default]
    Combined,
    /// The site's label, then the Combined line (Apache's `vhost_combined`).
    VhostCombined,
    /// One JSON object a line.
    Json,
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
    /// How long a complete request may wait for a worker (then 503).
    pub queue_timeout: Duration,
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
    Cgi(Box<CgiRoute>),
    Redirect {
        to: Template,
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
    /// What one request's script (and everything it starts) may use.
    pub limits: CgiLimits,
    /// Bytes of a request's stderr that reach the log (then one line says
    /// how much was dropped).
    pub stderr: u64,
    /// This route's place among the CGI routes (its scripts' sandbox).
    pub slot: usize,
    /// A request body that has not all come with its head is received by
    /// the gate, and the script's worker starts once it is whole (false:
    /// the worker reads it).
    pub buffer_body: bool,
}

/// A CGI route's `limits`: per request, for the script and what it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgiLimits {
    /// Processes (and threads) at once, the script included.
    pub processes: u64,
    /// Bytes of memory: the script's whole tree in a cgroup, else each
    /// process's address space (`RLIMIT_AS`).
    pub memory: u64,
    /// CPU seconds, each process (`RLIMIT_CPU`).
    pub cpu_secs: u64,
    /// Open descriptors, each process (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// The largest file a process may write (`RLIMIT_FSIZE`).
    pub file_size: u64,
}

impl Default for CgiLimits {
    fn default() -> CgiLimits {
        CgiLimits {
            processes: 64,
            memory: 512 << 20,
            cpu_secs: 60,
            open_files: 1024,
            file_size: 1 << 30,
        }
    }
}

/// `[[route]] cgi = { stderr }`: what of a request's stderr is logged.
pub const DEFAULT_CGI_STDERR: u64 = 16 << 10;

/// A route's `sandbox = { read, write, connect_ports, connect_unix, udp_ports }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Widen {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub connect_ports: Vec<u16>,
    /// Unix sockets (by path) the scripts may connect to.
    pub connect_unix: Vec<PathBuf>,
    /// UDP ports the scripts may send to.
    pub udp_ports: Vec<u16>,
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
    /// Its site (an index into [`Config::sites`]).
    pub site: usize,
    /// What its responses carry: its `headers`, and its site's that it
    /// does not set itself.
    pub fields: Fields,
    /// Where it is written: `FILE:LINE:COLUMN`.
    pub origin: String,
}

/// The label of the site made of the top-level `[[route]]` entries.
pub const DEFAULT_LABEL: &str = "default";

/// `[[site]]`: the names it answers to, its routes, what its responses carry.
#[derive(Debug, Clone)]
pub struct Site {
    /// Its first name (shown in logs and metrics), or [`DEFAULT_LABEL`].
    pub label: String,
    pub names: Vec<Pattern>,
    /// Its routes, as indices into [`Config::routes`], longest prefix first.
    pub routes: Vec<usize>,
    /// Its `headers` (on responses no route of its answers, e.g. 404).
    pub fields: Fields,
    /// Error pages: a status and the path of the page among its files.
    pub errors: Vec<(u16, String)>,
    pub access: SiteLog,
    /// Where it is written: `FILE:LINE:COLUMN`.
    pub origin: String,
    /// Its row of counters in the scoreboard (0: `other`), given when the
    /// configuration is taken into use (`scoreboard::label_sites`).
    pub row: u32,
}

/// A site's `access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteLog {
    /// `[log] access`.
    Main,
    Off,
    /// A file of its own: an index into [`LogConfig::site_files`].
    File(usize),
}

/// Which site and route answer a request.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'c> {
    pub site: &'c Site,
    pub route: Option<&'c Route>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a path, or [`BUILTIN_NAME`].
    pub source: String,
    /// The text it was read from (an upgrade in place carries the running
    /// one, for the new image to fall back to).
    pub text: String,
    pub server: Server,
    pub listen: Vec<ListenSpec>,
    pub log: LogConfig,
    pub limits: Limits,
    /// Every site's routes, site by site in file order (each site lists
    /// its own, longest prefix first).
    pub routes: Vec<Route>,
    /// At least one: the top-level `[[route]]` entries make one if there is
    /// no `[[site]]`.
    pub sites: Vec<Site>,
    /// Where a request for no known name goes.
    pub default_site: usize,
    /// Every site's names.
    pub hosts: Names,
    pub sandbox: Sandbox,
    /// What was accepted but deserves a word (`FILE:LINE:COLUMN: ...`):
    /// printed by `check`, logged at start and on reload.
    pub warnings: Vec<String>,
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

    /// `[server] max_pending_per_source` under a `max_pending` of `pending`:
    /// as configured (at most `pending`), or a quarter of it.
    pub fn pending_per_source(&self, pending: usize) -> usize {
        match self.server.max_pending_per_source {
            Some(n) => n.min(pending),
            None => (pending / 4).max(1),
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

    /// The default site's route for a request path (the unit tests' view).
    #[cfg(test)]
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.site_route(&self.sites[self.default_site], path)
    }

    /// The site a request's host names (`None`: no host), else the default.
    pub fn site_for(&self, host: Option<&str>) -> usize {
        if self.sites.len() == 1 {
            return 0;
        }
        host.and_then(|h| self.hosts.lookup(h))
            .map_or(self.default_site, |(i, _)| i as usize)
    }

    /// A site's route for a request path: the longest matching prefix.
    pub fn site_route(&self, site: &Site, path: &str) -> Option<&Route> {
        site.routes
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| prefix_matches(&r.prefix, path))
    }

    /// The site and route for a request.
    pub fn pick(&self, host: Option<&str>, path: &str) -> Hit<'_> {
        let site = &self.sites[self.site_for(host)];
        Hit {
            site,
            route: self.site_route(site, path),
        }
    }
}

/// Whether `path` is `prefix` or below it, segment by segment (`/files`
/// takes `/files` and `/files/...`, not `/filesystem.html`; a prefix ending
/// in `/` takes what begins with it). The one rule every site's routes are
/// matched by.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
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

/// Parse and validate configuration text; `file` names it in errors (and
/// is where relative `include` entries start from).
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut files = vec![include::File {
        name: file.to_string(),
        text: text.to_string(),
        real: std::fs::canonicalize(file).ok(),
    }];
    let located = |files: &[include::File], (f, span, msg): sites::Located| {
        let src: &include::File = &files[f];
        ConfigError {
            file: src.name.clone(),
            pos: Some(line_col(&src.text, span.start)),
            msg,
        }
    };
    let at = |span: Option<Range<usize>>, msg: String| ConfigError {
        file: file.to_string(),
        pos: span.map(|s| line_col(text, s.start)),
        msg,
    };
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| at(e.span(), clean(e.message())))?;
    let (mut cfg, warnings) =
        validate::validate(&raw).map_err(|(span, msg)| at(Some(span), msg))?;
    cfg.source = file.to_string();
    cfg.text = text.to_string();
    cfg.warnings = warnings
        .into_iter()
        .map(|(span, msg)| at(Some(span), msg).to_string())
        .collect();

    // The sites: the main file's, then the included files'.
    let mut included = Vec::new();
    include::expand(&raw.include, 0, 0, &mut files, &mut included)
        .map_err(|e| located(&files, e))?;
    let all: Vec<(usize, &toml::Spanned<raw::RawSite>)> = raw
        .site
        .iter()
        .map(|s| (0, s))
        .chain(included.iter().map(|(f, s)| (*f, s)))
        .collect();
    let built = sites::build(&raw.route, &all, &files).map_err(|e| located(&files, e))?;
    cfg.routes = built.routes;
    cfg.sites = built.sites;
    cfg.default_site = built.default_site;
    cfg.hosts = built.hosts;
    cfg.log.site_files = built.site_logs;
    for w in built.warnings {
        cfg.warnings.push(located(&files, w).to_string());
    }
    if let Err((span, msg)) = validate::check_temp_dir(&raw, &cfg) {
        return Err(match span {
            Some(s) => at(Some(s), msg),
            None => {
                // The default temp_dir: point at the first CGI route.
                let r = cfg
                    .routes
                    .iter()
                    .find(|r| matches!(r.action, Action::Cgi(_)))
                    .expect("a CGI route made temp_dir matter");
                ConfigError {
                    file: String::new(),
                    pos: None,
                    msg: format!("{}: {msg}", r.origin),
                }
            }
        });
    }
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
mod tests;
