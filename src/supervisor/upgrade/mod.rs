//! Upgrade in place (SIGUSR2): the supervisor replaces its own image with
//! the binary at the path it was started from (after a package upgrade, the
//! new version), keeping its pid, its listeners, the connections that wait
//! and the workers that serve. Models: nginx's binary upgrade (USR2) and
//! HAProxy's master re-exec; neither keeps its pid under systemd, lbaws does
//! (systemd's MainPID, the pid file and every worker's parent stay).
//!
//! ```text
//!   SIGUSR2 -> RELOADING=1; the binary opened (O_PATH), the configuration
//!              file read: what is checked is what runs, whatever happens
//!              to either file from here on
//!   Checking   the binary run from that descriptor with the very arguments
//!              and environment of the exec, and a record of purpose Check
//!              (`record::Purpose`): it does what taking over does but hold
//!              the descriptors (parse the carried text, build the sandbox,
//!              attach the filter the process lacks) and says so; a child
//!              reaped in the loop like any other (30 s at most); it fails:
//!              logged with its output, STATUS says so, READY=1, the running
//!              image goes on as if nothing happened
//!   Handover   accepting pauses (the backlog keeps what comes); the gate
//!              sends every connection back and exits; parked connections
//!              and complete heads are collected too (5 s at most)
//!   exec       the record (`record::State`) in a memfd, close-on-exec
//!              cleared on what it names, WATCHDOG=1, execveat(the binary's
//!              descriptor, same argv, same env + NOTIFY_SOCKET/WATCHDOG_*)
//!              -- if that fails: a new gate takes the connections back, and
//!              serving goes on
//!   new image  WATCHDOG=1 at once; the carried configuration, the sandbox,
//!              the signalfd; if any of these fails (something outside lbaws
//!              changed since the check, e.g. a directory the configuration
//!              names is gone): execveat of the image before (its binary
//!              carried open) with the same record and the configuration it
//!              ran, which takes over and says why ("upgrade failed: ...");
//!              then the descriptors, and READY=1 with WATCHDOG=1
//! ```
//!
//! Workers are not told anything: each keeps serving its connection, parks
//! it on the same channel and is reaped by the new image, which has the
//! table of them. What the new image does before it holds the descriptors
//! was done by the check with the same binary, arguments, environment,
//! configuration text and filters: it fails only if the system changed in
//! between, and then the image before takes over again. What is left after
//! that is memory for the new image's tables (as at any start).
//!
//! The whole upgrade is this module: the state machine here (signal,
//! hand-over, exec), the check (`check.rs`), the record it hands over
//! (`record.rs`, its bytes in `wire.rs`), and the new image's side
//! (`resume.rs`: `Supervisor::resume`, which `upgraded::take_over` in
//! src/upgraded.rs calls after the configuration, the sandbox, the signalfd
//! and the logs, falling back with [`execute`] where one of these fails).

mod check;
mod record;
mod resume;
mod wire;

use super::gate_link::Pending;
use super::workers::Worker;
use super::Supervisor;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
pub use record::{
    take, Carried, CarriedConn, CarriedListener, CarriedWorker, Previous, Purpose, State, ENV,
    FORMAT, PASSED,
};
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the new binary may take to check the configuration.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the gate may take to hand its connections back.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// What this process was started as: an upgrade executes the file at `exe`
/// again (which a package upgrade has replaced) with the same arguments.
#[derive(Debug, Clone)]
pub struct Image {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Image {
    /// This process, as it was started (call early: before anything changes
    /// the working directory).
    pub fn current() -> Image {
        let args: Vec<OsString> = std::env::args_os().collect();
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&args[0]));
        // After the file was replaced, the kernel's name for it ends in
        // " (deleted)"; the path is what an upgrade runs.
        let exe = match exe.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
            Some(p) => PathBuf::from(std::ffi::OsStr::from_bytes(p)),
            None => exe,
        };
        Image { exe, args }
    }
}

/// Where an upgrade stands.
pub(super) enum Upgrade {
    /// The new binary checks the configuration.
    Checking {
        pid: Pid,
        output: OwnedFd,
        deadline: Instant,
        next: Next,
    },
    /// The gate sends its connections back.
    Handover { deadline: Instant, next: Next },
}

/// What the check runs and the exec runs, taken once at the signal: the
/// binary, open, so that a file replaced again meanwhile changes nothing
/// (`O_PATH`: it needs no read permission), and the configuration's text.
pub(super) struct Next {
    pub(super) exe: OwnedFd,
    pub(super) config: Carried,
}

impl Supervisor {
    pub(super) fn begin_upgrade(&mut self) {
        if self.stop.is_some() {
            crate::info!("SIGUSR2 ignored: stopping");
            return;
        }
        if self.upgrade.is_some() {
            crate::info!("SIGUSR2 ignored: an upgrade is under way");
            return;
        }
        self.notifier.reloading();
        crate::info!(
            "SIGUSR2: upgrading in place to {}; checking it first",
            self.image.exe.display()
        );
        let next = match self.next() {
            Ok(n) => n,
            Err(e) => return self.upgrade_refused(&e),
        };
        match self.spawn_check(&next) {
            Ok((pid, output)) => {
                self.upgrade = Some(Upgrade::Checking {
                    pid,
                    output,
                    deadline: Instant::now() + CHECK_TIMEOUT,
                    next,
                });
            }
            Err(e) => self.upgrade_refused(&format!("cannot run the check: {e}")),
        }
    }

    /// The binary at the path, open, and the configuration file's text.
    fn next(&self) -> Result<Next, String> {
        let exe = &self.image.exe;
        let fd = nix::fcntl::open(
            exe,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("{}: {e}", exe.display()))?;
        let text = match &self.cfg_path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("{}: cannot read: {e}", p.display()))?,
            None => crate::config::BUILTIN.to_string(),
        };
        Ok(Next {
            exe: fd,
            config: Carried {
                path: self.cfg_path.clone(),
                text,
            },
        })
    }

    pub(super) fn handing_over(&self) -> bool {
        matches!(self.upgrade, Some(Upgrade::Handover { .. }))
    }

    pub(super) fn begin_handover(&mut self, next: Next) {
        crate::info!(
            "upgrade: {} accepts the configuration; taking the waiting connections back from the gate",
            self.image.exe.display()
        );
        // What waited for the gate's link is carried as it is.
        for p in self.link.take_outbox() {
            self.carried.push(p);
        }
        self.upgrade = Some(Upgrade::Handover {
            deadline: Instant::now() + HANDOVER_TIMEOUT,
            next,
        });
        if self.link.is_up() {
            self.link.handover();
        } else if self.link.exists() {
            // Exiting already: its end is reaped, then the exec.
            crate::debug!("upgrade: the gate is ending");
        } else {
            self.exec_upgrade();
        }
    }

    /// A connection on its way to the gate, during the hand-over: carried.
    pub(super) fn carry(&mut self, p: Pending) {
        self.carried.push(p);
    }

    /// The upgrade's deadlines (the check, the hand-over).
    pub(super) fn upgrade_timers(&mut self, now: Instant) {
        match &mut self.upgrade {
            Some(Upgrade::Checking { pid, deadline, .. }) if now >= *deadline => {
                crate::warn!("upgrade: the check takes over {CHECK_TIMEOUT:?}: killing it");
                let _ = kill(*pid, Signal::SIGKILL);
            }
            Some(Upgrade::Handover { deadline, .. }) if now >= *deadline => {
                if let Some(pid) = self.link.pid() {
                    crate::warn!(
                        "upgrade: the gate took over {HANDOVER_TIMEOUT:?} to hand its connections back: killing it"
                    );
                    let _ = kill(pid, Signal::SIGKILL);
                }
                *deadline = now + HANDOVER_TIMEOUT;
            }
            _ => {}
        }
    }

    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        match &self.upgrade {
            Some(Upgrade::Checking { deadline, .. }) | Some(Upgrade::Handover { deadline, .. }) => {
                Some(*deadline)
            }
            None => None,
        }
    }

    /// A stop during an upgrade ends the upgrade: the check is killed (and
    /// reaped as a stray), or the connections collected so far are closed
    /// (the gate is ending anyway).
    pub(super) fn abandon_upgrade(&mut self) {
        match self.upgrade.take() {
            Some(Upgrade::Checking { pid, .. }) => {
                let _ = kill(pid, Signal::SIGKILL);
                crate::info!("upgrade abandoned: stopping");
            }
            Some(Upgrade::Handover { .. }) => {
                let n = self.carried.len();
                self.carried.clear();
                crate::info!("upgrade abandoned: stopping; {n} waiting connection(s) closed");
            }
            None => {}
        }
    }

    pub(super) fn upgrade_refused(&mut self, why: &str) {
        crate::error!("upgrade refused: {why}; the running version keeps serving");
        self.upgrade = None;
        self.upgrade_error = Some(format!("upgrade refused: {why}"));
        self.ready_again();
    }

    fn ready_again(&mut self) {
        self.status_dirty = true;
        if self.notifier.enabled() {
            self.notifier.ready(&self.status_line());
            self.status_sent = Some(Instant::now());
            self.status_dirty = false;
        }
    }

    /// The gate has handed everything back and ended (or was killed):
    /// replace this image.
    pub(super) fn exec_upgrade(&mut self) {
        let Some(Upgrade::Handover { next, .. }) = self.upgrade.take() else {
            return;
        };
        // The way back, should the new image not take over after all: this
        // image's binary (even replaced, its file stays while open) and the
        // configuration it runs.
        let back = nix::fcntl::open(
            "/proc/self/exe",
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        if let Err(e) = &back {
            crate::warn!("upgrade: no way back should the new image fail (/proc/self/exe: {e})");
        }
        let previous = back.as_ref().ok().map(|fd| Previous {
            exe: fd.as_raw_fd(),
            text: self.cfg.text.clone(),
        });
        let state = self.upgrade_state(&next, previous);
        crate::info!(
            "upgrade: executing {} (pid {} stays): {} worker(s), {} connection(s), {} listener(s) carried over",
            self.image.exe.display(),
            std::process::id(),
            state.workers.len(),
            state.conns.len(),
            state.listeners.len()
        );
        // The watchdog's clock goes on across the exec.
        self.notifier.watchdog();
        let why = execute(
            next.exe.as_fd(),
            &self.image.args,
            &state,
            self.notifier.env(),
        );
        crate::error!("upgrade failed: {why}; the running version goes on serving");
        self.upgrade_error = Some(format!("upgrade failed: {why}"));
        // A new gate of this version takes the connections back.
        self.spawn_gate();
        for p in std::mem::take(&mut self.carried) {
            self.hand_to_gate(p);
        }
        self.ready_again();
    }

    /// What the new image takes over.
    fn upgrade_state(&self, next: &Next, previous: Option<Previous>) -> State {
        let c = &self.counters;
        let now = Instant::now();
        State {
            purpose: Purpose::TakeOver,
            from_version: crate::VERSION.into(),
            exe: self.image.exe.clone(),
            exe_fd: next.exe.as_raw_fd(),
            config: next.config.clone(),
            previous,
            fell_back: None,
            filters: crate::sandbox::attached(),
            daemon: self.daemon,
            counters: [c.served, c.parked, self.lost_lines],
            stop_reader: self.stop_reader.as_raw_fd(),
            stop_writer: self.stop_writer.as_ref().map_or(-1, |w| w.as_raw_fd()),
            park_rx: self.park_rx.as_raw_fd(),
            park_tx: self.park_tx.as_raw_fd(),
            scoreboard: crate::scoreboard::fd(),
            next_slot: self.workers.slots().0,
            free_slots: self.workers.slots().1,
            listeners: self
                .listeners
                .iter()
                .map(|l| CarriedListener {
                    fd: l.raw(),
                    inherited: l.inherited,
                    name: l.name.clone(),
                })
                .collect(),
            workers: self
                .workers
                .all()
                .iter()
                .map(|w| CarriedWorker {
                    pid: w.pid.as_raw(),
                    peer: w.peer,
                    age_ms: now.saturating_duration_since(w.started).as_millis() as u64,
                    key: w.key,
                    slot: w.slot,
                })
                .collect(),
            conns: self
                .carried
                .iter()
                .map(|p| CarriedConn {
                    fd: p.conn.as_raw_fd(),
                    meta: p.meta,
                    file: p.body.as_ref().map_or(-1, |a| a.file.as_raw_fd()),
                    file2: p
                        .body
                        .as_ref()
                        .and_then(|a| a.file2.as_ref())
                        .map_or(-1, |f| f.as_raw_fd()),
                    spec: p.spec().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Replace this image with the binary open at `exe`, run with `argv` and
/// this environment plus `notify` (the service manager's variables) and the
/// record of `state`, whose descriptors stay open across it (and `exe`
/// itself where the record names it: a script is run as /dev/fd/N).
/// Returns only if that fails (why), with everything as it was. Used by an
/// upgrade in place, and by a new image that falls back to the one before.
pub fn execute(
    exe: BorrowedFd<'_>,
    argv: &[OsString],
    state: &State,
    notify: Vec<(OsString, OsString)>,
) -> String {
    let record = match state.to_memfd() {
        Ok(r) => r,
        Err(e) => return format!("memfd: {e}"),
    };
    let (argv, env) = match (cstrings(argv), {
        let mut extra = notify;
        extra.push((ENV.into(), record.as_raw_fd().to_string().into()));
        environment(&extra)
    }) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e.to_string(),
    };
    let mut fds = state.fds();
    fds.push(record.as_raw_fd());
    if state.exe_fd == exe.as_raw_fd() {
        fds.push(state.exe_fd);
    }
    for &fd in &fds {
        crate::sys::set_cloexec(fd, false);
    }
    let e = nix::unistd::execveat(exe, c"", &argv, &env, AtFlags::AT_EMPTY_PATH).unwrap_err();
    for &fd in &fds {
        crate::sys::set_cloexec(fd, true);
    }
    format!("execveat {}: {e}", state.exe.display())
}

/// A carried worker, back in the table of the new image.
pub(super) fn worker_of(w: &CarriedWorker, now: Instant) -> Worker {
    Worker {
        pid: Pid::from_raw(w.pid),
        peer: w.peer,
        started: now
            .checked_sub(Duration::from_millis(w.age_ms))
            .unwrap_or(now),
        key: w.key,
        slot: w.slot,
        stalled: None,
    }
}

pub(super) fn cstring(b: &[u8]) -> Result<CString, Errno> {
    CString::new(b).map_err(|_| Errno::EINVAL)
}

pub(super) fn cstrings(v: &[OsString]) -> Result<Vec<CString>, Errno> {
    v.iter().map(|a| cstring(a.as_bytes())).collect()
}

/// This process's environment (what is left of it: lbaws removed systemd's
/// variables at start) and `extra`.
pub(super) fn environment(extra: &[(OsString, OsString)]) -> Result<Vec<CString>, Errno> {
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os().chain(extra.iter().cloned()) {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env.push(cstring(&kv)?);
    }
    Ok(env)
}

/// A carried descriptor, this image's (close-on-exec again). One the
/// record names that is not open is a broken record: a panic, rather than
/// an `OwnedFd` of nothing.
pub fn own(fd: RawFd) -> OwnedFd {
    crate::sys::set_cloexec(fd, true);
    // SAFETY: handed over open by the previous image, for this one to own;
    // the record names each descriptor once.
    crate::sys::adopt_fd(fd).unwrap_or_else(|e| panic!("carried fd {fd}: {e}"))
}
