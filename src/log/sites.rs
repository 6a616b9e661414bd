//! The access log's format (`[log] access_format`) and the sites' own
//! access log files (`[[site]] access`): opened by the supervisor, their
//! descriptors published where a forked worker reads them without a lock,
//! and kept by every worker (`child.rs`).

use crate::config::AccessFormat;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

/// `[log] access_format` (an `AccessFormat` as a number).
static FORMAT: AtomicU8 = AtomicU8::new(0);
/// `[limits] max_header_bytes`: a JSON line's budget for request bytes.
static BUDGET: AtomicUsize = AtomicUsize::new(16 << 10);

/// The sites' own access log files (`[[site]] access`), opened by the
/// supervisor; their descriptors are also kept where a forked worker reads
/// them without a lock (-1: none).
static SITE_FILES: Mutex<Vec<(std::path::PathBuf, OwnedFd)>> = Mutex::new(Vec::new());
static SITE_FDS: [AtomicI32; crate::config::MAX_SITE_LOGS] =
    [const { AtomicI32::new(-1) }; crate::config::MAX_SITE_LOGS];

pub(super) fn format_code(f: AccessFormat) -> u8 {
    match f {
        AccessFormat::Combined => 0,
        AccessFormat::VhostCombined => 1,
        AccessFormat::Json => 2,
    }
}

/// The access lines' format.
pub fn access_format() -> AccessFormat {
    match FORMAT.load(Ordering::Relaxed) {
        1 => AccessFormat::VhostCombined,
        2 => AccessFormat::Json,
        _ => AccessFormat::Combined,
    }
}

/// A JSON line's budget for request bytes.
pub fn line_budget() -> usize {
    BUDGET.load(Ordering::Relaxed)
}

pub(super) fn open_append(p: &std::path::Path) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o640);
    nix::fcntl::open(p, flags, mode).map_err(|e| format!("access log {}: {e}", p.display()))
}

/// Open the sites' files (all, or none changes).
pub(super) fn configure_site_files(paths: &[std::path::PathBuf]) -> Result<(), String> {
    let mut files = SITE_FILES.lock().unwrap_or_else(|e| e.into_inner());
    if files.iter().map(|f| &f.0).eq(paths.iter()) {
        return Ok(());
    }
    let mut opened = Vec::with_capacity(paths.len());
    for p in paths {
        // Keep what is open already: only new files are opened.
        let fd = match files.iter().find(|f| f.0 == *p) {
            Some(f) => {
                f.1.try_clone()
                    .map_err(|e| format!("access log {}: {e}", p.display()))?
            }
            None => open_append(p)?,
        };
        opened.push((p.clone(), fd));
    }
    *files = opened;
    publish_site_fds(&files);
    Ok(())
}

fn publish_site_fds(files: &[(std::path::PathBuf, OwnedFd)]) {
    use std::os::fd::AsRawFd;
    for (i, slot) in SITE_FDS.iter().enumerate() {
        let fd = files.get(i).map_or(-1, |f| f.1.as_raw_fd());
        slot.store(fd, Ordering::Relaxed);
    }
}

/// The sites' access log descriptors (-1 where none), which a forked
/// worker keeps. Reads no lock: safe in a child after fork.
pub fn site_descriptors(out: &mut [RawFd]) {
    for (o, fd) in out.iter_mut().zip(&SITE_FDS) {
        *o = fd.load(Ordering::Relaxed);
    }
}

/// Where an access line goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dest {
    /// `[log] access`.
    Main,
    /// A site's own file (an index into `[log] site_files`).
    Site(usize),
}

/// Write one access line to `dest` (`line` ends without a newline).
pub fn access_to(dest: Dest, line: &str) {
    match dest {
        Dest::Main => super::access(line),
        Dest::Site(i) => {
            // (A worker is single-threaded, and the supervisor never forks
            // while it holds the lock.)
            let files = SITE_FILES.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, fd)) = files.get(i) {
                use std::os::fd::AsFd;
                super::write_file(fd.as_fd(), line);
            }
        }
    }
}

/// `[log] access_format` and the JSON budget (at start and on reload).
pub(super) fn set_format(f: AccessFormat, budget: usize) {
    FORMAT.store(format_code(f), Ordering::Relaxed);
    BUDGET.store(budget, Ordering::Relaxed);
}

/// The format as [`format_code`] gave it (a process that adopts the logs).
pub(super) fn set_format_code(code: u8) {
    FORMAT.store(code, Ordering::Relaxed);
}

/// The sites' files' descriptors as they are now, for the gate (which
/// writes the lines of the responses it finishes): `Msg::SiteLog`.
pub fn site_files() -> Vec<RawFd> {
    use std::os::fd::AsRawFd;
    let files = SITE_FILES.lock().unwrap_or_else(|e| e.into_inner());
    files.iter().map(|f| f.1.as_raw_fd()).collect()
}

/// In the gate: the sites' file `index` of `count` is now `fd` (sent in
/// order after the logs, at start, a reload and SIGUSR1; index 0 begins a
/// new set, and a `count` of 0 says there are none). Its path is the
/// sender's business: the gate only writes.
pub fn adopt_site_file(index: usize, count: usize, fd: Option<OwnedFd>) {
    let mut files = SITE_FILES.lock().unwrap_or_else(|e| e.into_inner());
    if index == 0 {
        files.clear();
    }
    if let Some(fd) = fd {
        if index == files.len() && index < count.min(crate::config::MAX_SITE_LOGS) {
            files.push((std::path::PathBuf::new(), fd));
        }
    }
    publish_site_fds(&files);
}

/// SIGUSR1: reopen the sites' files (after logrotate moved them).
pub(super) fn reopen_site_files() -> Result<(), String> {
    let mut files = SITE_FILES.lock().unwrap_or_else(|e| e.into_inner());
    let mut reopened = Vec::with_capacity(files.len());
    for (p, _) in files.iter() {
        reopened.push((p.clone(), open_append(p)?));
    }
    *files = reopened;
    publish_site_fds(&files);
    Ok(())
}
