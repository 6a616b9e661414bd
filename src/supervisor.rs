//! The supervisor: accept, fork, reap, cap, stop, reload. One thread, one loop.
//!
//! ```text
//!   poll([signalfd, listeners...])       listeners only while accepting
//!     signalfd readable -> SIGCHLD: reap_workers()   (waitpid(-1, WNOHANG) until none)
//!                          SIGTERM/SIGINT: begin_stop(graceful)   SIGQUIT: begin_stop(immediate)
//!                          SIGHUP: reload()   SIGUSR1: reopen logs
//!     listener readable -> accept_burst(): accept4(SOCK_CLOEXEC) until EAGAIN or full,
//!                          new_connection(): fork; child -> child::run (never returns)
//!     timers            -> STATUS (at most 1/s), WATCHDOG=1, accept back-off, stop stages
//! ```
//!
//! Invariants kept here:
//! 1. Signals are read from the signalfd in this loop; there are no handlers.
//! 5. READY=1 is sent by [`Supervisor::run`] only once every listener is live
//!    (they were all bound or inherited before it was built); a failed reload
//!    keeps the running configuration and listeners and says so in STATUS.
//! 6. Every child is reaped; an abnormal end (signal, non-zero code) is logged
//!    with pid, peer, age and cause.
//! 7. Every fork copies this process, so the loop allocates nothing per
//!    connection and touches little: the worker table and the poll set are
//!    fixed tables in memory the workers do not inherit (`MADV_DONTFORK`, see
//!    `alloc::SupervisorTable`), and nothing is logged per connection (only
//!    failures and bursts).
//!
//! Concurrency cap: at `max_connections` live workers the listeners leave the
//! poll set and new connections wait in the kernel backlog; they come back as
//! workers end. Accept errors: `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` pause
//! accepting briefly (logged once per burst); a failed fork answers that one
//! connection with a short 503 written without blocking, and serving goes on.

use crate::alloc::SupervisorTable;
use crate::child;
use crate::config::{self, Config};
use crate::listen::{self, Listener, Peer};
use crate::notify::Notifier;
use crate::signals;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{send, MsgFlags, SockaddrLike, SockaddrStorage};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Most connections taken from one listener per wakeup, so signals and the
/// other listeners are not starved under a flood.
const ACCEPT_BURST: usize = 64;
/// How long to stop accepting after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// After SIGTERM to the workers (stop timeout, or SIGQUIT), time until SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// STATUS= at most this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// The answer when no worker can be forked, written without blocking.
const RESPONSE_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 24\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable\n";

#[derive(Clone, Copy)]
struct Worker {
    pid: Pid,
    peer: Peer,
    started: Instant,
}

enum Stop {
    /// Not accepting; waiting for workers to finish, until the deadline.
    Draining(Instant),
    /// Workers were sent SIGTERM; SIGKILL at the deadline.
    Terminating(Instant),
    /// Workers were sent SIGKILL; reaping the last of them.
    Killed,
}

pub struct Supervisor {
    cfg: Config,
    cfg_path: Option<PathBuf>,
    daemon: bool,
    listeners: Vec<Listener>,
    signal_fd: SignalFd,
    /// The stop pipe: workers watch the read end while idle; dropping the
    /// write end (graceful stop) tells idle keep-alive workers to close.
    stop_reader: OwnedFd,
    stop_writer: Option<OwnedFd>,
    notifier: Notifier,
    /// Both in memory the workers do not inherit (see `alloc::SupervisorTable`).
    workers: SupervisorTable<Worker>,
    pollfds: SupervisorTable<libc::pollfd>,
    served: u64,
    refused: u64,
    accept_paused_until: Option<Instant>,
    accept_error_logged: bool,
    fork_error_logged: bool,
    stop: Option<Stop>,
    reload_error: Option<String>,
    status_dirty: bool,
    status_sent: Option<Instant>,
    next_watchdog: Option<Instant>,
}

impl Supervisor {
    pub fn new(
        cfg: Config,
        cfg_path: Option<PathBuf>,
        daemon: bool,
        listeners: Vec<Listener>,
        signal_fd: SignalFd,
        notifier: Notifier,
    ) -> Supervisor {
        let max = cfg.server.max_connections;
        let (stop_reader, stop_writer) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2");
        Supervisor {
            stop_reader,
            stop_writer: Some(stop_writer),
            cfg,
            cfg_path,
            daemon,
            pollfds: SupervisorTable::with_capacity(listeners.len() + 1),
            listeners,
            signal_fd,
            notifier,
            workers: SupervisorTable::with_capacity(max),
            served: 0,
            refused: 0,
            accept_paused_until: None,
            accept_error_logged: false,
            fork_error_logged: false,
            stop: None,
            reload_error: None,
            status_dirty: false,
            status_sent: None,
            next_watchdog: None,
        }
    }

    /// Serve until stopped; returns the process exit code.
    pub fn run(mut self) -> i32 {
        for l in &self.listeners {
            crate::info!("listening on {l}");
        }
        crate::info!(
            "ready: pid {}, {} listener(s), max_connections {}",
            std::process::id(),
            self.listeners.len(),
            self.cfg.server.max_connections
        );
        if self.notifier.enabled() {
            self.notifier.ready(&self.status_line());
            self.status_sent = Some(Instant::now());
        }
        self.next_watchdog = self.notifier.watchdog.map(|d| Instant::now() + d);

        loop {
            if self.stop.is_some() && self.workers.is_empty() {
                break;
            }
            let accepting = self.accepting();
            if self.pollfds.capacity() < self.listeners.len() + 1 {
                self.pollfds = SupervisorTable::with_capacity(self.listeners.len() + 1);
            }
            self.pollfds.clear();
            self.pollfds.push(pollfd(self.signal_fd.as_raw_fd()));
            if accepting {
                for l in &self.listeners {
                    self.pollfds.push(pollfd(l.raw()));
                }
            }
            let timeout = self.poll_timeout();
            // SAFETY: pollfds is a valid array of pollfd of the given length.
            let n = unsafe {
                libc::poll(
                    self.pollfds.as_mut_slice().as_mut_ptr(),
                    self.pollfds.len() as libc::nfds_t,
                    timeout,
                )
            };
            if n < 0 {
                let e = Errno::last();
                if e != Errno::EINTR {
                    crate::error!("poll: {e}");
                }
                continue;
            }
            if self.pollfds.as_slice()[0].revents != 0 {
                self.handle_signals();
            }
            if accepting && self.stop.is_none() {
                for i in 0..self.listeners.len() {
                    match self.pollfds.as_slice().get(i + 1) {
                        Some(p) if p.revents != 0 => self.accept_burst(i),
                        _ => {}
                    }
                }
            }
            self.timers();
        }
        crate::info!("stopped: {} served, {} refused", self.served, self.refused);
        for l in self.listeners.drain(..) {
            l.close();
        }
        0
    }

    fn accepting(&mut self) -> bool {
        if self.stop.is_some() || self.workers.len() >= self.cfg.server.max_connections {
            return false;
        }
        match self.accept_paused_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                self.accept_paused_until = None;
                true
            }
            None => true,
        }
    }

    /// Milliseconds until the next timer is due, or -1 for none.
    fn poll_timeout(&self) -> i32 {
        let mut next: Option<Instant> = None;
        let mut due = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        due(self.accept_paused_until);
        due(self.next_watchdog);
        if self.status_dirty && self.notifier.enabled() {
            due(Some(
                self.status_sent
                    .map_or_else(Instant::now, |t| t + STATUS_INTERVAL),
            ));
        }
        match self.stop {
            Some(Stop::Draining(t)) | Some(Stop::Terminating(t)) => due(Some(t)),
            _ => {}
        }
        match next {
            None => -1,
            Some(t) => {
                let d = t.saturating_duration_since(Instant::now());
                // Round up so that the timer is due when poll returns.
                (d.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
            }
        }
    }

    // -----------------------------------------------------------------------
    // Signals

    fn handle_signals(&mut self) {
        let mut chld = false;
        while let Some(sig) = signals::next(&self.signal_fd) {
            match sig {
                Signal::SIGCHLD => chld = true,
                Signal::SIGTERM | Signal::SIGINT => {
                    let again = self.stop.is_some();
                    self.begin_stop(again, sig);
                }
                Signal::SIGQUIT => self.begin_stop(true, sig),
                Signal::SIGHUP => {
                    if self.stop.is_none() {
                        self.reload();
                    }
                }
                Signal::SIGUSR1 => {
                    crate::log::reopen();
                    match crate::log::reopen_access() {
                        Ok(()) => crate::info!("SIGUSR1: log files reopened"),
                        Err(e) => crate::error!("SIGUSR1: {e}"),
                    }
                }
                other => crate::debug!("{other} ignored"),
            }
        }
        // SIGCHLDs merge: one pass reaps every child that has ended.
        if chld {
            self.reap_workers();
        }
    }

    // -----------------------------------------------------------------------
    // Accepting and forking

    fn accept_burst(&mut self, idx: usize) {
        let lfd = self.listeners[idx].raw();
        for _ in 0..ACCEPT_BURST {
            if self.workers.len() >= self.cfg.server.max_connections {
                return;
            }
            // SAFETY: zeroed sockaddr_storage is a valid out-parameter.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    &mut ss as *mut _ as *mut libc::sockaddr,
                    &mut len,
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 just returned this descriptor to us.
                let conn = unsafe { OwnedFd::from_raw_fd(fd) };
                let sa = unsafe {
                    SockaddrStorage::from_raw(&ss as *const _ as *const libc::sockaddr, Some(len))
                };
                let peer = sa.as_ref().map_or(Peer::Unix, Peer::from_storage);
                self.accept_error_logged = false;
                self.new_connection(conn, peer);
                continue;
            }
            match Errno::last() {
                Errno::EAGAIN => return,
                Errno::EINTR => continue,
                // The connection died in the queue, or a firewall said no: next.
                Errno::ECONNABORTED | Errno::EPROTO | Errno::EPERM => continue,
                e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
                    if !self.accept_error_logged {
                        crate::error!(
                            "accept on {}: {e}; pausing accepts, {} workers live",
                            self.listeners[idx].local,
                            self.workers.len()
                        );
                        self.accept_error_logged = true;
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
                e => {
                    crate::error!("accept on {}: {}", self.listeners[idx].local, e);
                    return;
                }
            }
        }
    }

    /// Fork a worker for an accepted connection.
    fn new_connection(&mut self, conn: OwnedFd, peer: Peer) {
        // SAFETY: lbaws is single-threaded, so the child is a complete copy.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let inherited = child::Inherited {
                    listeners: &self.listeners,
                    signal_fd: self.signal_fd.as_raw_fd(),
                    stop_writer: self.stop_writer.as_ref().map(|w| w.as_raw_fd()),
                    stop_reader: self.stop_reader.as_raw_fd(),
                };
                child::run(conn, peer, &self.cfg, inherited)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(conn); // the worker has its own copy
                self.fork_error_logged = false;
                // Cannot be full: accept stops at max_connections.
                self.workers.push(Worker {
                    pid: child,
                    peer,
                    started: Instant::now(),
                });
                self.status_dirty = true;
            }
            Err(e) => {
                let _ = send(
                    conn.as_raw_fd(),
                    RESPONSE_503,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                );
                drop(conn);
                self.refused += 1;
                self.status_dirty = true;
                if !self.fork_error_logged {
                    crate::error!(
                        "fork: {e}; answering 503, {} workers live",
                        self.workers.len()
                    );
                    self.fork_error_logged = true;
                }
            }
        }
    }

    // -----------------------------------------------------------------------
    // Reaping

    fn reap_workers(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.end_connection(pid, code, None),
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    self.end_connection(pid, 0, Some((sig, core)))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue, // stopped/continued: not an end
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::error!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn end_connection(&mut self, pid: Pid, code: i32, signal: Option<(Signal, bool)>) {
        let Some(i) = self.workers.as_slice().iter().position(|w| w.pid == pid) else {
            // Not a worker (e.g. a daemonize helper): nothing to account.
            return;
        };
        let w = self.workers.swap_remove(i);
        self.served += 1;
        self.status_dirty = true;
        let age = w.started.elapsed().as_secs_f64();
        match signal {
            // Killed by us while stopping: expected.
            Some((sig, _))
                if matches!(self.stop, Some(Stop::Terminating(_)) | Some(Stop::Killed)) =>
            {
                crate::info!(
                    "worker {pid} (peer {}) ended by {sig} at shutdown after {age:.3}s",
                    w.peer
                )
            }
            Some((sig, core)) => crate::warn!(
                "worker {pid} (peer {}) killed by signal {} ({sig}){} after {age:.3}s",
                w.peer,
                sig as i32,
                if core { ", core dumped" } else { "" }
            ),
            None if code != 0 => crate::warn!(
                "worker {pid} (peer {}) exited with code {code} ({}) after {age:.3}s",
                w.peer,
                exit_meaning(code)
            ),
            None => {}
        }
    }

    // -----------------------------------------------------------------------
    // Stopping

    fn begin_stop(&mut self, immediate: bool, sig: Signal) {
        if self.stop.is_none() {
            // Idle keep-alive workers see the stop pipe hang up and close.
            self.stop_writer = None;
            // Self-bound listeners close now, so new clients are refused at once
            // rather than left waiting in a backlog nobody will accept from.
            // Sockets from systemd stay open: systemd queues for the next start.
            let (inherited, own): (Vec<_>, Vec<_>) =
                self.listeners.drain(..).partition(|l| l.inherited);
            self.listeners = inherited;
            for l in own {
                l.close();
            }
        }
        if immediate {
            if !matches!(self.stop, Some(Stop::Terminating(_)) | Some(Stop::Killed)) {
                crate::info!(
                    "{sig}: stopping now, terminating {} worker(s)",
                    self.workers.len()
                );
                self.signal_workers(Signal::SIGTERM);
                self.stop = Some(Stop::Terminating(Instant::now() + KILL_GRACE));
            }
        } else {
            let t = self.cfg.server.shutdown_timeout;
            crate::info!(
                "{sig}: stopping gracefully, {} connection(s) in flight, waiting up to {:?}",
                self.workers.len(),
                t
            );
            self.stop = Some(Stop::Draining(Instant::now() + t));
        }
        if self.notifier.enabled() {
            self.notifier.stopping(&self.status_line());
        }
    }

    fn signal_workers(&self, sig: Signal) {
        for w in self.workers.as_slice() {
            let _ = kill(w.pid, sig);
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        match self.stop {
            Some(Stop::Draining(t)) if now >= t => {
                crate::warn!(
                    "shutdown_timeout reached: terminating {} worker(s)",
                    self.workers.len()
                );
                self.signal_workers(Signal::SIGTERM);
                self.stop = Some(Stop::Terminating(now + KILL_GRACE));
            }
            Some(Stop::Terminating(t)) if now >= t => {
                crate::warn!("killing {} worker(s)", self.workers.len());
                self.signal_workers(Signal::SIGKILL);
                self.stop = Some(Stop::Killed);
            }
            _ => {}
        }
        if let Some(t) = self.next_watchdog {
            if now >= t {
                self.notifier.watchdog();
                self.next_watchdog = self.notifier.watchdog.map(|d| now + d);
            }
        }
        if self.status_dirty && self.notifier.enabled() {
            if self.status_sent.is_none_or(|t| now >= t + STATUS_INTERVAL) {
                self.notifier.status(&self.status_line());
                self.status_sent = Some(now);
                self.status_dirty = false;
            }
        } else if !self.notifier.enabled() {
            self.status_dirty = false;
        }
    }

    /// e.g. "3 active, 10412 served, 0 refused; listening on 0.0.0.0:8080 (http)".
    fn status_line(&self) -> String {
        let mut s = String::with_capacity(128);
        if self.stop.is_some() {
            s.push_str("stopping: ");
        }
        let _ = write!(
            s,
            "{} active, {} served, {} refused",
            self.workers.len(),
            self.served,
            self.refused
        );
        if !self.listeners.is_empty() {
            s.push_str("; listening on ");
            for (i, l) in self.listeners.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{}", l.local);
            }
        }
        if let Some(e) = &self.reload_error {
            let _ = write!(s, "; {e}");
        }
        s
    }

    // -----------------------------------------------------------------------
    // Reloading

    fn reload(&mut self) {
        self.notifier.reloading();
        let source = self
            .cfg_path
            .as_ref()
            .map_or(config::BUILTIN_NAME.to_string(), |p| {
                p.display().to_string()
            });
        crate::info!("SIGHUP: reloading configuration from {source}");
        let result = config::load(self.cfg_path.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|new| self.follow_listeners(&new).map(|()| new));
        match result {
            Ok(new) => {
                if new.server.user != self.cfg.server.user
                    || new.server.group != self.cfg.server.group
                {
                    crate::warn!("[server] user/group changes take effect at the next restart");
                }
                crate::log::configure(new.log.level, new.log.target, self.daemon);
                listen::set_send_timeout(&self.listeners, new.limits.body_timeout);
                if let Err(e) = crate::log::configure_access(&new.log.access) {
                    crate::error!("{e}; keeping the previous access log");
                }
                let max = new.server.max_connections;
                if self.workers.capacity() < max {
                    let mut bigger = SupervisorTable::with_capacity(max);
                    for w in self.workers.as_slice() {
                        bigger.push(*w);
                    }
                    self.workers = bigger;
                }
                self.cfg = new;
                self.reload_error = None;
                crate::info!(
                    "reloaded configuration from {source}: {} listener(s), {} route(s)",
                    self.listeners.len(),
                    self.cfg.routes.len()
                );
            }
            Err(e) => {
                crate::error!("reload failed, keeping the running configuration: {e}");
                self.reload_error = Some(format!("reload failed: {e}"));
            }
        }
        self.status_dirty = true;
        if self.notifier.enabled() {
            self.notifier.ready(&self.status_line());
            self.status_sent = Some(Instant::now());
            self.status_dirty = false;
        }
    }

    /// Make the self-bound listeners match `new`: keep those whose address is
    /// unchanged, bind the added ones, close the removed ones. All or nothing:
    /// if one bind fails, the ones just bound are closed and nothing changes.
    /// Listeners from systemd are kept as they are.
    fn follow_listeners(&mut self, new: &Config) -> Result<(), String> {
        if self.listeners.iter().any(|l| l.inherited) {
            return Ok(());
        }
        let mut added: Vec<Listener> = Vec::new();
        for spec in &new.listen {
            let exists = self
                .listeners
                .iter()
                .any(|l| l.spec.as_ref().is_some_and(|s| s.address == spec.address));
            if !exists {
                match listen::bind(spec) {
                    Ok(l) => added.push(l),
                    Err(e) => {
                        for l in added {
                            l.close();
                        }
                        return Err(e);
                    }
                }
            }
        }
        let old = std::mem::take(&mut self.listeners);
        for mut l in old {
            let spec = l
                .spec
                .as_ref()
                .and_then(|s| new.listen.iter().find(|n| n.address == s.address));
            match spec {
                Some(spec) => {
                    if l.spec.as_ref().is_some_and(|s| s.backlog != spec.backlog) {
                        // listen(2) again on a listening socket updates the backlog.
                        let b = nix::sys::socket::Backlog::new(spec.backlog)
                            .unwrap_or(nix::sys::socket::Backlog::MAXCONN);
                        let _ = nix::sys::socket::listen(&l.fd, b);
                    }
                    l.name = spec.name.clone();
                    l.spec = Some(spec.clone());
                    self.listeners.push(l);
                }
                None => {
                    crate::info!("no longer listening on {l}");
                    l.close();
                }
            }
        }
        for l in added {
            crate::info!("listening on {l}");
            self.listeners.push(l);
        }
        Ok(())
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn exit_meaning(code: i32) -> &'static str {
    match code {
        crate::http::EXIT_SOFTWARE => "internal error",
        crate::http::EXIT_OSERR => "post-fork set-up failed",
        crate::http::EXIT_IOERR => "I/O error on the connection",
        _ => "unknown",
    }
}
