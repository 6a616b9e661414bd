//! The supervisor: accept, look, fork, reap, cap, stop, reload. One thread,
//! one loop, which reads like a story: events in, calls to the owner of
//! each job, no field poked from afar.
//!
//! ```text
//!   poll([signalfd, park channel, gate link, listeners?])
//!     park channel  -> take_parked(): a worker hands back an idle keep-alive
//!                      connection; it goes to the gate
//!     gate link     -> gate_events(): the gate's notes (into the per-source
//!                      ledger) and the requests it was asked for (forked)
//!     signalfd      -> SIGCHLD: reap()   SIGTERM/SIGINT: begin_stop(graceful)
//!                      SIGQUIT: begin_stop(immediate)   SIGHUP: reload()
//!                      SIGUSR1: reopen logs (and the gate's)
//!                      SIGUSR2: begin_upgrade() (upgrade in place, see `upgrade`)
//!     dispatch()    -> free workers to waiting requests, the sources in turn
//!     listener      -> accept_burst(): accept4, [proxy_from, PROXY header],
//!                      one MSG_PEEK: a complete head whose source may have
//!                      a free worker forks at once; anything else waits in
//!                      the gate (or is refused: its source's share is full)
//!     timers        -> STATUS (at most 1/s), WATCHDOG=1, accept back-off,
//!                      stop stages, restarting the gate, the stall watch
//! ```
//!
//! The owners, a file each: the gate link (`gate_link.rs`: the gate process,
//! the socket pair, connections on their way, the gate's tallies), the
//! per-source ledger and fair admission's policy (`sources.rs`), moving
//! connections (`conns.rs`), the gate's reports and the dispatch of workers
//! (`dispatch.rs`), signals, reaping, stopping and reloading
//! (`lifecycle.rs`), the upgrade (`upgrade.rs`), STATUS and the stall watch
//! (`watch.rs`), idle exit (`idle.rs`).
//!
//! A connection costs a process only while it has a request in flight: until
//! its head is complete, while it waits for a worker, and while it is idle
//! between requests, it waits in the gate (`crate::gate`), a helper process
//! that holds it for a descriptor and a few bytes. Workers serve; the gate
//! waits; the supervisor only moves connections between them and keeps
//! count.
//!
//! Invariants kept here:
//! 1. Signals are read from the signalfd in this loop; there are no handlers.
//! 5. READY=1 is sent by [`Supervisor::run`] only once every listener is live
//!    (they were all bound or inherited before it was built); a failed reload
//!    keeps the running configuration and listeners and says so in STATUS.
//! 6. Every child is reaped; an abnormal end (signal, non-zero code) is logged
//!    with pid, peer, age and cause.
//! 7. Every fork copies this process, so the loop allocates nothing per
//!    connection and touches little: the worker table, the poll set, the
//!    per-source ledger and the peek buffer are in memory the workers do not
//!    inherit (`MADV_DONTFORK`, see `alloc::SupervisorTable`), waiting
//!    connections live in the gate (not in this descriptor table, which every
//!    fork copies), and nothing is logged per connection (only failures, at
//!    most once per burst or second). It never blocks on a client: every
//!    socket call here is non-blocking, and it reads no request, it only
//!    looks (`MSG_PEEK`) for the end of one (`gate::head`). The one thing
//!    it parses and reads off a socket: on a `proxy_protocol` listener, a
//!    PROXY header that has wholly arrived (`lbaws::proto::proxy`: fixed,
//!    at most 4 KiB, into the peek buffer), so that admission counts the
//!    client it names (`conns::proxy_header`).
//! 8. Every state of a connection has a deadline: in the gate (its table),
//!    in a worker (`http::worker`), and between the two processes: a
//!    connection sent to the gate stays the supervisor's until the gate
//!    says it took it, and the gate sends a waiting request only when the
//!    supervisor asked for it (`gate_link`).
//! 9. Every refusal of a connection that sent a request is answered (503,
//!    `Retry-After`, `Connection: close`, written without blocking), then
//!    closed gracefully: what has arrived is read first, so that the close
//!    is not a reset (`conns::refuse`; the gate's own in `gate::answer`).
//!
//! Admission (`sources.rs` has the rules): at `max_connections` live
//! workers, complete requests wait in the gate, and free workers go to the
//! waiting sources in turn; the last `worker_reserve` free workers go only
//! to sources that hold fewer than that many; a source may have at most
//! `max_pending_per_source` connections waiting in the gate; a request that
//! waits `queue_timeout` for a worker gets its 503. At `max_pending` the
//! gate makes room by closing the cheapest connection (never a complete
//! request). While requests wait, workers hand their keep-alive connections
//! back after each response, so that connections take turns. Accept errors
//! (`EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`) pause accepting briefly (logged
//! once per burst); a failed fork answers that connection with a 503.

mod conns;
mod dispatch;
mod gate_link;
mod idle;
mod lifecycle;
mod sources;
pub mod upgrade;
mod watch;
mod workers;

pub use upgrade::Image;

use crate::alloc::SupervisorTable;
use crate::config::Config;
use crate::listen::{Listener, Peer};
use crate::log::flood::Flood;
use crate::notify::Notifier;
use nix::errno::Errno;
use nix::sys::signalfd::SignalFd;
use sources::Sources;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// STATUS= at most this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

enum Stop {
    /// Not accepting; waiting for workers (and the gate) to finish, until the deadline.
    Draining(Instant),
    /// Workers were sent SIGTERM; SIGKILL at the deadline.
    Terminating(Instant),
    /// Workers were sent SIGKILL; reaping the last of them.
    Killed,
}

/// Why the supervisor refused a connection (the gate's own refusals are
/// counted by the gate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// Its source held its share of the gate (`max_pending_per_source`).
    SourceShare,
    /// The gate could not take it (down, its link full, no room).
    GateFull,
}

/// What the supervisor counts for STATUS and the stop log line (the
/// refusals are counted in the scoreboard, where the gate adds its own).
#[derive(Default)]
struct Counters {
    /// Workers that ended.
    served: u64,
    /// Connections handed back by workers.
    parked: u64,
    /// Closed on a `proxy_protocol` listener: from outside `proxy_from`, or
    /// without a valid PROXY header within `header_timeout`. Not carried
    /// across an upgrade in place (the status page's count, kept in the
    /// scoreboard, is).
    proxy_refused: u64,
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
    /// Workers send idle connections back on `park_tx` (which they inherit);
    /// the supervisor reads them from `park_rx`.
    park_rx: OwnedFd,
    park_tx: OwnedFd,
    /// Everything between the supervisor and the gate (`gate_link`).
    link: gate_link::GateLink,
    notifier: Notifier,
    /// The worker table (`workers`).
    workers: workers::Workers,
    /// In memory the workers do not inherit (see `alloc::SupervisorTable`).
    pollfds: SupervisorTable<libc::pollfd>,
    peek: SupervisorTable<u8>,
    /// Access-log lines lost so far, and when that was last logged.
    lost_lines: u64,
    lost_logged: Option<Instant>,
    /// The per-source ledger, and admission's policy (`sources`).
    sources: Sources,
    /// The logs' descriptors, which a forked child keeps (`log::descriptors`,
    /// read again whenever the logs change).
    log_fds: [RawFd; 2],
    /// `[server] max_pending`, resolved against `RLIMIT_NOFILE`, and each
    /// source's share of it.
    max_pending: usize,
    pending_per_source: usize,
    counters: Counters,
    accept_paused_until: Option<Instant>,
    accept_error_logged: bool,
    /// Failures logged at most once a second (see `log::flood`).
    fork_failures: Flood<Errno>,
    refusals: Flood<(Refused, Peer)>,
    /// Connections refused on a `proxy_protocol` listener: the balancer's
    /// address (when known here) and why.
    proxy_refusals: Flood<(Option<Peer>, &'static str)>,
    stop: Option<Stop>,
    reload_error: Option<String>,
    /// What this process was started as (an upgrade runs it again).
    image: Image,
    upgrade: Option<upgrade::Upgrade>,
    /// Connections collected for the next image while the gate hands back.
    carried: Vec<gate_link::Pending>,
    upgrade_error: Option<String>,
    /// Since when nothing is under way (idle exit, see `idle.rs`).
    idle_since: Option<Instant>,
    status_dirty: bool,
    status_sent: Option<Instant>,
    next_watchdog: Option<Instant>,
}

/// Slots of the poll set in this loop iteration (`None`: not polled).
struct Slots {
    park: usize,
    link: Option<usize>,
    /// Index of the first listener, if accepting.
    listeners: Option<usize>,
}

/// The supervisor's ends of what workers inherit: the stop pipe and the
/// park channel (made at start, or carried over by an upgrade in place).
struct Channels {
    stop_reader: OwnedFd,
    stop_writer: Option<OwnedFd>,
    park_rx: OwnedFd,
    park_tx: OwnedFd,
}

impl Supervisor {
    pub fn new(
        cfg: Config,
        cfg_path: Option<PathBuf>,
        daemon: bool,
        io: (Vec<Listener>, SignalFd, Notifier),
        image: Image,
    ) -> Result<Supervisor, Errno> {
        let (stop_reader, stop_writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (park_rx, park_tx) = crate::sys::seqpacket_pair()?;
        if !crate::scoreboard::create(crate::config::MAX_WORKERS) {
            return Err(Errno::ENOMEM);
        }
        crate::scoreboard::started();
        let channels = Channels {
            stop_reader,
            stop_writer: Some(stop_writer),
            park_rx,
            park_tx,
        };
        let mut sup = Supervisor::build(cfg, cfg_path, daemon, io, image, channels, 0)?;
        sup.spawn_gate();
        Ok(sup)
    }

    fn build(
        mut cfg: Config,
        cfg_path: Option<PathBuf>,
        daemon: bool,
        (listeners, signal_fd, notifier): (Vec<Listener>, SignalFd, Notifier),
        image: Image,
        channels: Channels,
        min_workers: usize,
    ) -> Result<Supervisor, Errno> {
        crate::scoreboard::label_sites(&mut cfg);
        let max_pending = lifecycle::pending_limit(&cfg);
        // Descendants of workers that die before ending them (a CGI
        // script's daemon) come back here rather than to init.
        crate::sys::become_subreaper();
        let table_fail = Errno::ENOMEM;
        let peek =
            SupervisorTable::try_with_capacity(cfg.limits.max_header_bytes).ok_or(table_fail)?;
        // Room for every listener the configuration may have (it allows
        // MAX_LISTENERS), or systemd passed: the poll set never grows later.
        let poll_room = listeners.len().max(crate::config::MAX_LISTENERS) + 4;
        let max_workers = cfg.server.max_connections.max(min_workers);
        Ok(Supervisor {
            stop_reader: channels.stop_reader,
            stop_writer: channels.stop_writer,
            park_rx: channels.park_rx,
            park_tx: channels.park_tx,
            link: gate_link::GateLink::new().ok_or(table_fail)?,
            pollfds: SupervisorTable::try_with_capacity(poll_room).ok_or(table_fail)?,
            workers: workers::Workers::new(max_workers).ok_or(table_fail)?,
            peek,
            lost_lines: 0,
            lost_logged: None,
            sources: Sources::new().ok_or(table_fail)?,
            log_fds: crate::log::descriptors(),
            max_pending,
            pending_per_source: cfg.pending_per_source(max_pending),
            cfg,
            cfg_path,
            daemon,
            listeners,
            signal_fd,
            notifier,
            counters: Counters::default(),
            accept_paused_until: None,
            accept_error_logged: false,
            fork_failures: Flood::new(),
            refusals: Flood::new(),
            proxy_refusals: Flood::new(),
            stop: None,
            reload_error: None,
            image,
            upgrade: None,
            carried: Vec::new(),
            upgrade_error: None,
            idle_since: None,
            status_dirty: false,
            status_sent: None,
            next_watchdog: None,
        })
    }

    /// Serve until stopped; returns the process exit code.
    pub fn run(mut self) -> i32 {
        for l in &self.listeners {
            crate::info!("listening on {l}");
        }
        for w in &self.cfg.warnings {
            crate::warn!("{w}");
        }
        crate::info!(
            "ready: pid {}, {} listener(s), max_connections {} (worker_reserve {}), max_pending {} (max_pending_per_source {})",
            std::process::id(),
            self.listeners.len(),
            self.cfg.server.max_connections,
            self.cfg.server.worker_reserve,
            self.max_pending,
            self.pending_per_source
        );
        if let Some(after) = self.cfg.server.exit_idle_after {
            match self.idle_exit_applies() {
                true => crate::info!("exits after {after:?} idle (sockets from systemd)"),
                false => crate::warn!(
                    "exit_idle_after ignored: the sockets are not all from systemd (nothing would start lbaws again)"
                ),
            }
        }
        if self.notifier.enabled() {
            self.notifier.ready(&self.status_line());
            self.status_sent = Some(Instant::now());
        }
        self.next_watchdog = self.notifier.watchdog.map(|d| Instant::now() + d);

        loop {
            if self.stop.is_some() && self.workers.is_empty() && !self.link.exists() {
                break;
            }
            let slots = self.build_poll_set();
            let timeout = self.poll_timeout();
            match crate::sys::poll(self.pollfds.as_mut_slice(), timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::error!("poll: {e}");
                    continue;
                }
            }
            let ready = |s: Option<usize>, p: &SupervisorTable<libc::pollfd>| {
                s.is_some_and(|i| p.as_slice()[i].revents != 0)
            };
            if ready(Some(slots.park), &self.pollfds) {
                self.take_parked();
            }
            if ready(slots.link, &self.pollfds) {
                self.link.flush();
                self.gate_events();
            }
            if self.pollfds.as_slice()[0].revents != 0 {
                self.handle_signals();
            }
            self.dispatch();
            if let Some(first) = slots.listeners {
                if self.stop.is_none() {
                    for i in 0..self.listeners.len() {
                        match self.pollfds.as_slice().get(first + i) {
                            Some(p) if p.revents != 0 => self.accept_burst(i),
                            _ => {}
                        }
                    }
                }
            }
            self.timers();
        }
        // A script's descendant orphaned by an immediate stop came back to
        // the supervisor: it does not outlive lbaws.
        self.end_all_strays();
        let c = &self.counters;
        crate::info!(
            "stopped: {} served, {} refused, {} parked, {} refused for their PROXY header",
            c.served,
            watch::refused_total(),
            c.parked,
            c.proxy_refused
        );
        for l in self.listeners.drain(..) {
            l.close();
        }
        0
    }

    fn build_poll_set(&mut self) -> Slots {
        self.pollfds.clear();
        self.pollfds.push(pollfd(self.signal_fd.as_raw_fd()));
        let park = self.pollfds.len();
        self.pollfds.push(pollfd(self.park_rx.as_raw_fd()));
        let mut slots = Slots {
            park,
            link: None,
            listeners: None,
        };
        if let Some((fd, want_out)) = self.link.poll_fd() {
            slots.link = Some(self.pollfds.len());
            let mut p = pollfd(fd);
            if want_out {
                p.events |= libc::POLLOUT;
            }
            self.pollfds.push(p);
        }
        if self.accepting() {
            slots.listeners = Some(self.pollfds.len());
            for l in &self.listeners {
                self.pollfds.push(pollfd(l.raw()));
            }
        }
        slots
    }

    /// New connections are taken while not stopping, not backing off, and
    /// the gate keeps up (nothing waits for it in the outbox). There is no
    /// cap here: a connection that cannot have a worker yet waits in the
    /// gate, where the deadlines and its source's share hold.
    fn accepting(&mut self) -> bool {
        if self.stop.is_some() || self.link.backed_up() || self.handing_over() {
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
        due(self.link.restart_due());
        due(self.workers.check_due());
        due(self.lost_report_due());
        due(self.upgrade_deadline());
        due(self.idle_deadline());
        due(self.fork_failures.due());
        due(self.refusals.due());
        due(self.proxy_refusals.due());
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

    fn timers(&mut self) {
        let now = Instant::now();
        self.publish();
        self.stop_timers(now);
        self.gate_timer(now);
        self.log_floods(now);
        self.upgrade_timers(now);
        self.idle_timer(now);
        self.workers.watch(now, self.cfg.stall_backstop());
        self.report_lost_lines(now);
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
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
