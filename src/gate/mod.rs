//! The gate: where a connection waits while it has no complete request, at
//! the cost of a descriptor and a few dozen bytes instead of a process.
//!
//! The gate is one long-lived helper process, forked by the supervisor at
//! start (and again if it ever dies). It holds
//! - new connections whose first request head has not fully arrived,
//! - parked connections, handed back by a worker while idle between requests,
//! - connections answered with 408/503, while they close gracefully,
//!
//! and for each it waits, with `epoll` (edge-triggered: a wake-up per
//! arrival, whatever is already buffered), until its head is complete
//! (`head::complete`, looking with `MSG_PEEK` so the bytes stay on the socket
//! for the worker), then sends it to the supervisor, which forks a worker.
//!
//! Why a process of its own: every descriptor a process holds is copied by
//! each `fork` and released by each exit (measured on this project's
//! machines: about +0.1 ms per fork for every 1,000 descriptors). Kept out of
//! the supervisor, ten thousand waiting connections cost the fork of a
//! worker nothing.
//!
//! Deadlines (invariant 8 holds here too: every state has one):
//!
//! | state | deadline | then |
//! |---|---|---|
//! | new, nothing received | `header_timeout` | close quietly |
//! | PROXY header not complete (`Kind::Proxy`) | `header_timeout` from adoption | close, counted as refused |
//! | new or parked, part of a head received | `header_timeout` from the first byte (parked) or from adoption (new) | 408, close gracefully |
//! | parked, idle | `keepalive_timeout` less `park_after` | close quietly |
//! | complete, waiting for the supervisor to take it | `header_timeout` | 503, close gracefully |
//! | closing gracefully | 2 s | close |
//!
//! At `max_pending` the connection nearest its deadline makes room. The
//! gate handles no signal (it has the default dispositions: the supervisor
//! ends it with SIGTERM when it stops at once) and dies with the supervisor
//! (`PR_SET_PDEATHSIG`). For an upgrade in place it hands every connection
//! back to the supervisor and exits (`Msg::Handover`), so that the new image
//! runs a gate of its own version. It parses nothing but a PROXY header that
//! arrived in pieces (`look_proxy`: read off the socket, its source made the
//! peer, then the connection goes back as `Kind::Proxied` for the supervisor
//! to admit under the client's address), and answers nothing but 408/503
//! (each with its access log line, request `"-"`; without a body when the
//! bytes begin a HEAD request, the one other look it takes).

pub mod head;
mod tell;

use crate::handoff::{self, ClosedBatch, GateLimits, Kind, Meta, Msg};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long a connection answered with 408/503 is read from (and its bytes
/// dropped) before it is closed, so its answer is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);
/// At most this much is read from a lingering connection before closing it.
const LINGER_BYTES: usize = 256 << 10;

/// The gate's process name, as `ps` and `top` show it.
pub const GATE_NAME: &std::ffi::CStr = c"lbaws-gate";

const CTL: u64 = u64::MAX;
const READY: u64 = u64::MAX - 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Its head is not complete yet.
    Waiting,
    /// Complete, waiting for room on the way to the supervisor.
    Ready,
    /// Answered (408/503) and half-closed: reading what still comes.
    Lingering,
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
}

/// The gate's tables. Slots are reused; a generation number in each epoll
/// event and timer entry tells a live connection from an earlier occupant.
struct Gate {
    epoll: Epoll,
    ctl: OwnedFd,
    ready: OwnedFd,
    limits: GateLimits,
    server_header: bool,
    slots: Vec<Option<Held>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Complete, waiting for room on the ready channel, oldest first.
    queue: VecDeque<(u32, u32)>,
    closed: ClosedBatch,
    /// Closed connections not yet reported (the ctl channel was full).
    unreported: VecDeque<(u128, Kind, bool)>,
    ctl_wants_out: bool,
    stopping: bool,
    peek: Vec<MaybeUninit<u8>>,
    msg: [u8; handoff::MAX_MSG],
}

/// Run the gate in a freshly forked child; never returns.
pub fn run(ctl: OwnedFd, ready: OwnedFd, limits: GateLimits, server_header: bool) -> ! {
    crate::sys::die_with_parent(libc::SIGKILL);
    crate::sys::set_name(GATE_NAME);
    let code = match Gate::new(ctl, ready, limits, server_header) {
        Ok(mut g) => {
            g.serve();
            0
        }
        Err(e) => {
            crate::error!("gate: cannot start: {e}");
            1
        }
    };
    // SAFETY: _exit is always safe; nothing of the supervisor's may run here.
    unsafe { libc::_exit(code) }
}

impl Gate {
    fn new(
        ctl: OwnedFd,
        ready: OwnedFd,
        limits: GateLimits,
        server_header: bool,
    ) -> Result<Gate, Errno> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&ctl, EpollEvent::new(EpollFlags::EPOLLIN, CTL))?;
        epoll.add(
            &ready,
            EpollEvent::new(EpollFlags::EPOLLOUT | EpollFlags::EPOLLET, READY),
        )?;
        Ok(Gate {
            epoll,
            ctl,
            ready,
            limits,
            server_header,
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            live: 0,
            timers: BinaryHeap::new(),
            queue: VecDeque::new(),
            closed: ClosedBatch::default(),
            unreported: VecDeque::new(),
            ctl_wants_out: false,
            stopping: false,
            peek: vec![MaybeUninit::uninit(); peek_room(&limits)],
            msg: [0; handoff::MAX_MSG],
        })
    }

    fn serve(&mut self) {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            if self.stopping
                && self.live == 0
                && self.unreported.is_empty()
                && self.closed.is_empty()
            {
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
                    CTL => {
                        if ev.events().contains(EpollFlags::EPOLLIN) && !self.read_supervisor() {
                            return; // the supervisor is gone
                        }
                    }
                    READY => {}
                    token => self.on_event(token, ev.events()),
                }
            }
            self.expire(Instant::now());
            self.send_ready();
            self.report_closed();
        }
    }

    // -----------------------------------------------------------------------
    // From the supervisor

    /// Take every message waiting on the ctl channel; false at end of stream.
    fn read_supervisor(&mut self) -> bool {
        loop {
            let mut buf = [0u8; handoff::MAX_MSG];
            let (n, fd) = match crate::sys::recv_with_fd(self.ctl.as_fd(), &mut buf) {
                Ok((0, _)) => return false,
                Ok(r) => r,
                Err(Errno::EAGAIN) => return true,
                Err(e) => {
                    crate::error!("gate: receiving from the supervisor: {e}");
                    return false;
                }
            };
            match (handoff::decode(&buf[..n]), fd) {
                (Some(Msg::Adopt(meta)), Some(fd)) => self.adopt(fd, meta),
                (Some(Msg::Adopt(meta)), None) => {
                    // Its descriptor could not be installed (no room in our
                    // table): it is gone; the supervisor must know.
                    self.note_closed(key_of(&meta), meta.kind);
                }
                (Some(Msg::Limits(l)), _) => self.set_limits(l),
                (Some(Msg::Stop), _) => self.stop(),
                (Some(Msg::Handover), _) => self.handover(),
                (other, _) => crate::error!("gate: unexpected message {other:?}"),
            }
        }
    }

    fn set_limits(&mut self, l: GateLimits) {
        if l.max_header_bytes != self.limits.max_header_bytes {
            self.peek = vec![MaybeUninit::uninit(); peek_room(&l)];
        }
        self.limits = l;
    }

    /// Graceful stop: what is idle closes now; heads on their way may still
    /// complete (and be served); the gate exits once it holds nothing.
    fn stop(&mut self) {
        self.stopping = true;
        let idle = |g: &Gate, i: usize| {
            g.slots[i]
                .as_ref()
                .is_some_and(|h| h.state == State::Waiting && h.seen == 0)
        };
        for i in 0..self.slots.len() {
            if idle(self, i) {
                // Bytes may have come that no event has reported yet.
                self.look(i as u32, EpollFlags::empty());
                if idle(self, i) {
                    self.close(i as u32);
                }
            }
        }
    }

    /// An upgrade in place: every connection goes back to the supervisor on
    /// the ready channel, as the kind it came as (the new image's gate takes
    /// it again); those being closed are closed now. Then the gate exits.
    fn handover(&mut self) {
        self.stopping = true;
        for i in 0..self.slots.len() {
            let Some(h) = self.slots[i].as_mut() else {
                continue;
            };
            match h.state {
                State::Lingering => self.close(i as u32),
                State::Ready => {} // queued already
                State::Waiting => {
                    h.state = State::Ready;
                    self.queue.push_back((i as u32, self.gens[i]));
                }
            }
        }
    }

    fn adopt(&mut self, fd: OwnedFd, meta: Meta) {
        let key = key_of(&meta);
        if self.stopping && meta.kind != Kind::Closing {
            drop(fd);
            self.note_closed(key, meta.kind);
            return;
        }
        if self.live >= self.limits.max_pending {
            self.make_room();
        }
        let now = Instant::now();
        let (state, deadline) = match meta.kind {
            Kind::New | Kind::Proxy | Kind::Proxied => {
                (State::Waiting, now + self.limits.header_timeout)
            }
            Kind::Parked => (State::Waiting, now + self.limits.idle_timeout),
            Kind::Closing => (State::Lingering, now + LINGER),
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
            self.note_closed(key, meta.kind);
            return;
        }
        self.slots[slot as usize] = Some(Held {
            fd,
            meta,
            key,
            state,
            seen: 0,
            drained: 0,
            deadline,
        });
        self.live += 1;
        self.timers.push(Reverse((deadline, slot, gen)));
    }

    /// At `max_pending`: close the connection nearest its deadline.
    fn make_room(&mut self) {
        while let Some(Reverse((_, slot, gen))) = self.timers.pop() {
            if self.is_live(slot, gen) {
                self.close(slot);
                return;
            }
        }
    }

    // -----------------------------------------------------------------------
    // Connections

    fn is_live(&self, slot: u32, gen: u32) -> bool {
        self.gens.get(slot as usize) == Some(&gen)
            && self.slots.get(slot as usize).is_some_and(Option::is_some)
    }

    fn on_event(&mut self, token: u64, ev: EpollFlags) {
        let (slot, gen) = (token as u32, (token >> 32) as u32);
        if !self.is_live(slot, gen) {
            return;
        }
        let state = self.slots[slot as usize].as_ref().expect("live").state;
        match state {
            State::Waiting => self.look(slot, ev),
            State::Ready => {}
            State::Lingering => self.drain(slot),
        }
    }

    /// New bytes (or an end) on a waiting connection: is its head complete?
    fn look(&mut self, slot: u32, ev: EpollFlags) {
        let h = self.slots[slot as usize].as_mut().expect("live");
        if h.meta.kind == Kind::Proxy {
            return self.look_proxy(slot, ev);
        }
        let limit = self.limits.max_header_bytes.min(self.peek.len());
        let n = match crate::sys::peek(h.fd.as_raw_fd(), &mut self.peek[..limit]) {
            Ok(0) => return self.close(slot), // closed before a complete head: nothing to answer
            Ok(n) => n,
            Err(Errno::EAGAIN) if !hung_up(ev) => return,
            Err(_) => return self.close(slot),
        };
        // SAFETY: peek initialised the first n bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.peek.as_ptr().cast::<u8>(), n) };
        let bounds = head::Bounds {
            max_header_bytes: self.limits.max_header_bytes,
            max_line_bytes: self.limits.max_line_bytes,
        };
        if head::complete(bytes, h.seen, bounds) {
            h.state = State::Ready;
            h.deadline = Instant::now() + self.limits.header_timeout;
            self.timers
                .push(Reverse((h.deadline, slot, self.gens[slot as usize])));
            self.queue.push_back((slot, self.gens[slot as usize]));
            return;
        }
        if hung_up(ev) {
            // The client stopped sending with its head incomplete.
            return self.close(slot);
        }
        if h.seen == 0 && h.meta.kind == Kind::Parked {
            // The next request has begun: it has header_timeout to arrive.
            h.deadline = Instant::now() + self.limits.header_timeout;
            self.timers
                .push(Reverse((h.deadline, slot, self.gens[slot as usize])));
        }
        h.seen = n;
    }

    /// Bytes on a connection whose PROXY header has not fully arrived: when
    /// it has, read it off the socket, make its source the peer, and look
    /// for the head after it (the connection goes back as `Kind::Proxied`,
    /// for the supervisor to admit under the client's address). A bad
    /// header, or an end after part of one, closes it as refused.
    fn look_proxy(&mut self, slot: u32, ev: EpollFlags) {
        use lbaws::proto::proxy::{self, Parsed};
        let h = self.slots[slot as usize].as_mut().expect("live");
        let room = self.peek.len().min(proxy::MAX_HEADER);
        let buf = &mut self.peek[..room];
        let n = match crate::sys::peek(h.fd.as_raw_fd(), buf) {
            Ok(0) => return self.close(slot), // a balancer's TCP check: connect, close
            Ok(n) => n,
            Err(Errno::EAGAIN) if !hung_up(ev) => return,
            Err(_) => return self.close(slot),
        };
        // SAFETY: peek initialised the first n bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        match proxy::parse(bytes) {
            Ok(Parsed::Incomplete) if !hung_up(ev) => {}
            Ok(Parsed::Incomplete) | Err(_) => self.close_refused(slot),
            Ok(Parsed::Done { consumed, source }) => {
                match crate::sys::discard(h.fd.as_raw_fd(), &mut buf[..consumed]) {
                    Ok(got) if got == consumed => {}
                    _ => return self.close_refused(slot),
                }
                if let Some(a) = source {
                    h.meta.peer = crate::listen::Peer::Inet(a);
                }
                h.meta.kind = Kind::Proxied;
                self.look(slot, ev);
            }
        }
    }

    /// Read and drop what a lingering connection sends; close at its end.
    fn drain(&mut self, slot: u32) {
        let h = self.slots[slot as usize].as_mut().expect("live");
        loop {
            match crate::sys::discard(h.fd.as_raw_fd(), &mut self.peek) {
                Ok(0) => return self.close(slot),
                Ok(n) => {
                    h.drained += n;
                    if h.drained > LINGER_BYTES {
                        return self.close(slot);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => return self.close(slot),
            }
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
            let h = self.slots[slot as usize].as_ref().expect("live");
            if h.deadline > now {
                continue; // superseded by a later deadline
            }
            match (h.state, h.seen) {
                (State::Waiting, _) if h.meta.kind == Kind::Proxy => self.close_refused(slot),
                (State::Waiting, 0) => self.close(slot),
                (State::Waiting, _) => self.answer(slot, 408),
                (State::Ready, _) => {
                    self.queue.retain(|&(s, g)| (s, g) != (slot, gen));
                    self.answer(slot, 503);
                }
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
        None
    }

    /// The fixed answer, written without waiting, then a graceful close.
    fn answer(&mut self, slot: u32, status: u16) {
        let head_only = self.begins_head(slot);
        let h = self.slots[slot as usize].as_mut().expect("live");
        let mut out = [0u8; 256];
        let (n, body) = fixed_response(&mut out, status, self.server_header, head_only);
        let sent = crate::sys::send_nowait(h.fd.as_raw_fd(), &out[..n]);
        let body_bytes = if sent == Ok(n) { body as u64 } else { 0 };
        crate::http::access::log_access(
            h.meta.peer,
            None,
            crate::http::response::Sent { status, body_bytes },
        );
        let _ = nix::sys::socket::shutdown(h.fd.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        h.state = State::Lingering;
        h.deadline = Instant::now() + LINGER;
        self.timers
            .push(Reverse((h.deadline, slot, self.gens[slot as usize])));
        // Edge-triggered: what has already arrived gives no new event.
        self.drain(slot);
    }

    /// Whether the connection's first bytes begin a HEAD request, whose
    /// answer has no body (RFC 9110 9.3.2), even a 408 or 503.
    fn begins_head(&mut self, slot: u32) -> bool {
        let Some(h) = self.slots[slot as usize].as_ref() else {
            return false;
        };
        let limit = 64.min(self.peek.len());
        let n = crate::sys::peek(h.fd.as_raw_fd(), &mut self.peek[..limit]).unwrap_or(0);
        // SAFETY: peek initialised the first n bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.peek.as_ptr().cast::<u8>(), n) };
        lbaws::proto::head::begins_head_request(bytes)
    }

    fn close(&mut self, slot: u32) {
        self.close_as(slot, false);
    }

    /// Close a connection without a valid PROXY header (counted as such).
    fn close_refused(&mut self, slot: u32) {
        self.close_as(slot, true);
    }

    fn close_as(&mut self, slot: u32, refused: bool) {
        let Some(h) = self.slots[slot as usize].take() else {
            return;
        };
        self.forget(&h.fd);
        drop(h.fd);
        self.release(slot);
        self.unreported.push_back((h.key, h.meta.kind, refused));
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
}

fn hung_up(ev: EpollFlags) -> bool {
    ev.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
}

fn key_of(meta: &Meta) -> u128 {
    handoff::meta_key(meta)
}

/// The peek buffer: a whole head, or the longest PROXY header.
fn peek_room(l: &GateLimits) -> usize {
    l.max_header_bytes.max(lbaws::proto::proxy::MAX_HEADER)
}

/// "HTTP/1.1 408 Request Timeout" with `Date`, a one-line body (none for
/// `head_only`) and `Connection: close`, into `out`; returns its length and
/// its body's.
pub fn fixed_response(
    out: &mut [u8; 256],
    status: u16,
    server_header: bool,
    head_only: bool,
) -> (usize, usize) {
    use std::io::Write as _;
    let reason = match status {
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let mut w = &mut out[..];
    let _ =
        write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nDate: {}\r\n{}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{}Connection: close\r\n\r\n{status} {reason}\n",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        if server_header { "Server: lbaws\r\n" } else { "" },
        reason.len() + 5,
        if status == 503 { "Retry-After: 1\r\n" } else { "" },
    );
    let body = reason.len() + 5;
    let len = 256 - w.len();
    if head_only {
        (len - body, 0)
    } else {
        (len, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_responses_are_whole() {
        for (status, sh) in [(408, true), (503, false)] {
            let mut out = [0u8; 256];
            let (n, b) = fixed_response(&mut out, status, sh, true);
            assert_eq!(b, 0);
            assert!(out[..n].ends_with(b"\r\n\r\n"), "HEAD: no body");
            let (n, _) = fixed_response(&mut out, status, sh, false);
            let text = std::str::from_utf8(&out[..n]).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(head.contains("\r\nDate: "));
            assert_eq!(head.contains("Server: lbaws"), sh);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{text}");
        }
    }
}
