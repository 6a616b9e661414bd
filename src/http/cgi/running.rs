//! A running script, as its worker sees it: its output read by deadlines,
//! its stderr logged (up to the route's `stderr` budget, then counted), its
//! exit waited for by a deadline too (a pidfd, polled with its stderr), and
//! its end and that of everything it left: its process group, what came
//! back to the worker (a subreaper), and its cgroup leaf. An abnormal end
//! is logged with the limit that caused it, where that can be known.

use super::process::KILL_GRACE;
use crate::config::CgiLimits;
use crate::sandbox::CgroupLeaf;
use crate::sys;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A partial stderr line longer than this is logged as it is.
const LINE_MAX: usize = 4096;

/// The running script: its pid, its stdout, and its stderr being logged
/// line by line.
pub struct Running {
    pub pid: Pid,
    pub name: String,
    out: Option<OwnedFd>,
    err: OwnedFd,
    err_buf: Vec<u8>,
    err_open: bool,
    /// Bytes of stderr that may still be logged; what was dropped past
    /// that (bytes, line ends).
    err_left: u64,
    err_limit: u64,
    dropped: (u64, u64),
    /// Readable once the script has exited (None where the kernel has no
    /// pidfd: then its exit is polled).
    exit: Option<OwnedFd>,
    reaped: Option<WaitStatus>,
    limits: CgiLimits,
    /// Its cgroup leaf (limits by cgroup), removed when it is dropped.
    leaf: Option<CgroupLeaf>,
    /// Processes left in its group when it was terminated.
    left_at_end: usize,
}

impl Running {
    pub fn new(
        pid: Pid,
        name: String,
        out: OwnedFd,
        err: OwnedFd,
        limits: CgiLimits,
        stderr_limit: u64,
        leaf: Option<CgroupLeaf>,
    ) -> Running {
        Running {
            pid,
            name,
            out: Some(out),
            err,
            err_buf: Vec::new(),
            err_open: true,
            err_left: stderr_limit,
            err_limit: stderr_limit,
            dropped: (0, 0),
            exit: sys::pidfd_open(pid.as_raw()).ok(),
            reaped: None,
            limits,
            leaf,
            left_at_end: 0,
        }
    }

    /// Read from the script's stdout by `deadline`, logging its stderr
    /// meanwhile; `Ok(0)` is EOF, `Err(())` the deadline.
    pub fn read(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, ()> {
        loop {
            let Some(out) = self.out.take() else {
                return Ok(0);
            };
            let ready = self.wait_readable(Some(&out), deadline);
            self.out = Some(out);
            if !ready {
                return Err(());
            }
            let Some(out) = &self.out else { return Ok(0) };
            match nix::unistd::read(out, buf) {
                Ok(n) => {
                    crate::scoreboard::progress();
                    return Ok(n);
                }
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                Err(_) => return Ok(0),
            }
        }
    }

    /// Wait until `out` is readable (or, without it, the script has exited)
    /// or the deadline passes, logging stderr meanwhile. False at the
    /// deadline.
    fn wait_readable(&mut self, out: Option<&OwnedFd>, deadline: Instant) -> bool {
        loop {
            if out.is_none() && self.try_reap() {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            let mut ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            if ms == 0 {
                return false;
            }
            // Without a pidfd, the exit is looked for every 10 ms.
            if out.is_none() && self.exit.is_none() {
                ms = ms.min(10);
            }
            // The script's stdout (or its exit) and its stderr, as there
            // are (poll skips a negative descriptor).
            let fd = |f: Option<&OwnedFd>| libc::pollfd {
                fd: f.map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            };
            let exit = out.is_none().then_some(self.exit.as_ref()).flatten();
            let mut set = [fd(out), fd(self.err_open.then_some(&self.err)), fd(exit)];
            match sys::poll(&mut set, ms) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return true,
            }
            if set[1].revents != 0 {
                self.read_stderr();
            }
            if set[0].revents != 0 {
                return true;
            }
        }
    }

    /// Wait for the script itself to exit, by `deadline` (its stderr logged
    /// meanwhile): whether it did.
    pub fn wait_exit(&mut self, deadline: Instant) -> bool {
        self.wait_readable(None, deadline)
    }

    fn read_stderr(&mut self) {
        let mut buf = [0u8; 16384];
        match nix::unistd::read(&self.err, &mut buf) {
            Ok(0) | Err(_) => {
                self.err_open = false;
                self.flush_stderr(true);
            }
            Ok(n) => {
                let data = &buf[..n];
                if self.err_left == 0 && self.err_buf.is_empty() {
                    // Over budget: counted, not kept.
                    self.dropped.0 += n as u64;
                    self.dropped.1 += memchr::memchr_iter(b'\n', data).count() as u64;
                    return;
                }
                self.err_buf.extend_from_slice(data);
                self.flush_stderr(false);
            }
        }
    }

    /// One log line per line the script wrote to stderr, while the budget
    /// lasts.
    fn flush_stderr(&mut self, all: bool) {
        loop {
            let line_end = memchr::memchr(b'\n', &self.err_buf);
            let take = match line_end {
                Some(nl) => nl + 1,
                None if (all && !self.err_buf.is_empty()) || self.err_buf.len() > LINE_MAX => {
                    self.err_buf.len()
                }
                None => return,
            };
            if self.err_left < take as u64 {
                // The budget ends here: this and the rest are counted.
                self.dropped.0 += self.err_buf.len() as u64;
                self.dropped.1 += memchr::memchr_iter(b'\n', &self.err_buf).count() as u64;
                self.err_buf.clear();
                self.err_left = 0;
                return;
            }
            self.err_left -= take as u64;
            let line: Vec<u8> = self.err_buf.drain(..take).collect();
            let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
            crate::warn!(
                "cgi {}[{}]: {}",
                self.name,
                self.pid,
                text.trim_end_matches('\r')
            );
        }
    }

    /// Send `sig` to the script's process group (unless it has been reaped).
    pub fn kill(&self, sig: Signal) {
        if self.reaped.is_none() {
            let _ = killpg(self.pid, sig);
        }
    }

    fn try_reap(&mut self) -> bool {
        if self.reaped.is_some() {
            return true;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(s) => {
                self.reaped = Some(s);
                true
            }
            Err(Errno::EINTR) => false,
            Err(_) => {
                self.reaped = Some(WaitStatus::StillAlive);
                true
            }
        }
    }

    /// Whether any process of its group lives, once every child that has
    /// ended is reaped (descendants come back to this worker, a
    /// subreaper; the script's own status is kept).
    fn group_alive(&mut self) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) if s.pid() == Some(self.pid) => self.reaped = Some(s),
                Ok(_) => {}
            }
        }
        // (While the group has a member, its id cannot be a new process's.)
        killpg(self.pid, None).is_ok()
    }

    pub fn reap_blocking(&mut self) {
        while self.reaped.is_none() {
            match waitpid(self.pid, None) {
                Ok(s) => self.reaped = Some(s),
                Err(Errno::EINTR) => continue,
                Err(_) => self.reaped = Some(WaitStatus::StillAlive),
            }
        }
    }

    /// TERM the script's group, then KILL what is left of it after a
    /// grace period; reap it and every descendant it left.
    pub fn terminate(&mut self) {
        // How many it had going, for the log (this path only: the others
        // do not look through /proc).
        self.left_at_end = count_group(self.pid);
        self.kill(Signal::SIGTERM);
        let until = Instant::now() + KILL_GRACE;
        while self.group_alive() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.group_alive() {
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
        self.reap_blocking();
        if let Some(leaf) = &self.leaf {
            leaf.kill();
        }
        end_descendants();
    }

    /// At the end: close its stdout, drain stderr, reap (killing the group
    /// if it lingers), end what it left, and log an abnormal end and what
    /// stderr was dropped.
    pub fn finish(&mut self) {
        self.out = None;
        let until = Instant::now() + KILL_GRACE;
        self.wait_exit(until);
        // What it still writes to stderr before its end (descendants may
        // hold stderr open for ever: bounded too).
        while self.err_open && Instant::now() < until {
            let mut fds = [PollFd::new(self.err.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) => break,
                Ok(_) => self.read_stderr(),
                Err(_) => break,
            }
        }
        self.flush_stderr(true);
        if self.reaped.is_none() {
            self.kill(Signal::SIGKILL);
            self.reap_blocking();
        }
        // Whatever it left in its group goes too, and whatever it left
        // anywhere else: detached descendants came back to this worker,
        // and the whole tree is in its cgroup leaf.
        let _ = killpg(self.pid, Signal::SIGKILL);
        if let Some(leaf) = &self.leaf {
            leaf.kill();
        }
        end_descendants();
        if self.dropped.0 > 0 {
            crate::warn!(
                "cgi {}[{}]: {} more bytes of stderr ({} lines) dropped: over the route's stderr limit of {} bytes",
                self.name,
                self.pid,
                self.dropped.0,
                self.dropped.1,
                self.err_limit
            );
        }
        match self.reaped {
            Some(WaitStatus::Exited(_, 0)) | None => {}
            Some(WaitStatus::Exited(_, _)) | Some(WaitStatus::Signaled(..)) => {
                crate::warn!("cgi {}[{}]: {}", self.name, self.pid, self.end())
            }
            Some(_) => {}
        }
        if let Some(hits) = self.leaf_hits() {
            crate::warn!("cgi {}[{}]: {hits}", self.name, self.pid);
        }
        // Removed (it is empty now).
        self.leaf = None;
    }

    /// Whether it was ended by a signal (killed, or crashed) rather than
    /// exiting: its output may have been cut anywhere.
    pub fn killed(&self) -> bool {
        matches!(self.reaped, Some(WaitStatus::Signaled(..)))
    }

    /// How it ended, and the limit behind it where that is known:
    /// "exited with code 3", "killed by SIGXCPU (its cpu limit, 60s)".
    pub fn end(&self) -> String {
        let l = &self.limits;
        let mut s = match self.reaped {
            Some(WaitStatus::Exited(_, code)) => format!("exited with code {code}"),
            Some(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
            _ => "ended".into(),
        };
        match self.reaped {
            Some(WaitStatus::Signaled(_, Signal::SIGXCPU, _)) => {
                s += &format!(" (its cpu limit, {}s)", l.cpu_secs)
            }
            Some(WaitStatus::Signaled(_, Signal::SIGXFSZ, _)) => {
                s += &format!(" (its file_size limit, {} bytes)", l.file_size)
            }
            _ => {}
        }
        s
    }

    /// What its cgroup's limits stopped, or what was left in its group at
    /// its process limit (the rlimit way), for the log.
    fn leaf_hits(&self) -> Option<String> {
        let l = &self.limits;
        let mut what = Vec::new();
        match &self.leaf {
            Some(leaf) => {
                let hits = leaf.hits();
                if hits.processes > 0 {
                    what.push(format!(
                        "its processes limit ({}) refused {} forks",
                        l.processes, hits.processes
                    ));
                }
                if hits.oom_kills > 0 {
                    what.push(format!(
                        "its memory limit ({} bytes) ended {} processes",
                        l.memory, hits.oom_kills
                    ));
                }
            }
            None if self.left_at_end as u64 + 1 >= l.processes && l.processes > 1 => {
                what.push(format!(
                    "it had {} processes going, at its processes limit ({})",
                    self.left_at_end, l.processes
                ));
            }
            None => {}
        }
        (!what.is_empty()).then(|| what.join("; "))
    }
}

/// How many processes are in process group `pgid` (from /proc; 0 where it
/// cannot be read).
fn count_group(pgid: Pid) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let want = pgid.as_raw().to_string();
    dir.flatten()
        .filter(|e| e.file_name().as_encoded_bytes()[0].is_ascii_digit())
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp ...
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(2))
                .is_some_and(|pgrp| pgrp == want)
        })
        .count()
}

/// End what a script left behind: this worker is a subreaper, so every
/// descendant that outlived its parent is now a child of the worker (which
/// has no other). SIGTERM to each and its group, SIGKILL to what is left
/// after the grace, and reap them all; again, until none is left (an ended
/// descendant's own children come back too).
fn end_descendants() {
    let mut pids = [0 as libc::pid_t; 64];
    for _ in 0..8 {
        let n = sys::children(&mut pids);
        if n == 0 {
            break;
        }
        for &p in &pids[..n] {
            let pid = Pid::from_raw(p);
            let _ = killpg(pid, Signal::SIGTERM);
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        }
        let until = Instant::now() + KILL_GRACE;
        while Instant::now() < until {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break, // ECHILD: none left
            }
        }
        for &p in &pids[..n] {
            let pid = Pid::from_raw(p);
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            // Dying now: wait for it (an error means it was reaped above).
            let _ = waitpid(pid, None);
        }
    }
}
