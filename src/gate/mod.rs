//! The gate: where a connection waits while it has no work for a process,
//! at the cost of a descriptor and a few dozen bytes instead of a process.
//!
//! The gate is one long-lived helper process, forked by the supervisor at
//! start (and again if it ever dies). It holds
//! - new connections whose first request head has not fully arrived,
//! - parked connections, handed back by a worker while idle between requests,
//! - complete requests waiting for a worker (the supervisor is at
//!   `max_connections`, or keeps its last workers for other sources),
//! - connections answered with 408/503, while they close gracefully,
//!
//! and for each it waits, with `epoll` (edge-triggered: a wake-up per
//! arrival, whatever is already buffered), until its head is complete
//! (`head::complete`, looking with `MSG_PEEK` so the bytes stay on the socket
//! for the worker). A complete request joins its source's queue
//! (`queue.rs`) and the supervisor is told (`Queued`); when a worker is free
//! for that source, the supervisor asks for it (`Send`), and only then does
//! it leave the gate. Which source goes next is the supervisor's decision
//! (`supervisor::sources`, which also counts the workers); the order within
//! a source is the gate's: oldest first.
//!
//! Why a process of its own: every descriptor a process holds is copied by
//! each `fork` and released by each exit (measured on this project's
//! machines: about +0.1 ms per fork for every 1,000 descriptors). Kept out of
//! the supervisor, ten thousand waiting connections cost the fork of a
//! worker nothing.
//!
//! Deadlines (invariant 8 holds here too: every state has one, counted from
//! when the connection entered it, `Meta::since_ms`, even if it spent part
//! of it on its way here):
//!
//! | state | deadline | then |
//! |---|---|---|
//! | new, nothing received | `header_timeout` from accept | close quietly |
//! | PROXY header not complete (`Kind::Proxy`) | `header_timeout` from accept | close, counted as refused |
//! | new or parked, part of a head received | `header_timeout` from accept (new) or from the first byte (parked) | 408, close gracefully |
//! | parked, idle | `keepalive_timeout` less `park_after`, from parking | close quietly |
//! | complete, waiting for a worker (`Queued`, `Sending`) | `queue_timeout` from completion | 503, close gracefully |
//! | closing gracefully (`Lingering`) | 2 s | close |
//!
//! At `max_pending` the cheapest connection makes room (`room.rs`): one
//! answered already, then one that sent nothing, then the oldest idle
//! parked one, then the oldest with half a head (408). A complete request
//! is never closed to make room: when nothing else is left, the newcomer is
//! refused instead (503 if it had sent anything). Every refusal and eviction
//! is counted on the status page and logged at most once a second.
//!
//! The gate handles no signal (it has the default dispositions: the
//! supervisor ends it with SIGTERM when it stops at once) and dies with the
//! supervisor (`PR_SET_PDEATHSIG`). It follows the logs through the
//! supervisor (`Msg::Logs`: after SIGUSR1 and a reload it writes to the new
//! files). For an upgrade in place it hands every connection back to the
//! supervisor and exits (`Msg::Handover`), so that the new image runs a gate
//! of its own version. It parses nothing but a PROXY header that arrived in
//! pieces (`look.rs`: read off the socket, its source made the peer, then
//! the connection goes back as `Kind::Proxied` for the supervisor to admit
//! under the client's address), and answers nothing but 408/503 (each with
//! its access log line, request `"-"`; without a body when the bytes begin a
//! HEAD request, the one other look it takes).

mod answer;
mod body;
pub mod head;
mod link;
mod look;
mod queue;
mod room;
mod tail;

use crate::handoff::{self, BodySpec, GateLimits, Kind, Meta, Note};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long a connection answered with 408/503 is read from (and its bytes
/// dropped) before it is closed, so its answer is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);
/// At most this much is read from a lingering connection before closing it.
const LINGER_BYTES: usize = 256 << 10;

/// The gate's process name, as `ps` and `top` show it.
pub const GATE_NAME: &std::ffi::CStr = c"lbaws-gate";

/// The epoll token of the link to the supervisor.
const LINK: u64 = u64::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Its head is not complete yet (parked: its next request has not
    /// begun, or not ended).
    Waiting,
    /// Its head is complete (read by a worker); its body is coming
    /// (`body.rs`).
    Body,
    /// Complete: waits in its source's queue for a worker.
    Queued,
    /// Taken off its queue for a `Send`: on its way to the supervisor.
    Sending,
    /// On its way back to the supervisor unasked (its PROXY header read, or
    /// a hand-over).
    Returning,
    /// Answered (408/503) and half-closed: reading what still comes.
    Lingering,
    /// The rest of a response is being sent from here (`tail.rs`).
    Tail,
}

struct Held {
    fd: OwnedFd,
    meta: Meta,
    key: u128,
    state: State,
    /// Bytes of the head examined so far (`head::complete`'s `from`).
    seen: usize,
    /// Bytes dropped while lingering.
    drained: usize,
    deadline: Instant,
    /// A request whose body the gate receives, or has received.
    req: Option<body::Req>,
    /// A response the gate finishes.
    tail: Option<Box<tail::Tail>>,
}

/// The gate's tables. Slots are reused; a generation number in each epoll
/// event, timer and queue entry tells a live connection from an earlier
/// occupant of its slot.
struct Gate {
    epoll: Epoll,
    link: OwnedFd,
    limits: GateLimits,
    slots: Vec<Option<Held>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    queues: queue::Queues,
    room: room::Room,
    out: link::Outgoing,
    refusals: room::Refusals,
    /// Where request bodies too large for memory go (`Msg::TempDir`).
    temp_dir: Option<std::rc::Rc<OwnedFd>>,
    stopping: bool,
    /// An upgrade in place: everything goes back to the supervisor.
    handing_over: bool,
    peek: Vec<MaybeUninit<u8>>,
}

/// Run the gate in a freshly forked child; never returns.
pub fn run(link: OwnedFd, limits: GateLimits, temp_dir: Option<OwnedFd>) -> ! {
    crate::sys::die_with_parent(libc::SIGKILL);
    crate::sys::set_name(GATE_NAME);
    let code = match Gate::new(link, limits) {
        Ok(mut g) => {
            g.temp_dir = temp_dir.map(std::rc::Rc::new);
            g.serve();
            0
        }
        Err(e) => {
            crate::error!("gate: cannot start: {e}");
            1
        }
    };
    // SAFETY: _exit is always safe; nothing of the supervisor's may run here.
    crate::sys::exit_now(code)
}

impl Gate {
    fn new(link: OwnedFd, limits: GateLimits) -> Result<Gate, Errno> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&link, EpollEvent::new(EpollFlags::EPOLLIN, LINK))?;
        Ok(Gate {
            epoll,
            link,
            limits,
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            live: 0,
            timers: BinaryHeap::new(),
            queues: queue::Queues::default(),
            room: room::Room::default(),
            out: link::Outgoing::default(),
            refusals: room::Refusals::default(),
            temp_dir: None,
            stopping: false,
            handing_over: false,
            peek: vec![MaybeUninit::uninit(); peek_room(&limits)],
        })
    }

    fn serve(&mut self) {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            if self.stopping && self.live == 0 && self.out.is_empty() {
                return;
            }
            let timeout = self.next_deadline().map_or(EpollTimeout::NONE, |t| {
                let ms = t
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000)
                    .min(i32::MAX as u128) as i32;
                EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::NONE)
            });
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::error!("gate: epoll_wait: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    LINK => {
                        if ev.events().contains(EpollFlags::EPOLLIN) && !self.read_supervisor() {
                            return; // the supervisor is gone
                        }
                    }
                    token => self.on_event(token, ev.events()),
                }
            }
            let now = Instant::now();
            self.expire(now);
            self.refusals.log(now);
            self.flush();
        }
    }

    // -----------------------------------------------------------------------
    // The table of connections

    /// Take a connection (adopted, with its descriptor, and its request's
    /// file for `Kind::Body` and `Kind::Bodied`).
    fn hold(
        &mut self,
        fd: OwnedFd,
        meta: Meta,
        file: Option<(OwnedFd, BodySpec)>,
        file2: Option<OwnedFd>,
    ) {
        let key = handoff::meta_key(&meta);
        if self.stopping && meta.kind != Kind::Closing {
            drop(fd);
            return self.out.note(key, meta.kind, Note::Closed);
        }
        if self.live >= self.limits.max_pending && !self.make_room() {
            return self.refuse_newcomer(fd, meta);
        }
        let since = instant_of(meta.since_ms);
        let (state, deadline) = match meta.kind {
            Kind::New | Kind::Proxy | Kind::Proxied => {
                (State::Waiting, since + self.limits.header_timeout)
            }
            Kind::Parked => (State::Waiting, since + self.limits.idle_timeout),
            Kind::Closing => (State::Lingering, Instant::now() + LINGER),
            // Set up below.
            Kind::Body | Kind::Bodied | Kind::Tail => {
                (State::Waiting, since + self.limits.body_timeout)
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let gen = self.gens[slot as usize];
        let token = (gen as u64) << 32 | slot as u64;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if let Err(e) = self.epoll.add(&fd, EpollEvent::new(flags, token)) {
            crate::error!("gate: epoll_ctl: {e}");
            self.free.push(slot);
            return self.out.note(key, meta.kind, Note::Closed);
        }
        self.slots[slot as usize] = Some(Held {
            fd,
            meta,
            key,
            state,
            seen: 0,
            drained: 0,
            deadline,
            req: None,
            tail: None,
        });
        self.live += 1;
        self.timers.push(Reverse((deadline, slot, gen)));
        match (meta.kind, file) {
            (Kind::Body, Some((file, spec))) => self.start_body(slot, file, spec),
            (Kind::Bodied, Some((file, spec))) => {
                // Whole already (carried over, or back from a gate that
                // ended): it waits for a worker again.
                self.held_mut(slot).req = Some(body::Req::Complete { file, spec });
                self.queue(slot);
            }
            (Kind::Tail, Some((file, spec))) => match file2 {
                Some(log) => self.start_tail(slot, file, log, spec),
                None => self.close(slot),
            },
            (Kind::Body | Kind::Bodied, None) => self.answer(slot, 500),
            (Kind::Tail, None) => self.close(slot),
            // Edge-triggered: what arrived before it was watched gives no event.
            _ => match state {
                State::Waiting => self.look(slot, EpollFlags::empty()),
                State::Lingering => self.drain(slot),
                _ => {}
            },
        }
        if self.is_live(slot, gen) {
            self.room.entered(slot, gen, self.class_of(slot));
        }
    }

    fn is_live(&self, slot: u32, gen: u32) -> bool {
        self.gens.get(slot as usize) == Some(&gen)
            && self.slots.get(slot as usize).is_some_and(Option::is_some)
    }

    fn held(&self, slot: u32) -> &Held {
        self.slots[slot as usize].as_ref().expect("live")
    }

    fn held_mut(&mut self, slot: u32) -> &mut Held {
        self.slots[slot as usize].as_mut().expect("live")
    }

    /// A new deadline for a connection (the heap keeps the old entry until
    /// its time; `expire` skips it).
    fn set_deadline(&mut self, slot: u32, deadline: Instant) {
        self.held_mut(slot).deadline = deadline;
        let gen = self.gens[slot as usize];
        self.timers.push(Reverse((deadline, slot, gen)));
    }

    fn on_event(&mut self, token: u64, ev: EpollFlags) {
        let (slot, gen) = (token as u32, (token >> 32) as u32);
        if !self.is_live(slot, gen) {
            return;
        }
        match self.held(slot).state {
            State::Waiting => self.look(slot, ev),
            State::Body => self.receive(slot, ev),
            State::Tail => self.push(slot),
            State::Lingering => self.drain(slot),
            // Complete already: the peer leaving shows when its worker reads.
            State::Queued | State::Sending | State::Returning => {}
        }
    }

    /// Deadlines that have passed (see the table in the module docs).
    fn expire(&mut self, now: Instant) {
        // Entries of connections gone or since given a later deadline stay
        // in the heap until their time; when they dwarf the live ones,
        // rebuild it from the connections held.
        if self.timers.len() > 4 * self.live + 1024 {
            self.timers = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let h = h.as_ref()?;
                    Some(Reverse((h.deadline, i as u32, self.gens[i])))
                })
                .collect();
        }
        while let Some(&Reverse((t, slot, gen))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if !self.is_live(slot, gen) {
                continue;
            }
            let h = self.held(slot);
            if h.deadline > now {
                continue; // superseded by a later deadline
            }
            match (h.state, h.seen) {
                (State::Waiting, _) if h.meta.kind == Kind::Proxy => {
                    self.close_as(slot, Note::ProxyRefused)
                }
                (State::Waiting, 0) => self.close(slot),
                (State::Waiting, _) => self.answer(slot, 408),
                (State::Body, _) => self.body_late(slot, now),
                (State::Tail, _) => self.tail_late(slot, now),
                (State::Queued | State::Sending, _) => {
                    crate::scoreboard::add(crate::scoreboard::Sup::RefusedQueueTimeout, 1);
                    self.refusals.queue_timeout(h.meta.peer, now);
                    self.answer(slot, 503);
                }
                // The supervisor has not taken it back for a whole
                // queue_timeout (it is stuck): answer rather than hold on.
                (State::Returning, _) => self.answer(slot, 503),
                (State::Lingering, _) => self.close(slot),
            }
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, slot, gen))) = self.timers.peek() {
            if self.is_live(slot, gen) {
                return Some(t);
            }
            self.timers.pop();
        }
        self.refusals.due()
    }

    fn close(&mut self, slot: u32) {
        self.close_as(slot, Note::Closed);
    }

    /// Close a connection and tell the supervisor how it ended: `Closed` or
    /// `ProxyRefused` (after, for a complete request, what it was to the
    /// supervisor's count of queued requests).
    fn close_as(&mut self, slot: u32, note: Note) {
        let Some(h) = self.slots[slot as usize].take() else {
            return;
        };
        self.forget(&h.fd);
        drop(h.fd);
        self.leave_queue_as(h.key, h.meta.kind, h.state);
        self.release(slot);
        self.out.note(h.key, h.meta.kind, note);
    }

    /// A complete request stops waiting (it is answered, closed or handed
    /// over): the supervisor's count of queued (or asked-for) requests
    /// hears of it before it hears of the connection's end.
    fn leave_queue(&mut self, slot: u32) {
        let h = self.held(slot);
        let (key, kind, state) = (h.key, h.meta.kind, h.state);
        self.leave_queue_as(key, kind, state);
    }

    fn leave_queue_as(&mut self, key: u128, kind: Kind, state: State) {
        match state {
            State::Queued => {
                let (slots, gens) = (&self.slots, &self.gens);
                self.queues.closed(key, |s, g| is_queued(slots, gens, s, g));
                self.out.note(key, kind, Note::ClosedQueued);
            }
            State::Sending => self.out.note(key, kind, Note::Dropped),
            _ => {}
        }
    }

    /// Take a connection out of the epoll set before letting it go. Closing
    /// our descriptor is not enough: epoll watches the open file, which
    /// lives on in the supervisor or a worker, and would keep reporting it
    /// (and refuse it, `EEXIST`, when it comes back parked).
    fn forget(&self, fd: &OwnedFd) {
        let _ = self.epoll.delete(fd);
    }

    fn release(&mut self, slot: u32) {
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
    }

    /// Graceful stop: what is idle closes now; heads on their way may still
    /// complete (and be served); the gate exits once it holds nothing.
    fn stop(&mut self) {
        self.stopping = true;
        for i in 0..self.slots.len() as u32 {
            if self.idle(i) {
                // Bytes may have come that no event has reported yet.
                self.look(i, EpollFlags::empty());
                if self.idle(i) {
                    self.close(i);
                }
            }
        }
    }

    fn idle(&self, slot: u32) -> bool {
        // (A connection whose body is coming is not idle: it may finish.)
        self.slots[slot as usize]
            .as_ref()
            .is_some_and(|h| h.state == State::Waiting && h.seen == 0)
    }

    /// An upgrade in place: every connection goes back to the supervisor
    /// (as the kind it came as; the new image's gate takes it again); those
    /// being closed are closed now. Then the gate exits.
    fn handover(&mut self) {
        self.stopping = true;
        self.handing_over = true;
        for i in 0..self.slots.len() as u32 {
            let Some(h) = self.slots[i as usize].as_ref() else {
                continue;
            };
            match h.state {
                State::Lingering => self.close(i),
                State::Sending | State::Returning => {} // on their way already
                State::Body => self.hand_back_body(i),
                State::Tail => {
                    let _ = crate::sys::set_nonblocking(raw(h), false);
                    self.send_back(i);
                }
                State::Waiting | State::Queued => {
                    self.leave_queue(i);
                    self.send_back(i);
                }
            }
        }
    }
}

/// What `since_ms` (`scoreboard::now_ms`, the same clock in every process)
/// is as an `Instant` of this process.
fn instant_of(since_ms: u64) -> Instant {
    let now = Instant::now();
    let ago = crate::scoreboard::now_ms().saturating_sub(since_ms);
    now.checked_sub(Duration::from_millis(ago)).unwrap_or(now)
}

/// Whether (slot, gen) is a connection waiting in its source's queue.
fn is_queued(slots: &[Option<Held>], gens: &[u32], slot: u32, gen: u32) -> bool {
    gens.get(slot as usize) == Some(&gen)
        && slots[slot as usize]
            .as_ref()
            .is_some_and(|h| h.state == State::Queued)
}

fn hung_up(ev: EpollFlags) -> bool {
    ev.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
}

/// The peek buffer: a whole head, or the longest PROXY header.
fn peek_room(l: &GateLimits) -> usize {
    l.max_header_bytes.max(lbaws::proto::proxy::MAX_HEADER)
}

fn raw(h: &Held) -> i32 {
    h.fd.as_raw_fd()
}
