//! The file as written: serde structs that mirror `config.toml` with
//! `deny_unknown_fields`, and the value types (counts, durations, sizes,
//! addresses) whose errors serde reports at the value's own position.

use super::{Level, ListenAddr, LogTarget};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listen: Vec<Spanned<RawListen>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub sandbox: RawSandbox,
    #[serde(default)]
    pub site: Vec<Spanned<RawSite>>,
    pub include: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A file named by `include`: sites, and more includes.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIncluded {
    #[serde(default)]
    pub site: Vec<Spanned<RawSite>>,
    pub include: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Name = value pairs (`headers`, `errors`), each key with its position.
pub(super) type RawTable = Spanned<std::collections::BTreeMap<Spanned<String>, Spanned<String>>>;

/// `[[site]]`: names, routes and what its responses carry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    pub names: Option<Spanned<Vec<Spanned<String>>>>,
    pub default: Option<Spanned<bool>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    pub headers: Option<RawTable>,
    pub errors: Option<RawTable>,
    pub access: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    pub mode: Option<Spanned<String>>,
    pub strict_syscalls: Option<bool>,
}

/// A route's `sandbox = { read, write, connect_ports }`: what its CGI
/// scripts get beyond the default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWiden {
    #[serde(default)]
    pub read: Vec<Spanned<String>>,
    #[serde(default)]
    pub write: Vec<Spanned<String>>,
    #[serde(default)]
    pub connect_ports: Vec<Spanned<u16>>,
    #[serde(default)]
    pub connect_unix: Vec<Spanned<String>>,
    #[serde(default)]
    pub udp_ports: Vec<Spanned<u16>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub max_connections: Option<Count<1, MAX_PROCESSES>>,
    pub max_pending: Option<Count<1, MAX_PROCESSES>>,
    pub max_pending_per_source: Option<Count<1, MAX_PROCESSES>>,
    pub worker_reserve: Option<Spanned<Count<0, MAX_PROCESSES>>>,
    /// Before 0.4.0: accepted, ignored but for 0 (see `validate`), warned.
    pub max_connections_per_ip: Option<Spanned<Count<0, MAX_PROCESSES>>>,
    pub shutdown_timeout: Option<Dur<HOUR>>,
    pub server_header: Option<bool>,
    pub temp_dir: Option<Spanned<String>>,
    pub exit_idle_after: Option<Dur<DAY>>,
}

/// The kernel's highest possible pid count (`PID_MAX_LIMIT`): no table of
/// processes or connections is sized beyond it.
pub(super) const MAX_PROCESSES: u64 = 4_194_304;
/// The longest timeout the file accepts, in milliseconds.
pub(super) const HOUR: u64 = 3_600_000;
/// The longest idle time before an idle exit, in milliseconds.
pub(super) const DAY: u64 = 24 * HOUR;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub address: Spanned<Addr>,
    pub backlog: Option<Count<1, 65535>>,
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub v6only: bool,
    pub mode: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    #[serde(default)]
    pub proxy_protocol: bool,
    pub proxy_from: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub level: Option<LevelName>,
    pub target: Option<TargetName>,
    pub access: Option<Spanned<String>>,
    pub access_format: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub header_timeout: Option<Dur<HOUR>>,
    pub queue_timeout: Option<Dur<HOUR>>,
    pub max_header_bytes: Option<Size<MIB>>,
    pub max_headers: Option<Count<1, 10_000>>,
    pub max_uri_bytes: Option<Size<MIB>>,
    pub max_body_bytes: Option<Size<TIB>>,
    pub keepalive_timeout: Option<Dur<HOUR>>,
    pub park_after: Option<Dur<HOUR, true>>,
    pub body_timeout: Option<Dur<HOUR>>,
    pub min_body_rate: Option<Size<GIB, 0>>,
    pub min_send_rate: Option<Size<GIB, 0>>,
    pub stall_timeout: Option<Dur<HOUR>>,
    pub max_requests_per_connection: Option<Count<1, 4_294_967_295>>,
    pub cgi_body_in_memory: Option<Size<GIB, 0>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub prefix: Spanned<String>,
    pub respond: Option<Spanned<RawRespond>>,
    #[serde(rename = "static")]
    pub static_: Option<Spanned<RawStatic>>,
    pub redirect: Option<Spanned<RawRedirect>>,
    pub cgi: Option<Spanned<RawCgi>>,
    pub sandbox: Option<Spanned<RawWiden>>,
    pub status: Option<Spanned<RawStatus>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub headers: Option<RawTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    pub format: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCgi {
    pub dir: Option<Spanned<String>>,
    pub script: Option<Spanned<String>>,
    pub timeout: Option<Dur<HOUR>>,
    #[serde(default)]
    pub interpreters: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, Spanned<String>>,
    pub limits: Option<RawCgiLimits>,
    pub stderr: Option<Size<GIB, 0>>,
    pub buffer_body: Option<bool>,
}

/// A CGI route's `limits = { processes, memory, cpu, open_files, file_size }`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCgiLimits {
    pub processes: Option<Count<1, 65_536>>,
    pub memory: Option<Size<TIB, MIB>>,
    pub cpu: Option<Dur<DAY>>,
    pub open_files: Option<Count<3, 1_048_576>>,
    pub file_size: Option<Size<TIB>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatic {
    pub root: Spanned<String>,
    pub index: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub autoindex: bool,
    #[serde(default)]
    pub dotfiles: bool,
    #[serde(default)]
    pub precompressed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    pub to: Spanned<String>,
    pub status: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRespond {
    pub status: Spanned<u16>,
    #[serde(default)]
    pub body: String,
    pub content_type: Option<String>,
}

// Value types whose parse errors serde attaches to the value's own span.
// Each carries its bounds, so a value outside them is reported where it is
// written (invariant 4: nothing unbounded reaches a table size or a buffer).

/// An integer in `MIN..=MAX` (limits are at least 1 unless `MIN` is 0).
#[derive(Clone, Copy)]
pub(super) struct Count<const MIN: u64, const MAX: u64>(pub u64);
impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Count<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if n < MIN as i64 {
            let what = match MIN {
                1 => "a positive integer".to_string(),
                _ => format!("an integer >= {MIN}"),
            };
            return Err(de::Error::custom(format!("must be {what}, not {n}")));
        }
        if n as u64 > MAX {
            return Err(de::Error::custom(format!("must be at most {MAX}, not {n}")));
        }
        Ok(Count(n as u64))
    }
}

/// "10s", "500ms", "2m", "1h", at most `MAX_MS`; zero only where `ZERO`.
#[derive(Clone, Copy)]
pub(super) struct Dur<const MAX_MS: u64, const ZERO: bool = false>(pub Duration);
impl<'de, const MAX_MS: u64, const ZERO: bool> Deserialize<'de> for Dur<MAX_MS, ZERO> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = parse_duration(&s).map_err(de::Error::custom)?;
        if v.is_zero() && !ZERO {
            return Err(de::Error::custom(format!(
                "duration {s:?} must be greater than zero"
            )));
        }
        if v > Duration::from_millis(MAX_MS) {
            return Err(de::Error::custom(format!(
                "duration {s:?} is too long: at most {}",
                show_ms(MAX_MS)
            )));
        }
        Ok(Dur(v))
    }
}

fn show_ms(ms: u64) -> String {
    match ms {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

/// "10s" to a duration (zero is for the caller to judge).
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
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
    Ok(Duration::from_millis(ms))
}

/// A byte size: an integer, or "16KiB", "10MiB", "1GiB" (also kB/MB/GB,
/// powers of 1000); at least 1 (0 only where `MIN` is 0), at most `MAX`.
#[derive(Clone, Copy)]
pub(super) struct Size<const MAX: u64, const MIN: u64 = 1>(pub u64);
impl<'de, const MAX: u64, const MIN: u64> Deserialize<'de> for Size<MAX, MIN> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrStr {
            Int(i64),
            Str(String),
        }
        let (v, shown) = match IntOrStr::deserialize(d)? {
            IntOrStr::Int(n) if n >= 0 => (n as u64, n.to_string()),
            IntOrStr::Int(n) => {
                return Err(de::Error::custom(format!(
                    "size must not be negative, not {n}"
                )))
            }
            IntOrStr::Str(s) => (parse_size(&s).map_err(de::Error::custom)?, format!("{s:?}")),
        };
        if v < MIN {
            return Err(de::Error::custom(match MIN {
                1 => format!("size {shown} must be greater than zero"),
                _ => format!("size {shown} is too small: at least {}", show_size(MIN)),
            }));
        }
        if v > MAX {
            return Err(de::Error::custom(format!(
                "size {shown} is too large: at most {}",
                show_size(MAX)
            )));
        }
        Ok(Size(v))
    }
}

fn show_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

/// "16KiB" to bytes (zero is for the caller to judge).
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
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
    n.checked_mul(mult).ok_or_else(bad)
}

/// "0.0.0.0:8080", "[::]:8080", "unix:/run/lbaws/http.sock".
pub(super) struct Addr(pub ListenAddr);
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

pub(super) struct LevelName(pub Level);
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

pub(super) struct TargetName(pub LogTarget);
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
