//! The error log: stderr (plain, or with journald `<N>` priority prefixes when
//! stderr is the journal) or syslog.
//!
//! One `write(2)` per line, formatted into a stack buffer: no allocation on the
//! stderr path, so the supervisor may log from its loop without growing. Lines
//! longer than the buffer are cut and end in `...`. Never called from a signal
//! handler (lbaws has none: signals arrive through a signalfd).

pub mod flood;
pub mod json;
mod sites;
pub use sites::{
    access_format, access_to, adopt_site_file, line_budget, site_descriptors, site_files, Dest,
};

use crate::config::{AccessLog, Level, LogConfig, LogTarget};
use std::fmt::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

enum Sink {
    Stderr { journal: bool },
    Syslog(Syslog),
}

struct State {
    level: Level,
    /// As configured (for a process that adopts these logs, `spec`).
    target: LogTarget,
    force_syslog: bool,
    sink: Sink,
}

// lbaws is single-threaded: the lock is never contended, and never held across
// fork (the supervisor does not log while forking).
static STATE: Mutex<State> = Mutex::new(State {
    level: Level::Info,
    target: LogTarget::Auto,
    force_syslog: false,
    sink: Sink::Stderr { journal: false },
});

// Read without locking, so that a worker that logs nothing never writes to
// (and so never copies) the page these statics live on.
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static ACCESS_ON: AtomicBool = AtomicBool::new(false);

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Is stderr the journal? systemd sets `JOURNAL_STREAM=dev:ino` of the stream it
/// connected; compare with what fd 2 really is (it may have been redirected).
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino),
        Err(_) => false,
    }
}

/// Before `[log]` is known (the configuration is what failed): one line on
/// stderr, as `lbaws check` prints it, with the journal's error priority
/// (`<3>error: `) when stderr is the journal.
pub fn startup_error(args: fmt::Arguments<'_>) {
    let prefix = if stderr_is_journal() {
        "<3>error: "
    } else {
        ""
    };
    eprintln!("{prefix}{args}");
}

/// Apply `[log]` (at start-up and after a reload). `force_syslog` is set in
/// `--daemon` mode, where stderr is /dev/null.
pub fn configure(level: Level, target: LogTarget, force_syslog: bool) {
    let want_syslog = force_syslog || target == LogTarget::Syslog;
    let mut st = state();
    st.level = level;
    st.target = target;
    st.force_syslog = force_syslog;
    LEVEL.store(level as u8, Ordering::Relaxed);
    if want_syslog {
        if !matches!(st.sink, Sink::Syslog(_)) {
            match open_syslog() {
                Ok(l) => st.sink = Sink::Syslog(l),
                Err(e) => {
                    drop(st);
                    write(
                        Level::Error,
                        format_args!("cannot open syslog, logging to stderr: {e}"),
                    );
                }
            }
        }
    } else {
        let journal = match target {
            LogTarget::Auto => stderr_is_journal(),
            _ => false,
        };
        st.sink = Sink::Stderr { journal };
    }
}

fn open_syslog() -> Result<Syslog, syslog::Error> {
    syslog::unix(syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "lbaws".into(),
        pid: std::process::id(),
    })
}

/// SIGUSR1: reconnect to syslog (log files arrive with the access log).
pub fn reopen() {
    let mut st = state();
    if let Sink::Syslog(_) = st.sink {
        if let Ok(l) = open_syslog() {
            st.sink = Sink::Syslog(l);
        }
    }
}

// ---------------------------------------------------------------------------
// The access log: one line per request, written by the worker that served it
// with a single write(2), to a file the supervisor opened with O_APPEND (so
// lines from concurrent workers never interleave), to stderr, or to syslog.

enum AccessSink {
    Off,
    Stderr,
    Syslog(Syslog),
    File(OwnedFd),
}

static ACCESS: Mutex<(AccessLog, AccessSink)> = Mutex::new((AccessLog::Off, AccessSink::Off));

fn open_access(target: &AccessLog) -> Result<AccessSink, String> {
    Ok(match target {
        AccessLog::Off => AccessSink::Off,
        AccessLog::Stderr => AccessSink::Stderr,
        AccessLog::Syslog => {
            AccessSink::Syslog(open_syslog().map_err(|e| format!("access log: syslog: {e}"))?)
        }
        AccessLog::File(p) => AccessSink::File(sites::open_append(p)?),
    })
}

/// Open the access log named by `[log] access`, and the sites' own files
/// (at start-up, before privileges are dropped, and on reload); take the
/// line format. On error the previous logs stay in use.
pub fn configure_access(log: &LogConfig) -> Result<(), String> {
    sites::set_format(log.format, log.line_budget);
    sites::configure_site_files(&log.site_files)?;
    let target = &log.access;
    let mut a = ACCESS.lock().unwrap_or_else(|e| e.into_inner());
    if a.0 == *target && !matches!(a.1, AccessSink::Off) {
        return Ok(());
    }
    a.1 = open_access(target)?;
    a.0 = target.clone();
    ACCESS_ON.store(!matches!(a.1, AccessSink::Off), Ordering::Relaxed);
    Ok(())
}

/// SIGUSR1: reopen the access log files (after logrotate moved them).
pub fn reopen_access() -> Result<(), String> {
    sites::reopen_site_files()?;
    let mut a = ACCESS.lock().unwrap_or_else(|e| e.into_inner());
    if matches!(a.0, AccessLog::File(_) | AccessLog::Syslog) {
        let sink = open_access(&a.0.clone())?;
        a.1 = sink;
    }
    Ok(())
}

/// The descriptors the logs write to besides stderr (a syslog socket, the
/// access log file), -1 where there is none: what a forked child must keep.
/// Called in the supervisor (it locks), whenever the logs change.
pub fn descriptors() -> [RawFd; 2] {
    use std::os::fd::AsRawFd;
    fn of_syslog(l: &Syslog) -> RawFd {
        match &l.backend {
            syslog::LoggerBackend::Unix(s) => s.as_raw_fd(),
            syslog::LoggerBackend::UnixStream(s) => s.get_ref().as_raw_fd(),
            syslog::LoggerBackend::Udp(s, _) => s.as_raw_fd(),
            syslog::LoggerBackend::Tcp(s) => s.get_ref().as_raw_fd(),
        }
    }
    let error = match &state().sink {
        Sink::Syslog(l) => of_syslog(l),
        Sink::Stderr { .. } => -1,
    };
    let a = ACCESS.lock().unwrap_or_else(|e| e.into_inner());
    let access = match &a.1 {
        AccessSink::Syslog(l) => of_syslog(l),
        AccessSink::File(fd) => fd.as_raw_fd(),
        AccessSink::Off | AccessSink::Stderr => -1,
    };
    [error, access]
}

/// Bytes of the logs' description ([`spec`]).
pub const SPEC_LEN: usize = 4;

/// The logs as they are now, for a process of lbaws's own that writes to
/// them too and must follow their changes (the gate, which lives across
/// reloads and log rotations): their settings, and the access log file's
/// descriptor when it is a file (to be sent with them).
pub fn spec() -> ([u8; SPEC_LEN], Option<RawFd>) {
    use std::os::fd::AsRawFd;
    let (level, target, force) = {
        let st = state();
        (st.level, st.target, st.force_syslog)
    };
    let a = ACCESS.lock().unwrap_or_else(|e| e.into_inner());
    let (access, fd) = match &a.1 {
        AccessSink::Off => (0, None),
        AccessSink::Stderr => (1, None),
        AccessSink::Syslog(_) => (2, None),
        AccessSink::File(fd) => (3, Some(fd.as_raw_fd())),
    };
    let target = match target {
        LogTarget::Auto => 0,
        LogTarget::Stderr => 1,
        LogTarget::Syslog => 2,
    };
    // The format rides in the access byte's high half.
    let access = access | sites::format_code(access_format()) << 4;
    ([level as u8, target, u8::from(force), access], fd)
}

/// In a process that was sent `spec` (and the access log file's
/// descriptor, `file`): write to the logs as described, reconnecting to
/// syslog where it is used.
pub fn adopt(spec: [u8; SPEC_LEN], file: Option<OwnedFd>) {
    let level = [Level::Error, Level::Warn, Level::Info, Level::Debug]
        .into_iter()
        .find(|l| *l as u8 == spec[0])
        .unwrap_or(Level::Info);
    let target = match spec[1] {
        1 => LogTarget::Stderr,
        2 => LogTarget::Syslog,
        _ => LogTarget::Auto,
    };
    configure(level, target, spec[2] != 0);
    reopen();
    sites::set_format_code(spec[3] >> 4);
    let (kind, sink) = match (spec[3] & 15, file) {
        (1, _) => (AccessLog::Stderr, AccessSink::Stderr),
        (2, _) => match open_syslog() {
            Ok(l) => (AccessLog::Syslog, AccessSink::Syslog(l)),
            Err(_) => (AccessLog::Off, AccessSink::Off),
        },
        // The path is the sender's business: this process only writes.
        (3, Some(fd)) => (AccessLog::File(Default::default()), AccessSink::File(fd)),
        _ => (AccessLog::Off, AccessSink::Off),
    };
    let mut a = ACCESS.lock().unwrap_or_else(|e| e.into_inner());
    ACCESS_ON.store(!matches!(sink, AccessSink::Off), Ordering::Relaxed);
    *a = (kind, sink);
}

pub fn access_enabled() -> bool {
    ACCESS_ON.load(Ordering::Relaxed)
}

/// Write one access line (`line` ends without a newline).
pub fn access(line: &str) {
    let mut a = ACCESS.lock().unwrap_or_else(|e| e.into_inner());
    let journal = matches!(state().sink, Sink::Stderr { journal: true });
    match &mut a.1 {
        AccessSink::Off => {}
        AccessSink::Syslog(l) => {
            let _ = l.info(line);
        }
        AccessSink::Stderr => {
            let mut out = String::with_capacity(line.len() + 4);
            if journal {
                out.push_str("<6>");
            }
            out.push_str(line);
            out.push('\n');
            write_line(std::io::stderr().as_fd(), &out);
        }
        AccessSink::File(fd) => write_file(fd.as_fd(), line),
    }
}

/// One line to an access log file.
pub(crate) fn write_file(fd: std::os::fd::BorrowedFd<'_>, line: &str) {
    // After a line cut short (a full file system), start afresh on a
    // line of its own.
    let cut_before = crate::scoreboard::take_cut();
    let mut out = String::with_capacity(line.len() + 2);
    if cut_before {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    match nix::unistd::write(fd, out.as_bytes()) {
        Ok(n) if n == out.len() => {}
        Ok(n) => {
            let cut = !take_back(fd, n) || cut_before;
            crate::scoreboard::lost_line(libc::ENOSPC, cut);
        }
        Err(e) => crate::scoreboard::lost_line(e as i32, cut_before),
    }
}

/// A line written only in part (`n` bytes, the file system full) is taken
/// back: the file is cut to where the line began, if nothing was appended
/// since (the file ends where this write left the shared offset). A line is
/// then in the file whole or not at all; when it cannot be taken back, the
/// caller marks the next line to begin on a line of its own.
fn take_back(fd: std::os::fd::BorrowedFd<'_>, n: usize) -> bool {
    use nix::unistd::{ftruncate, lseek, Whence};
    let Ok(end) = lseek(fd, 0, Whence::SeekCur) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(fd) else {
        return false;
    };
    let n = n as i64;
    st.st_size == end && end >= n && ftruncate(fd, end - n).is_ok()
}

/// One line in one `write(2)` (the access log on stderr). What is not
/// written whole is counted in the scoreboard (the supervisor reports the
/// losses).
fn write_line(fd: std::os::fd::BorrowedFd<'_>, out: &str) {
    match nix::unistd::write(fd, out.as_bytes()) {
        Ok(n) if n == out.len() => {}
        Ok(_) => crate::scoreboard::lost_line(libc::ENOSPC, false),
        Err(e) => crate::scoreboard::lost_line(e as i32, false),
    }
}

/// Common Log Format time: `29/Nov/2026:11:48:02 +0000`.
pub struct ClfTime(pub i64);

/// What one access line says.
pub struct Clf<'a> {
    pub host: &'a str,
    /// Seconds since the epoch.
    pub time: i64,
    /// The request line's parts (method, target, version), if it was read.
    pub request: Option<&'a [&'a [u8]]>,
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// The response was cut: its body ends short (the line ends in ` cut`).
    pub cut: bool,
}

/// One Combined Log Format line:
/// `host - - [time] "request line" status bytes "referer" "user-agent"`,
/// and ` cut` after it for a response that was cut.
pub fn clf_line(c: &Clf<'_>) -> String {
    let mut line = String::with_capacity(200);
    let _ = write!(line, "{} - - [{}] \"", c.host, ClfTime(c.time));
    match c.request {
        Some(parts) => {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    line.push(' ');
                }
                clf_escape(&mut line, p);
            }
        }
        None => line.push('-'),
    }
    let _ = write!(line, "\" {} ", c.status);
    if c.body_bytes == 0 {
        line.push('-');
    } else {
        let _ = write!(line, "{}", c.body_bytes);
    }
    for v in [c.referer, c.user_agent] {
        line.push_str(" \"");
        match v {
            Some(v) => clf_escape(&mut line, v),
            None => line.push('-'),
        }
        line.push('"');
    }
    if c.cut {
        line.push_str(" cut");
    }
    line
}

/// Quote-safe: `"` and `\` escaped, control and non-ASCII bytes as `\xNN`.
pub fn clf_escape(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

impl fmt::Display for ClfTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (y, m, d, sod) = civil(self.0);
        write!(
            f,
            "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
            MONTHS[(m - 1) as usize],
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

/// A fixed buffer that silently truncates.
struct LineBuf {
    buf: [u8; 2048],
    len: usize,
    cut: bool,
}

impl fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 4 - self.len; // keep space for "...\n"
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.cut = true;
        }
        Ok(())
    }
}

pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if level as u8 > LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let mut st = state();
    if level > st.level {
        return;
    }
    match &mut st.sink {
        Sink::Syslog(l) => {
            let _ = match level {
                Level::Error => l.err(args),
                Level::Warn => l.warning(args),
                Level::Info => l.info(args),
                Level::Debug => l.debug(args),
            };
        }
        Sink::Stderr { journal } => {
            let mut b = LineBuf {
                buf: [0; 2048],
                len: 0,
                cut: false,
            };
            let name = match level {
                Level::Error => "error",
                Level::Warn => "warn",
                Level::Info => "info",
                Level::Debug => "debug",
            };
            if *journal {
                let prio = match level {
                    Level::Error => 3,
                    Level::Warn => 4,
                    Level::Info => 6,
                    Level::Debug => 7,
                };
                let _ = write!(b, "<{prio}>{name}: {args}");
            } else {
                let _ = write!(
                    b,
                    "{} lbaws[{}]: {name}: {args}",
                    Utc::now(),
                    std::process::id()
                );
            }
            if b.cut {
                b.buf[b.len..b.len + 3].copy_from_slice(b"...");
                b.len += 3;
            }
            b.buf[b.len] = b'\n';
            b.len += 1;
            // One write: lines from concurrent workers never interleave mid-line.
            let _ = nix::unistd::write(std::io::stderr(), &b.buf[..b.len]);
        }
    }
}

/// RFC 3339 UTC time, second precision, without allocating.
pub struct Utc(pub i64);

impl Utc {
    fn now() -> Utc {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Utc(secs)
    }
}

/// Seconds since the epoch to (year, month, day, second of day), UTC
/// (the days-to-civil algorithm published by Howard Hinnant).
fn civil(t: i64) -> (i64, i64, i64, i64) {
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod)
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, sod) = civil(self.0);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::write($crate::config::Level::Error, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::write($crate::config::Level::Warn, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::write($crate::config::Level::Info, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::write($crate::config::Level::Debug, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats() {
        assert_eq!(Utc(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Utc(1_795_960_800).to_string(), "2026-11-29T14:00:00Z");
        assert_eq!(Utc(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(
            ClfTime(1_795_960_800).to_string(),
            "29/Nov/2026:14:00:00 +0000"
        );
    }
}
