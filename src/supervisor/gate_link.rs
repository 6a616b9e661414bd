//! The gate link: the supervisor's end of everything between it and the
//! gate (the one owner of it). The gate process (started, and started again
//! if it dies), the socket pair between them, the connections on their way
//! to the gate (the outbox, while the link is full; in flight, until the
//! gate says it has them), the tally of what the gate holds, and the
//! `Send`s it has not answered yet.
//!
//! ```text
//!   hand(conn)  -> Adopt+fd, kept in flight until the gate's Adopted note
//!                  (its Lost note: the connection comes back, `Event::Lost`)
//!   send(key)   -> Send: a worker is free for this source
//!   logs(), limits(), stop(), handover()
//!   next_event() <- Ready+fd (Event::Conn), and the notes, one by one
//!   ended()     the gate was reaped: what it had not taken comes back
//! ```
//!
//! Nothing waits between the two processes without an owner: a connection
//! sent to the gate is the supervisor's until the gate says it took it (so
//! it is answered even if the gate cannot install it, or dies first), and
//! the gate sends a complete request only when the supervisor asked for it,
//! which the supervisor then reads at once.

use crate::alloc::SupervisorTable;
use crate::handoff::{self, BodySpec, GateLimits, Kind, Meta, Msg, Note};
use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The gate is started again at most this often.
pub(super) const GATE_RESTART: Duration = Duration::from_secs(1);
/// Connections waiting for room on the link, at most.
const OUTBOX_MAX: usize = 1024;

/// A connection on its way between processes (the gate, a worker, the
/// next image).
pub(super) struct Pending {
    pub conn: OwnedFd,
    pub meta: Meta,
    /// Its source key (`handoff::meta_key`).
    pub key: u128,
    /// The files that travel with it (`Kind::Body`, `Kind::Bodied`: its
    /// request's; `Kind::Tail`: the response's and its log's), and what
    /// they hold.
    pub body: Option<Box<Attached>>,
}

/// Files that travel with a connection (see `handoff::BodySpec`).
pub(super) struct Attached {
    pub file: OwnedFd,
    pub file2: Option<OwnedFd>,
    pub spec: BodySpec,
}

impl Attached {
    /// From what a message brought: the spec and the files it named.
    pub(super) fn of(
        spec: Option<BodySpec>,
        file: Option<OwnedFd>,
        file2: Option<OwnedFd>,
    ) -> Option<Box<Attached>> {
        Some(Box::new(Attached {
            file: file?,
            file2,
            spec: spec?,
        }))
    }
}

impl Pending {
    /// A connection with nothing but itself.
    pub(super) fn plain(conn: OwnedFd, meta: Meta, key: u128) -> Pending {
        Pending {
            conn,
            meta,
            key,
            body: None,
        }
    }

    /// Its descriptors, as a message carries them.
    pub(super) fn fds(&self) -> ([RawFd; 3], usize) {
        let mut fds = [self.conn.as_raw_fd(), -1, -1];
        let mut n = 1;
        if let Some(a) = &self.body {
            fds[1] = a.file.as_raw_fd();
            n = 2;
            if let Some(f) = &a.file2 {
                fds[2] = f.as_raw_fd();
                n = 3;
            }
        }
        (fds, n)
    }

    pub(super) fn spec(&self) -> Option<BodySpec> {
        self.body.as_ref().map(|a| a.spec)
    }
}

/// What came from the gate.
pub(super) enum Event {
    /// A connection: asked for (`answer`: a worker is waiting for it), or
    /// unasked (its PROXY header read; a hand-over).
    Conn { p: Pending, answer: bool },
    /// A request of this source's is complete and waits for a worker.
    Queued(u128),
    /// A queued request stopped waiting (answered 503, or handed over).
    Unqueued(u128),
    /// A `Send` for this source found nothing to send.
    Empty(u128),
    /// A request taken for a `Send` closed before it was sent.
    Dropped(u128),
    /// A connection of this source's closed in the gate.
    Closed { key: u128, proxy_refused: bool },
    /// A connection the gate sent (`answer`: as asked) that could not be
    /// received here (no room for its descriptor): gone.
    Vanished { key: u128, answer: bool },
    /// A connection the gate could not take (or that could not be sent to
    /// it): the supervisor's own copy, still to be answered.
    Lost(Pending),
}

/// Connections the gate holds (or that are on their way to it), by how
/// they were handed over.
#[derive(Default, Clone, Copy)]
pub(super) struct Held {
    pub new: usize,
    pub parked: usize,
    pub closing: usize,
}

impl Held {
    pub(super) fn total(&self) -> usize {
        self.new + self.parked + self.closing
    }

    fn of(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::New | Kind::Proxy | Kind::Proxied | Kind::Body | Kind::Bodied | Kind::Tail => {
                &mut self.new
            }
            Kind::Parked => &mut self.parked,
            Kind::Closing => &mut self.closing,
        }
    }
}

struct GateProc {
    pid: Pid,
    link: OwnedFd,
    /// The link reported end of stream: the gate is going.
    gone: bool,
}

pub(super) struct GateLink {
    proc: Option<GateProc>,
    outbox: VecDeque<Pending>,
    in_flight: VecDeque<Pending>,
    /// Connections that never reached the gate, to be answered.
    lost: VecDeque<Pending>,
    held: Held,
    sends: usize,
    /// The link was full for a `Send` or a message: wait for room.
    blocked: bool,
    restart_at: Option<Instant>,
    started: Option<Instant>,
    /// Room for one message from the gate (in memory workers do not
    /// inherit), and the notes in it still to be read.
    msg: SupervisorTable<u8>,
    notes_at: usize,
    notes_n: usize,
}

impl GateLink {
    pub(super) fn new() -> Option<GateLink> {
        let mut msg = SupervisorTable::try_with_capacity(handoff::MAX_MSG)?;
        for _ in 0..handoff::MAX_MSG {
            msg.push(0);
        }
        Some(GateLink {
            proc: None,
            outbox: VecDeque::new(),
            in_flight: VecDeque::new(),
            lost: VecDeque::new(),
            held: Held::default(),
            sends: 0,
            blocked: false,
            restart_at: None,
            started: None,
            msg,
            notes_at: 0,
            notes_n: 0,
        })
    }

    // -----------------------------------------------------------------------
    // The gate's life

    /// Start the gate (at start-up, and again if it dies). `logs` are the
    /// logs' descriptors, which it keeps. Without a gate, new connections
    /// without a complete head are refused and idle ones are not parked;
    /// serving goes on.
    /// `temp_dir`: where the gate keeps request bodies too large for
    /// memory (it inherits a descriptor of it; later ones come as
    /// `Msg::TempDir`).
    pub(super) fn spawn(
        &mut self,
        limits: GateLimits,
        logs: [RawFd; 2],
        temp_dir: &std::path::Path,
    ) {
        let (ours, theirs) = match crate::sys::seqpacket_pair() {
            Ok(p) => p,
            Err(e) => return self.failed(&format!("socketpair: {e}")),
        };
        let dir = open_dir(temp_dir);
        // SAFETY: single-threaded; the child only closes descriptors, resets
        // signals and runs the gate's loop, leaving through _exit.
        match crate::sys::fork() {
            Ok(ForkResult::Child) => {
                // Everything of the supervisor's goes but the gate's end and
                // the logs (connections the supervisor held too).
                // And the sites' own access logs (`log::site_descriptors`).
                let dir_fd = dir.as_ref().map_or(-1, |d| d.as_raw_fd());
                let mut keep = [-1; 4 + crate::config::MAX_SITE_LOGS];
                keep[..4].copy_from_slice(&[theirs.as_raw_fd(), logs[0], logs[1], dir_fd]);
                crate::log::site_descriptors(&mut keep[4..]);
                crate::sys::close_all_but(&mut keep);
                std::mem::forget(ours); // closed just now
                if crate::signals::set_up_child().is_err() {
                    // SAFETY: _exit is always safe.
                    crate::sys::exit_now(crate::http::EXIT_OSERR);
                }
                crate::gate::run(theirs, limits, dir)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                crate::debug!("gate started: pid {child}");
                // For the status page, whose worker reads its process.
                crate::scoreboard::set(crate::scoreboard::Sup::GatePid, child.as_raw() as u64);
                self.proc = Some(GateProc {
                    pid: child,
                    link: ours,
                    gone: false,
                });
                self.started = Some(Instant::now());
                self.restart_at = None;
                self.flush(); // what waited for this gate
            }
            Err(e) => self.failed(&format!("fork: {e}")),
        }
    }

    fn failed(&mut self, why: &str) {
        crate::error!("cannot start the gate ({why}); trying again in {GATE_RESTART:?}");
        self.restart_at = Some(Instant::now() + GATE_RESTART);
    }

    /// The gate is running and reading.
    pub(super) fn is_up(&self) -> bool {
        self.proc.as_ref().is_some_and(|g| !g.gone)
    }

    /// A gate process exists (running, or ending and not reaped yet).
    pub(super) fn exists(&self) -> bool {
        self.proc.is_some()
    }

    pub(super) fn is_gate(&self, pid: Pid) -> bool {
        self.proc.as_ref().is_some_and(|g| g.pid == pid)
    }

    pub(super) fn pid(&self) -> Option<Pid> {
        self.proc.as_ref().map(|g| g.pid)
    }

    /// When to start it again, after it died or could not start.
    pub(super) fn restart_due(&self) -> Option<Instant> {
        self.restart_at
    }

    /// No restart (stopping).
    pub(super) fn no_restart(&mut self) {
        self.restart_at = None;
    }

    /// Start it again after a pause (it died young).
    pub(super) fn restart_later(&mut self) {
        self.restart_at = Some(Instant::now() + GATE_RESTART);
    }

    /// Whether the gate (ended just now) had started less than
    /// `GATE_RESTART` ago: then it is started again after a pause.
    fn died_young(&self) -> bool {
        self.started.is_some_and(|t| t.elapsed() < GATE_RESTART)
    }

    /// The gate was reaped: every message it left on the link is read
    /// (connections it sent, the notes of what it took), and what it had
    /// not taken comes back: complete requests first (`Conn`), then the
    /// rest (to hold again). Its tallies start from zero.
    pub(super) fn ended(&mut self) -> Ended {
        let mut back = Vec::new();
        let mut complete = Vec::new();
        while let Some(ev) = self.next_event() {
            match ev {
                Event::Conn { p, .. } => complete.push(p),
                Event::Lost(p) => back.push(p),
                _ => {}
            }
        }
        let lost = self
            .held
            .total()
            .saturating_sub(self.in_flight.len() + self.outbox.len());
        back.extend(self.in_flight.drain(..));
        back.extend(self.outbox.drain(..));
        self.proc = None;
        self.held = Held::default();
        self.sends = 0;
        self.blocked = false;
        (self.notes_at, self.notes_n) = (0, 0);
        Ended {
            complete,
            back,
            lost,
            young: self.died_young(),
        }
    }

    // -----------------------------------------------------------------------
    // To the gate

    /// Give a connection to the gate. While the link is full (the gate is
    /// behind, e.g. a flood of new connections), or the next gate is not
    /// started yet, it waits in the outbox and accepting pauses until the
    /// gate has caught up; with no gate coming, or the outbox full too, it
    /// comes back (`Err`) to be refused.
    pub(super) fn hand(&mut self, p: Pending) -> Result<(), Pending> {
        let coming = self.proc.is_some() || self.restart_at.is_some();
        if !coming {
            return Err(p);
        }
        if !self.outbox.is_empty() || !self.is_up() {
            if self.outbox.len() >= OUTBOX_MAX {
                return Err(p);
            }
            *self.held.of(p.meta.kind) += 1;
            self.outbox.push_back(p);
            return Ok(());
        }
        *self.held.of(p.meta.kind) += 1;
        match self.send_conn(&p) {
            Ok(()) => self.in_flight.push_back(p),
            Err(Errno::EAGAIN) => self.outbox.push_back(p),
            Err(e) => {
                crate::debug!("handing a connection to the gate: {e}");
                *self.held.of(p.meta.kind) -= 1;
                return Err(p);
            }
        }
        Ok(())
    }

    fn send_conn(&self, p: &Pending) -> Result<(), Errno> {
        let g = self
            .proc
            .as_ref()
            .filter(|g| !g.gone)
            .ok_or(Errno::ENOTCONN)?;
        let mut msg = [0u8; handoff::CONN_MSG];
        let adopt = Msg::Adopt {
            meta: p.meta,
            body: p.spec(),
        };
        let n = handoff::encode(&adopt, &mut msg);
        let (fds, k) = p.fds();
        crate::sys::send_with_fds(g.link.as_fd(), &msg[..n], &fds[..k])
    }

    /// Tell the gate where request bodies too large for memory go (a
    /// descriptor of `[server] temp_dir`).
    pub(super) fn temp_dir(&mut self, dir: &std::path::Path) {
        let Some(g) = self.proc.as_ref().filter(|g| !g.gone) else {
            return;
        };
        let Some(fd) = open_dir(dir) else { return };
        let mut msg = [0u8; 8];
        let n = handoff::encode(&Msg::TempDir, &mut msg);
        if let Err(e) = crate::sys::send_with_fd(g.link.as_fd(), &msg[..n], Some(fd.as_raw_fd())) {
            crate::error!("cannot send the gate temp_dir: {e}");
        }
    }

    /// Send what waits in the outbox, oldest first, while the gate takes it;
    /// what cannot be sent at all comes back as `Event::Lost`.
    pub(super) fn flush(&mut self) {
        self.blocked = false;
        while let Some(p) = self.outbox.front() {
            match self.send_conn(p) {
                Ok(()) => {
                    let p = self.outbox.pop_front().expect("front");
                    self.in_flight.push_back(p);
                }
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    let p = self.outbox.pop_front().expect("front");
                    *self.held.of(p.meta.kind) -= 1;
                    self.lost.push_back(p);
                }
            }
        }
    }

    /// Ask the gate for the oldest complete request of `key`'s (a worker is
    /// free for it); false if it cannot be asked now.
    pub(super) fn send(&mut self, key: u128) -> bool {
        let sent = self.tell(&Msg::Send(key));
        if sent {
            self.sends += 1;
        }
        sent
    }

    pub(super) fn limits(&mut self, l: GateLimits) {
        self.tell(&Msg::Limits(l));
    }

    pub(super) fn stop(&mut self) {
        self.tell(&Msg::Stop);
    }

    pub(super) fn handover(&mut self) {
        self.tell(&Msg::Handover);
    }

    /// The logs as they are now (after SIGUSR1 or a reload), with the
    /// access log file's descriptor, so that the gate writes where the
    /// workers do.
    pub(super) fn logs(&mut self) {
        let (spec, fd) = crate::log::spec();
        let Some(g) = self.proc.as_ref().filter(|g| !g.gone) else {
            return;
        };
        let mut msg = [0u8; handoff::CONN_MSG];
        let n = handoff::encode(&Msg::Logs(spec), &mut msg);
        if let Err(e) = crate::sys::send_with_fd(g.link.as_fd(), &msg[..n], fd) {
            crate::error!("cannot send the gate the reopened logs: {e}");
        }
        // The sites' own files, one a message (none: one says so).
        let files = crate::log::site_files();
        let count = files.len() as u8; // at most MAX_SITE_LOGS
        for index in 0..files.len().max(1) {
            let site_log = Msg::SiteLog {
                index: index as u8,
                count,
            };
            let n = handoff::encode(&site_log, &mut msg);
            let fd = files.get(index).copied();
            if let Err(e) = crate::sys::send_with_fd(g.link.as_fd(), &msg[..n], fd) {
                crate::error!("cannot send the gate the sites' access logs: {e}");
                break;
            }
        }
    }

    fn tell(&mut self, msg: &Msg) -> bool {
        let Some(g) = self.proc.as_ref().filter(|g| !g.gone) else {
            return false;
        };
        let mut buf = [0u8; handoff::CONN_MSG];
        let n = handoff::encode(msg, &mut buf);
        match crate::sys::send_with_fd(g.link.as_fd(), &buf[..n], None) {
            Ok(()) => true,
            Err(Errno::EAGAIN) => {
                self.blocked = true;
                false
            }
            Err(e) => {
                crate::error!("cannot tell the gate {msg:?}: {e}");
                false
            }
        }
    }

    // -----------------------------------------------------------------------
    // From the gate

    /// The link's descriptor and whether to wait for room on it, for the
    /// supervisor's poll set (`None`: no gate to listen to).
    pub(super) fn poll_fd(&self) -> Option<(RawFd, bool)> {
        let g = self.proc.as_ref().filter(|g| !g.gone)?;
        Some((g.link.as_raw_fd(), !self.outbox.is_empty() || self.blocked))
    }

    /// The next thing the gate said (or a connection that never reached
    /// it), if any; reads the link without waiting.
    pub(super) fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(p) = self.lost.pop_front() {
                return Some(Event::Lost(p));
            }
            if self.notes_at < self.notes_n {
                let i = self.notes_at;
                self.notes_at += 1;
                if let Some(ev) = self.note(i) {
                    return Some(ev);
                }
                continue;
            }
            let g = self.proc.as_mut()?;
            let buf = self.msg.as_mut_slice();
            let (n, [fd, file, file2]) = match crate::sys::recv_with_fds(g.link.as_fd(), buf) {
                Ok((0, _)) => {
                    g.gone = true; // the gate is exiting (reaped soon)
                    return None;
                }
                Ok(r) => r,
                Err(Errno::EAGAIN) => return None,
                Err(e) => {
                    crate::error!("receiving from the gate: {e}");
                    return None;
                }
            };
            match (handoff::decode(&self.msg.as_slice()[..n]), fd) {
                (Some(Msg::Notes { n }), _) => (self.notes_at, self.notes_n) = (0, n),
                (Some(Msg::Ready { meta, answer, body }), Some(conn))
                    if body.is_none() || file.is_some() =>
                {
                    *self.held.of(meta.kind) = self.held.of(meta.kind).saturating_sub(1);
                    if answer {
                        self.sends = self.sends.saturating_sub(1);
                    }
                    let key = handoff::meta_key(&meta);
                    let body = Attached::of(body, file, file2);
                    let p = Pending {
                        conn,
                        meta,
                        key,
                        body,
                    };
                    return Some(Event::Conn { p, answer });
                }
                (Some(Msg::Ready { meta, answer, .. }), _) => {
                    // No room for its descriptor here: it is gone.
                    crate::error!("a connection from the gate (from {}) could not be received (descriptor limit?): lost", meta.peer);
                    *self.held.of(meta.kind) = self.held.of(meta.kind).saturating_sub(1);
                    if answer {
                        self.sends = self.sends.saturating_sub(1);
                    }
                    let key = handoff::meta_key(&meta);
                    return Some(Event::Vanished { key, answer });
                }
                (other, _) => crate::error!("unexpected message from the gate: {other:?}"),
            }
        }
    }

    /// The `i`th note of the message in `msg`, as an event (`None` for one
    /// the link itself settles).
    fn note(&mut self, i: usize) -> Option<Event> {
        let e = handoff::note_at(self.msg.as_slice(), i)?;
        match e.note {
            Note::Adopted => {
                self.in_flight.pop_front(); // the gate has its own copy
                None
            }
            Note::Lost => {
                let p = self.in_flight.pop_front()?;
                *self.held.of(p.meta.kind) -= 1;
                Some(Event::Lost(p))
            }
            Note::Queued => Some(Event::Queued(e.key)),
            Note::ClosedQueued => Some(Event::Unqueued(e.key)),
            Note::Empty => {
                self.sends = self.sends.saturating_sub(1);
                Some(Event::Empty(e.key))
            }
            Note::Dropped => {
                self.sends = self.sends.saturating_sub(1);
                Some(Event::Dropped(e.key))
            }
            Note::TailParked => {
                // Held as a tail, parked now.
                self.held.new = self.held.new.saturating_sub(1);
                self.held.parked += 1;
                crate::scoreboard::add(crate::scoreboard::Sup::Parks, 1);
                None
            }
            Note::Closed | Note::ProxyRefused => {
                let h = self.held.of(e.kind);
                *h = h.saturating_sub(1);
                Some(Event::Closed {
                    key: e.key,
                    proxy_refused: e.note == Note::ProxyRefused,
                })
            }
        }
    }

    // -----------------------------------------------------------------------
    // Counts

    pub(super) fn held(&self) -> Held {
        self.held
    }

    /// `Send`s not answered yet: workers promised to the gate's requests.
    pub(super) fn sends(&self) -> usize {
        self.sends
    }

    /// Connections waiting for room on the link.
    pub(super) fn backed_up(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// What waits in the outbox, for an upgrade in place to carry.
    pub(super) fn take_outbox(&mut self) -> Vec<Pending> {
        let v: Vec<Pending> = self.outbox.drain(..).collect();
        for p in &v {
            *self.held.of(p.meta.kind) -= 1;
        }
        v
    }
}

/// A descriptor of `[server] temp_dir` for the gate (`O_PATH`); `None`
/// (logged) if it cannot be opened: the gate keeps bodies in memory then.
fn open_dir(dir: &std::path::Path) -> Option<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty()) {
        Ok(fd) => Some(fd),
        Err(e) => {
            crate::error!(
                "temp_dir {}: {e}: the gate keeps request bodies in memory",
                dir.display()
            );
            None
        }
    }
}

/// What a gate left when it ended (`GateLink::ended`).
pub(super) struct Ended {
    /// Complete requests it had sent (or had been asked for).
    pub complete: Vec<Pending>,
    /// Connections it had not taken yet (or could not).
    pub back: Vec<Pending>,
    /// Connections it held, lost with it.
    pub lost: usize,
    /// It had started less than `GATE_RESTART` ago.
    pub young: bool,
}
