//! Signals, reaping, stopping and reloading (the gate's life: `gate_link.rs`; the worker table: `workers.rs`).

use super::sources::Place;
use super::{Stop, Supervisor};
use crate::alloc::SupervisorTable;
use crate::config::{self, Config};
use crate::listen::{self, Listener};
use crate::scoreboard::Sup;
use crate::signals;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// After SIGTERM to the workers (stop timeout, SIGQUIT, the stall
/// backstop), time until SIGKILL.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(2);

impl Supervisor {
    // -----------------------------------------------------------------------
    // Signals

    pub(super) fn handle_signals(&mut self) {
        let mut chld = false;
        while let Some(sig) = signals::next(&self.signal_fd) {
            match sig {
                Signal::SIGCHLD => chld = true,
                Signal::SIGTERM | Signal::SIGINT => {
                    let again = self.stop.is_some();
                    self.begin_stop(again, sig.as_str());
                }
                Signal::SIGQUIT => self.begin_stop(true, sig.as_str()),
                Signal::SIGHUP => {
                    if self.stop.is_none() {
                        self.reload();
                    }
                }
                Signal::SIGUSR2 => self.begin_upgrade(),
                Signal::SIGUSR1 => {
                    crate::log::reopen();
                    match crate::log::reopen_access() {
                        Ok(()) => crate::info!("SIGUSR1: log files reopened"),
                        Err(e) => crate::error!("SIGUSR1: {e}"),
                    }
                    self.log_fds = crate::log::descriptors();
                    self.link.logs();
                }
                other => crate::debug!("{other} ignored"),
            }
        }
        // SIGCHLDs merge: one pass reaps every child that has ended.
        if chld {
            self.reap();
        }
    }

    // -----------------------------------------------------------------------
    // Reaping

    fn reap(&mut self) {
        // A worker sends its parked connection before it exits: take those
        // first, so that its end is not counted as the connection's end.
        self.take_parked();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.ended(pid, code, None),
                Ok(WaitStatus::Signaled(pid, sig, core)) => self.ended(pid, 0, Some((sig, core))),
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

    fn ended(&mut self, pid: Pid, code: i32, signal: Option<(Signal, bool)>) {
        if self.is_upgrade_check(pid) {
            return self.check_ended(code, signal.map(|s| s.0));
        }
        if self.link.is_gate(pid) {
            return self.gate_ended(code, signal.map(|s| s.0));
        }
        let Some(w) = self.workers.reaped(pid) else {
            // Not a worker: a stray (see end_strays), whose own orphans have
            // just come back here too; or a daemonize helper.
            self.end_strays();
            return;
        };
        // The access line of a request it died in the middle of (issue 24).
        crate::scoreboard::log_owed(w.slot as usize, signal.is_some() || code != 0);
        self.sources.remove(w.key, Place::Worker);
        if signal.is_some() {
            // Killed before it could end its CGI script's descendants: they
            // came back to the supervisor (a subreaper too).
            self.end_strays();
        }
        self.counters.served += 1;
        self.status_dirty = true;
        let stopping = matches!(self.stop, Some(Stop::Terminating(_)) | Some(Stop::Killed));
        super::workers::log_end(&w, code, signal, stopping);
    }

    /// Children that are neither workers nor the gate: descendants of a
    /// worker that died before it could end them (a CGI script's daemon).
    /// They are killed (with their process groups) and reaped as they end.
    pub(super) fn end_strays(&self) {
        let mut pids = [0 as libc::pid_t; 128];
        let n = crate::sys::children(&mut pids);
        for &p in &pids[..n] {
            let pid = Pid::from_raw(p);
            let ours =
                self.link.is_gate(pid) || self.workers.is_worker(pid) || self.is_upgrade_check(pid);
            if !ours {
                crate::debug!("ending stray process {p}");
                let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// At exit: what is left under the supervisor ends with it. Each one
    /// that ends may hand its own orphans back here: kill and reap until none
    /// is left (two seconds at most).
    pub(super) fn end_all_strays(&self) {
        let until = Instant::now() + KILL_GRACE;
        let mut pids = [0 as libc::pid_t; 1];
        loop {
            self.end_strays();
            while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                if s == WaitStatus::StillAlive {
                    break;
                }
            }
            if crate::sys::children(&mut pids) == 0 || Instant::now() >= until {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // -----------------------------------------------------------------------
    // Stopping

    /// Stop, gracefully or at once; `why` (a signal's name, "idle") heads
    /// the log line.
    pub(super) fn begin_stop(&mut self, immediate: bool, why: &str) {
        self.abandon_upgrade();
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
            self.link.no_restart();
            self.link.stop();
        }
        if immediate {
            if !matches!(self.stop, Some(Stop::Terminating(_)) | Some(Stop::Killed)) {
                crate::info!(
                    "{why}: stopping now, terminating {} worker(s)",
                    self.workers.len()
                );
                self.signal_all(Signal::SIGTERM);
                self.stop = Some(Stop::Terminating(Instant::now() + KILL_GRACE));
            }
        } else {
            let t = self.cfg.server.shutdown_timeout;
            crate::info!(
                "{why}: stopping gracefully, {} request(s) in flight, {} connection(s) waiting, for up to {:?}",
                self.workers.len(),
                self.link.held().total(),
                t
            );
            self.stop = Some(Stop::Draining(Instant::now() + t));
        }
        if self.notifier.enabled() {
            self.notifier.stopping(&self.status_line());
        }
    }

    /// Workers and the gate.
    fn signal_all(&self, sig: Signal) {
        self.workers.signal_all(sig);
        if let Some(pid) = self.link.pid() {
            let _ = kill(pid, sig);
        }
    }

    pub(super) fn stop_timers(&mut self, now: Instant) {
        match self.stop {
            Some(Stop::Draining(t)) if now >= t => {
                crate::warn!(
                    "shutdown_timeout reached: terminating {} worker(s)",
                    self.workers.len()
                );
                self.signal_all(Signal::SIGTERM);
                self.stop = Some(Stop::Terminating(now + KILL_GRACE));
            }
            Some(Stop::Terminating(t)) if now >= t => {
                crate::warn!("killing {} worker(s)", self.workers.len());
                self.signal_all(Signal::SIGKILL);
                self.stop = Some(Stop::Killed);
            }
            _ => {}
        }
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
        // Everything that can fail comes before anything changes: the new
        // configuration, the memory its tables need, then the listeners.
        let result = config::load(self.cfg_path.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|new| self.tables_for(&new).map(|t| (new, t)))
            .and_then(|(new, t)| crate::sandbox::prepare(&new).map(|s| (new, t, s)))
            .and_then(|(new, t, s)| self.follow_listeners(&new).map(|()| (new, t, s)));
        match result {
            Ok((new, tables, sandbox)) => {
                for m in &sandbox.missing {
                    crate::warn!("sandbox: {} does not exist: it grants nothing", m.display());
                }
                if let Some(changed) = crate::sandbox::install(sandbox) {
                    crate::info!("{changed}");
                }
                // The sandbox was off until now: from here on it is on.
                if let Err(e) = crate::sandbox::attach_shared() {
                    crate::error!("cannot attach the seccomp filter: {e}");
                }
                crate::scoreboard::add(Sup::Reloads, 1);
                self.apply(new, tables, &source)
            }
            Err(e) => {
                crate::scoreboard::add(Sup::ReloadsFailed, 1);
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

    /// The larger tables a new configuration needs (`None`: the current
    /// ones will do); an error if the memory cannot be had, which refuses the
    /// reload.
    fn tables_for(&self, new: &Config) -> Result<Tables, String> {
        let nomem = |what: &str| format!("cannot allocate the {what} table: out of memory");
        let workers = self.workers.grown_for(new.server.max_connections)?;
        let peek = match self.peek.capacity() < new.limits.max_header_bytes {
            true => Some(
                SupervisorTable::try_with_capacity(new.limits.max_header_bytes)
                    .ok_or_else(|| nomem("peek"))?,
            ),
            false => None,
        };
        Ok(Tables { workers, peek })
    }

    /// Take a validated configuration into use.
    fn apply(&mut self, mut new: Config, tables: Tables, source: &str) {
        crate::scoreboard::label_sites(&mut new);
        if new.server.user != self.cfg.server.user || new.server.group != self.cfg.server.group {
            crate::warn!("[server] user/group changes take effect at the next restart");
        }
        crate::log::configure(new.log.level, new.log.target, self.daemon);
        listen::tune(&mut self.listeners, &new.limits);
        if let Err(e) = crate::log::configure_access(&new.log) {
            crate::error!("{e}; keeping the previous access log");
        }
        self.log_fds = crate::log::descriptors();
        self.workers.grow(tables.workers);
        if let Some(p) = tables.peek {
            self.peek = p;
        }
        self.max_pending = pending_limit(&new);
        self.pending_per_source = new.pending_per_source(self.max_pending);
        for w in &new.warnings {
            crate::warn!("{w}");
        }
        self.cfg = new;
        self.reload_error = None;
        let limits = self.gate_limits();
        self.link.limits(limits);
        self.link.logs();
        self.link.temp_dir(&self.cfg.server.temp_dir);
        crate::info!(
            "reloaded configuration from {source}: {} listener(s), {} route(s)",
            self.listeners.len(),
            self.cfg.routes.len()
        );
    }

    /// Make the self-bound listeners match `new`: keep those whose address is
    /// unchanged, bind the added ones, close the removed ones. All or nothing:
    /// if one bind fails, the ones just bound are closed and nothing changes.
    /// Listeners from systemd are kept as they are.
    pub(super) fn follow_listeners(&mut self, new: &Config) -> Result<(), String> {
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

/// Tables a reload has allocated before it changed anything.
struct Tables {
    workers: super::workers::Grown,
    peek: Option<SupervisorTable<u8>>,
}

/// `[server] max_pending` under this process's descriptor limit (which the
/// gate inherits), with a warning when the configured value does not fit.
pub(crate) fn pending_limit(cfg: &Config) -> usize {
    let nofile = crate::sys::nofile().0;
    let (n, lowered) = cfg.max_pending(nofile);
    if lowered {
        crate::warn!(
            "[server] max_pending = {} does not fit under the descriptor limit ({nofile}): using {n}",
            cfg.server.max_pending.unwrap_or(0)
        );
    }
    n
}
