//! Moving connections: from a listener (accept and one look), from the gate
//! (complete heads), from workers (parked), into a worker (fork) or into the
//! gate; and the per-source limit, counted on the way.

use super::sources::Place;
use super::{GateProc, Supervisor, Worker};
use crate::child;
use crate::gate::head;
use crate::handoff::{self, Kind, Meta, Msg, NO_KEY};
use crate::listen::Peer;
use crate::scoreboard::Sup;
use nix::errno::Errno;
use nix::unistd::{fork, ForkResult};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Most connections taken from one listener (or from the gate) per wakeup,
/// so signals and the other listeners are not starved under a flood.
const BURST: usize = 64;
/// How long to stop accepting after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections waiting for room on the gate's channel, at most.
const OUTBOX_MAX: usize = 1024;
/// The answer when no worker can be forked, written without blocking.
const RESPONSE_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 24\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable\n";

impl Supervisor {
    // -----------------------------------------------------------------------
    // From a listener

    pub(super) fn accept_burst(&mut self, idx: usize) {
        let lfd = self.listeners[idx].raw();
        for _ in 0..BURST {
            match crate::sys::accept(lfd) {
                Ok((conn, addr)) => {
                    self.accept_error_logged = false;
                    self.new_connection(idx, conn, addr.map_or(Peer::Unix, Peer::Inet));
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                // The connection died in the queue, or a firewall said no: next.
                Err(Errno::ECONNABORTED | Errno::EPROTO | Errno::EPERM) => continue,
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
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
                Err(e) => {
                    crate::error!("accept on {}: {}", self.listeners[idx].local, e);
                    return;
                }
            }
        }
    }

    /// A connection from listener `idx`: on a `proxy_protocol` listener its
    /// PROXY header first (`proxy_header`), then [`Self::admit`].
    fn new_connection(&mut self, idx: usize, conn: OwnedFd, peer: Peer) {
        crate::scoreboard::add(Sup::Accepted, 1);
        match self.proxy_policy(idx, &peer) {
            Proxy::Off => self.admit(conn, peer),
            Proxy::Refused => self.refuse_proxy(conn, Some(peer), "not in proxy_from"),
            Proxy::On => self.proxy_header(conn, peer),
        }
    }

    /// Whether connections on listener `idx` begin with a PROXY header, and
    /// whether `peer` may send one. A self-bound listener has its entry; one
    /// from systemd is matched to an entry by name, as at start.
    fn proxy_policy(&self, idx: usize, peer: &Peer) -> Proxy {
        let l = &self.listeners[idx];
        let spec = l.spec.as_ref().or_else(|| {
            let name = l.name.as_ref()?;
            self.cfg
                .listen
                .iter()
                .find(|s| s.name.as_ref() == Some(name))
        });
        let Some(from) = spec.and_then(|s| s.proxy.as_ref()) else {
            return Proxy::Off;
        };
        match peer {
            Peer::Unix => Proxy::On,
            Peer::Inet(a) if from.iter().any(|c| c.contains(a.ip())) => Proxy::On,
            Peer::Inet(_) => Proxy::Refused,
        }
    }

    /// The PROXY header, if it has all arrived (it usually has: a balancer
    /// sends it with the request, and `TCP_DEFER_ACCEPT` waits for data): it
    /// is read off the socket here, its source becomes the peer, and the
    /// connection is admitted. Not yet: the gate waits for it, reads it and
    /// hands the connection back (`Kind::Proxied`). This fixed, short header
    /// is the one thing beside the end of a head the supervisor parses
    /// (`lbaws::proto::proxy`, into the peek buffer, allocating nothing).
    fn proxy_header(&mut self, conn: OwnedFd, peer: Peer) {
        use lbaws::proto::proxy::{self, Parsed};
        let spare = self.peek.spare();
        let room = spare.len().min(proxy::MAX_HEADER);
        let buf = &mut spare[..room];
        let parsed = match crate::sys::peek(conn.as_raw_fd(), buf) {
            Ok(0) => return, // closed before a word: a TCP health check
            Ok(n) => {
                // SAFETY: peek initialised the first n bytes.
                let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                proxy::parse(bytes)
            }
            Err(Errno::EAGAIN) => Ok(Parsed::Incomplete),
            Err(_) => return, // reset already
        };
        match parsed {
            Ok(Parsed::Incomplete) => {
                let meta = Meta {
                    peer,
                    served: 0,
                    kind: Kind::Proxy,
                };
                self.hand_to_gate(conn, meta, NO_KEY);
            }
            Err(e) => self.refuse_proxy(conn, Some(peer), e.0),
            Ok(Parsed::Done { consumed, source }) => {
                // The bytes are there: one read takes exactly the header.
                match crate::sys::discard(conn.as_raw_fd(), &mut buf[..consumed]) {
                    Ok(n) if n == consumed => {}
                    _ => return self.refuse_proxy(conn, Some(peer), "header not readable"),
                }
                self.admit(conn, source.map_or(peer, Peer::Inet));
            }
        }
    }

    /// Close a connection refused for its PROXY header, counted and logged
    /// (at most once a second).
    pub(super) fn refuse_proxy(&mut self, conn: OwnedFd, peer: Option<Peer>, why: &'static str) {
        drop(conn);
        self.note_proxy_refused(peer, why);
    }

    fn note_proxy_refused(&mut self, peer: Option<Peer>, why: &'static str) {
        self.counters.proxy_refused += 1;
        // Counted in the scoreboard directly: it outlives an upgrade in
        // place, which does not carry this counter.
        crate::scoreboard::add(Sup::RefusedProxy, 1);
        self.proxy_refusals.note((peer, why), Instant::now());
        self.status_dirty = true;
    }

    /// A new connection from `peer` (the client: after its PROXY header, if
    /// any): over its source's limit it is closed at once; with a complete
    /// head (the usual case: `TCP_DEFER_ACCEPT` held it until data came) and
    /// a worker free, it is forked now; otherwise it waits in the gate.
    fn admit(&mut self, conn: OwnedFd, peer: Peer) {
        let key = handoff::source_key(&peer).unwrap_or(NO_KEY);
        let limit = self.cfg.server.max_connections_per_ip;
        if limit > 0 && key != NO_KEY && self.sources.total(key) as usize >= limit {
            drop(conn);
            self.counters.over_limit += 1;
            self.over_limit.note(peer, Instant::now());
            self.status_dirty = true;
            return;
        }
        let meta = Meta {
            peer,
            served: 0,
            kind: Kind::New,
        };
        if self.workers.len() < self.cfg.server.max_connections {
            let bounds = head::Bounds {
                max_header_bytes: self.cfg.limits.max_header_bytes,
                max_line_bytes: max_line_bytes(&self.cfg),
            };
            let buf = &mut self.peek.spare()[..bounds.max_header_bytes];
            match crate::sys::peek(conn.as_raw_fd(), buf) {
                Ok(0) => return, // already closed: nothing to serve
                Ok(n) => {
                    // SAFETY: peek initialised the first n bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                    if head::complete(bytes, 0, bounds) {
                        self.fork_worker(conn, meta, key);
                        return;
                    }
                }
                Err(Errno::EAGAIN) => {}
                Err(_) => return, // reset already
            }
        }
        self.hand_to_gate(conn, meta, key);
    }

    // -----------------------------------------------------------------------
    // Into a worker or into the gate

    /// Fork a worker for a connection with a complete head.
    pub(super) fn fork_worker(&mut self, conn: OwnedFd, meta: Meta, key: u128) {
        // A scoreboard slot: one a worker left, or the next never used.
        let slot = match self.free_slots.len() {
            0 => self.next_slot,
            n => self.free_slots.as_slice()[n - 1],
        };
        crate::scoreboard::assign(slot as usize, meta.peer, meta.served);
        crate::sandbox::follow_paths(); // a root a deploy swapped: new rules
                                        // SAFETY: lbaws is single-threaded, so the child is a complete copy.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let inherited = child::Inherited {
                    slot: slot as usize,
                    logs: self.log_fds,
                    stop_reader: self.stop_reader.as_raw_fd(),
                    park: (self.gate.is_some() && self.stop.is_none())
                        .then(|| self.park_tx.as_raw_fd()),
                    stopping: self.stop.is_some(),
                };
                child::run(conn, meta, &self.cfg, inherited)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(conn); // the worker has its own copy
                crate::scoreboard::set_pid(slot as usize, child.as_raw() as u32);
                self.sources.add(key, Place::Worker);
                // Cannot be full: nothing forks at max_connections.
                self.workers.push(Worker {
                    pid: child,
                    peer: meta.peer,
                    started: Instant::now(),
                    key,
                    slot,
                    stalled: None,
                });
                if self.free_slots.is_empty() {
                    self.next_slot += 1;
                } else {
                    self.free_slots.pop();
                }
                if self.next_check.is_none() {
                    self.next_check = Some(Instant::now() + Duration::from_secs(1));
                }
                self.status_dirty = true;
            }
            Err(e) => {
                // Answer without waiting, then let the gate close it
                // gracefully (its request is unread: a plain close would
                // reset the connection and could destroy the 503).
                let _ = crate::sys::send_nowait(conn.as_raw_fd(), RESPONSE_503);
                let _ =
                    nix::sys::socket::shutdown(conn.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                self.counters.refused += 1;
                self.status_dirty = true;
                self.fork_failures.note(e, Instant::now());
                let closing = Meta {
                    kind: Kind::Closing,
                    ..meta
                };
                self.hand_to_gate(conn, closing, key);
            }
        }
    }

    /// Give a connection to the gate. While its channel is full (the gate
    /// is behind, e.g. a flood of new connections), the connection waits in
    /// the outbox and accepting pauses until the gate has caught up; with no
    /// gate, or the outbox full too, it is closed.
    pub(super) fn hand_to_gate(&mut self, conn: OwnedFd, meta: Meta, key: u128) {
        if self.handing_over() {
            return self.carry(conn, meta); // for the next image's gate
        }
        self.status_dirty = true;
        self.sources.add(key, Place::Gate);
        if !self.outbox.is_empty() {
            if self.outbox.len() < OUTBOX_MAX {
                self.outbox.push_back((conn, meta, key));
            } else {
                self.shed(conn, meta, key, Errno::ENOBUFS);
            }
            return;
        }
        match self.send_to_gate(conn.as_raw_fd(), meta) {
            Ok(()) => {}
            Err(Errno::EAGAIN) => self.outbox.push_back((conn, meta, key)),
            Err(e) => self.shed(conn, meta, key, e),
        }
    }

    /// Send what waits in the outbox, oldest first, while the gate takes it.
    pub(super) fn flush_outbox(&mut self) {
        while let Some((conn, meta, _)) = self.outbox.front() {
            let (fd, meta) = (conn.as_raw_fd(), *meta);
            match self.send_to_gate(fd, meta) {
                Ok(()) => {
                    self.outbox.pop_front();
                }
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    let (conn, meta, key) = self.outbox.pop_front().expect("front");
                    self.shed(conn, meta, key, e);
                }
            }
        }
    }

    /// One connection to the gate, counted there once sent (the caller has
    /// counted it for its source already). The gate gets its own descriptor;
    /// the caller closes ours.
    fn send_to_gate(&mut self, conn: RawFd, meta: Meta) -> Result<(), Errno> {
        let Some(g) = self.gate.as_mut().filter(|g| !g.gone) else {
            return Err(Errno::ENOTCONN);
        };
        let mut msg = [0u8; 64];
        let n = handoff::encode(&Msg::Adopt(meta), &mut msg);
        crate::sys::send_with_fd(g.ctl.as_fd(), &msg[..n], Some(conn))?;
        *held(g, meta.kind) += 1;
        Ok(())
    }

    /// Close a connection the gate cannot take (logged at most once a second).
    fn shed(&mut self, conn: OwnedFd, meta: Meta, key: u128, e: Errno) {
        drop(conn);
        self.sources.remove(key, Place::Gate);
        self.counters.shed += 1;
        self.shed.note((meta.kind, e), Instant::now());
    }

    // -----------------------------------------------------------------------
    // From the gate and from workers

    /// Complete heads from the gate: a worker each, while below max_connections.
    pub(super) fn take_ready(&mut self) {
        if self.handing_over() {
            while let Some((conn, meta, _)) = self.next_ready() {
                self.carry(conn, meta);
            }
            return;
        }
        for _ in 0..BURST {
            if self.workers.len() >= self.cfg.server.max_connections {
                return;
            }
            let Some((conn, meta, key)) = self.next_ready() else {
                return;
            };
            if meta.kind == Kind::Proxied {
                // Its PROXY header was read in the gate: admitted only now.
                self.admit(conn, meta.peer);
            } else {
                self.fork_worker(conn, meta, key);
            }
        }
    }

    /// The next complete head on the gate's ready channel, taken off the
    /// gate's tally and its source's count in the gate.
    pub(super) fn next_ready(&mut self) -> Option<(OwnedFd, Meta, u128)> {
        loop {
            let g = self.gate.as_mut()?;
            let mut buf = [0u8; 64];
            let (n, fd) = match crate::sys::recv_with_fd(g.ready.as_fd(), &mut buf) {
                Ok((0, _)) | Err(Errno::EAGAIN) => return None,
                Ok(r) => r,
                Err(e) => {
                    crate::error!("receiving from the gate: {e}");
                    return None;
                }
            };
            match (handoff::decode(&buf[..n]), fd) {
                (Some(Msg::Ready(meta)), Some(conn)) => {
                    let key = handoff::meta_key(&meta);
                    let h = held(g, meta.kind);
                    *h = h.saturating_sub(1);
                    self.sources.remove(key, Place::Gate);
                    return Some((conn, meta, key));
                }
                (other, _) => crate::error!("unexpected message from the gate: {other:?}"),
            }
        }
    }

    /// Connections the gate closed: keep the counts true.
    pub(super) fn gate_notes(&mut self) {
        loop {
            let Some(g) = &self.gate else { return };
            // Into memory workers do not inherit, not onto the stack: every
            // page of stack this loop writes is one its workers stop sharing.
            let buf = self.msg.as_mut_slice();
            let n = match crate::sys::recv_with_fd(g.ctl.as_fd(), buf) {
                Ok((0, _)) => {
                    // End of stream: the gate is exiting (reaped soon).
                    self.gate.as_mut().expect("checked").gone = true;
                    return;
                }
                Ok((n, _)) => n,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    crate::error!("receiving from the gate: {e}");
                    return;
                }
            };
            let buf = &self.msg.as_slice()[..n];
            if !matches!(handoff::decode(buf), Some(Msg::Closed { .. })) {
                crate::error!("unexpected message from the gate");
                continue;
            }
            let mut refused = 0;
            for (key, kind, proxy_refused) in handoff::closed_entries(buf) {
                let g = self.gate.as_mut().expect("checked");
                let h = held(g, kind);
                *h = h.saturating_sub(1);
                self.sources.remove(key, Place::Gate);
                refused += proxy_refused as usize;
            }
            for _ in 0..refused {
                self.note_proxy_refused(None, "no valid PROXY header within header_timeout");
            }
            self.status_dirty = true;
        }
    }

    /// Idle keep-alive connections handed back by workers: to the gate, to
    /// wait for their next request (or closed, when stopping).
    pub(super) fn take_parked(&mut self) {
        loop {
            let mut buf = [0u8; 64];
            let (n, fd) = match crate::sys::recv_with_fd(self.park_rx.as_fd(), &mut buf) {
                Ok((0, _)) | Err(Errno::EAGAIN) => return,
                Ok(r) => r,
                Err(e) => {
                    crate::error!("receiving a parked connection: {e}");
                    return;
                }
            };
            let (Some(Msg::Park { pid, meta }), Some(conn)) = (handoff::decode(&buf[..n]), fd)
            else {
                crate::error!("unexpected message on the park channel");
                continue;
            };
            let key = handoff::source_key(&meta.peer).unwrap_or(NO_KEY);
            // The connection leaves its worker: that worker's end no longer
            // ends a connection.
            if let Some(w) = self
                .workers
                .as_mut_slice()
                .iter_mut()
                .find(|w| w.pid.as_raw() as u32 == pid)
            {
                self.sources.remove(w.key, Place::Worker);
                w.key = NO_KEY;
            }
            self.counters.parked += 1;
            if self.stop.is_some() {
                drop(conn); // idle, and we are stopping: close it
                continue;
            }
            let meta = Meta {
                kind: Kind::Parked,
                ..meta
            };
            self.hand_to_gate(conn, meta, key);
        }
    }

    // -----------------------------------------------------------------------
    // Floods, logged at most once a second each

    pub(super) fn log_floods(&mut self, now: Instant) {
        let live = self.workers.len();
        if let Some((n, e)) = self.fork_failures.take(now) {
            crate::error!("fork failed {n} time(s) ({e}): answered 503; {live} workers live");
        }
        if let Some((n, (kind, e))) = self.shed.take(now) {
            crate::warn!(
                "the gate could not take {n} connection(s) ({e}; the last one {}): closed; {live} workers live",
                kind_name(kind)
            );
        }
        if let Some((n, (peer, why))) = self.proxy_refusals.take(now) {
            let from = peer.map_or_else(
                || "waiting in the gate".into(),
                |p| format!("from {}", host_of(&p)),
            );
            crate::warn!(
                "{n} connection(s) refused on a proxy_protocol listener; the last {from}: {why}"
            );
        }
        if let Some((n, peer)) = self.over_limit.take(now) {
            crate::warn!(
                "{n} connection(s) closed over max_connections_per_ip = {}; the last from {}",
                self.cfg.server.max_connections_per_ip,
                host_of(&peer)
            );
        }
    }
}

/// What a listener expects of a connection's first bytes.
enum Proxy {
    /// An HTTP request.
    Off,
    /// A PROXY header, and this peer may send one.
    On,
    /// A PROXY header, but this peer is not in `proxy_from`.
    Refused,
}

/// The gate's tally for connections handed over as `kind`.
fn held(g: &mut GateProc, kind: Kind) -> &mut usize {
    match kind {
        Kind::New | Kind::Proxy | Kind::Proxied => &mut g.new,
        Kind::Parked => &mut g.parked,
        Kind::Closing => &mut g.closing,
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::New | Kind::Proxy | Kind::Proxied => "new",
        Kind::Parked => "parked",
        Kind::Closing => "closing",
    }
}

/// A peer's host, without the port: the address the limit applies to.
fn host_of(p: &Peer) -> String {
    match p {
        Peer::Inet(a) => a.ip().to_canonical().to_string(),
        Peer::Unix => "unix".into(),
    }
}

/// The longest first line the gate waits for before a worker answers 414
/// (the worker's own rule, `http::request::read`).
pub(super) fn max_line_bytes(cfg: &crate::config::Config) -> usize {
    cfg.limits.max_uri_bytes + 32
}
