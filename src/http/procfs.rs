//! lbaws's two long-lived processes, the supervisor and the gate, as the
//! status page shows them (Prometheus's standard `process_*` metrics):
//! read from /proc by the worker that answers the page, when it answers it.
//! The supervisor does nothing for this; the gate's pid is in the
//! scoreboard (`Sup::GatePid`), the supervisor is the worker's parent.
//!
//! What is read is what any process may read of another of its user's:
//! `/proc/PID/stat` (CPU time, resident pages, start time), `/proc/PID/limits`
//! (the descriptor limit) and the size of `/proc/PID/fd`, which is its count
//! of open descriptors (Linux 6.2 and later; before, the directory's entries
//! are counted, which needs the process to be dumpable, as it is under
//! systemd's `User=`). The worker's sandbox lets it read /proc only when the
//! configuration has a status route (`sandbox::fs::worker_plan`).

use crate::scoreboard::{self, Sup};
use std::path::PathBuf;

/// One process, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// `supervisor` or `gate`.
    pub role: &'static str,
    pub pid: u32,
    /// User and system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    /// Since the epoch.
    pub start_seconds: f64,
    /// `None` where they cannot be read.
    pub open_fds: Option<u64>,
    /// The soft limit (`None`: unlimited, or unreadable).
    pub max_fds: Option<u64>,
}

/// The supervisor and the gate, those of them that can be read (none
/// without a supervisor: `--inetd`).
pub fn processes() -> Vec<Process> {
    if scoreboard::get(Sup::StartedUnix) == 0 {
        return Vec::new(); // no scoreboard, no supervisor
    }
    let parent = nix::unistd::getppid().as_raw() as u32;
    let mut out = Vec::with_capacity(2);
    if let Some(p) = read("supervisor", parent, None) {
        out.push(p);
    }
    let gate = scoreboard::get(Sup::GatePid) as u32;
    // A gate that died leaves its pid behind: only a live process named as
    // the gate, whose parent is the supervisor, is it.
    if gate != 0 {
        if let Some(p) = read("gate", gate, Some(parent)) {
            out.push(p);
        }
    }
    out
}

/// The gate's process name (`gate::GATE_NAME`, which is not imported here:
/// http/ does not look up into gate/; a test keeps the two the same).
const GATE_COMM: &str = "lbaws-gate";

fn read(role: &'static str, pid: u32, parent: Option<u32>) -> Option<Process> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let st = Stat::parse(&stat)?;
    if let Some(ppid) = parent {
        if st.ppid != ppid || st.comm != GATE_COMM {
            return None;
        }
    }
    let tick = clock_ticks();
    Some(Process {
        role,
        pid,
        cpu_seconds: (st.utime + st.stime) as f64 / tick,
        resident_bytes: st.rss_pages * page_size(),
        start_seconds: boot_time() + st.start_ticks as f64 / tick,
        open_fds: open_fds(&dir),
        max_fds: std::fs::read_to_string(dir.join("limits"))
            .ok()
            .and_then(|l| max_open_files(&l)),
    })
}

/// The fields of `/proc/PID/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat<'a> {
    comm: &'a str,
    ppid: u32,
    utime: u64,
    stime: u64,
    start_ticks: u64,
    rss_pages: u64,
}

impl<'a> Stat<'a> {
    /// `pid (comm) state ppid ...`: the name may hold spaces and
    /// parentheses, so the fields are counted from its last `)`.
    fn parse(text: &'a str) -> Option<Stat<'a>> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?;
        // Fields from the 3rd (state) on: field N is at N - 3.
        let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
        let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            comm,
            ppid: num(4)? as u32,
            utime: num(14)?,
            stime: num(15)?,
            start_ticks: num(22)?,
            rss_pages: num(24)?,
        })
    }
}

/// The soft limit of `Max open files` in `/proc/PID/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open descriptors: the size of `/proc/PID/fd` (Linux 6.2 and later), or
/// its entries counted.
fn open_fds(dir: &std::path::Path) -> Option<u64> {
    let fd = dir.join("fd");
    match std::fs::metadata(&fd).ok()?.len() {
        0 => Some(std::fs::read_dir(&fd).ok()?.count() as u64),
        n => Some(n),
    }
}

fn clock_ticks() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

fn page_size() -> u64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// When the machine booted, seconds since the epoch (start times in
/// `/proc/PID/stat` count from it).
fn boot_time() -> f64 {
    use nix::time::{clock_gettime, ClockId};
    let secs = |id| clock_gettime(id).map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9);
    secs(ClockId::CLOCK_REALTIME) - secs(ClockId::CLOCK_BOOTTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_names_last_parenthesis() {
        let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 120 0 0 0 \
                    250 75 0 0 20 0 1 0 123456 10485760 812 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                comm: "a (b) c",
                ppid: 17,
                utime: 250,
                stime: 75,
                start_ticks: 123456,
                rss_pages: 812,
            })
        );
        assert_eq!(Stat::parse("4242 (cut"), None);
    }

    #[test]
    fn the_soft_descriptor_limit_is_read_from_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63504                63504                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
    }

    #[test]
    fn this_process_reads_as_itself() {
        let me = std::process::id();
        let p = read("supervisor", me, None).expect("/proc/self");
        assert_eq!(p.pid, me);
        assert!(p.resident_bytes > 0);
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        let soft = crate::sys::nofile().0;
        assert_eq!(p.max_fds, Some(soft));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_seconds <= now + 1.0 && p.start_seconds > 0.0,
            "{p:?}"
        );
        // Not the gate: its name is not the gate's.
        assert_eq!(read("gate", me, Some(0)), None);
    }

    #[test]
    fn the_gates_name_is_the_gates() {
        assert_eq!(Some(GATE_COMM), crate::gate::GATE_NAME.to_str().ok());
    }
}
