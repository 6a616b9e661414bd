//! Moving connections: from a listener (accept and one look), from workers
//! (parked), into a worker (fork) or into the gate (`gate_link`), and the
//! refusals on the way, each answered where a request came.

use super::gate_link::{Attached, Pending};
use super::sources::Place;
use super::workers::Worker;
use super::{Refused, Supervisor};
use crate::child;
use crate::gate::head;
use crate::handoff::{self, Kind, Meta, Msg, NO_KEY};
use crate::listen::Peer;
use crate::scoreboard::Sup;
use nix::errno::Errno;
use nix::unistd::ForkResult;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Most connections taken from one listener per wakeup, so signals and the
/// other listeners are not starved under a flood.
const BURST: usize = 64;
/// How long to stop accepting after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The supervisor's refusal (no worker could be forked, no room in the
/// gate), written without blocking. No `Date`: RFC 9110 makes it optional
/// for a 5xx, and the supervisor formats nothing per connection.
const RESPONSE_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 24\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable\n";
/// The same for a HEAD request: no body (RFC 9110 9.3.2).
const RESPONSE_503_HEAD: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 24\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";

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
            Proxy::Off => {
                let deferred = self.listeners[idx].deferred;
                self.admit(conn, peer, deferred)
            }
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
            Ok([]) => return, // closed before a word: a TCP health check
            Ok(bytes) => proxy::parse(bytes),
            Err(Errno::EAGAIN) => Ok(Parsed::Incomplete),
            Err(_) => return, // reset already
        };
        match parsed {
            Ok(Parsed::Incomplete) => {
                let meta = Meta {
                    peer,
                    served: 0,
                    kind: Kind::Proxy,
                    since_ms: crate::scoreboard::now_ms(),
                };
                self.hand_to_gate(Pending::plain(conn, meta, NO_KEY));
            }
            Err(e) => self.refuse_proxy(conn, Some(peer), e.0),
            Ok(Parsed::Done { consumed, source }) => {
                // The bytes are there: one read takes exactly the header.
                match crate::sys::discard(conn.as_raw_fd(), &mut buf[..consumed]) {
                    Ok(n) if n == consumed => {}
                    _ => return self.refuse_proxy(conn, Some(peer), "header not readable"),
                }
                self.admit(conn, source.map_or(peer, Peer::Inet), false);
            }
        }
    }

    /// Close a connection refused for its PROXY header (never answered: it
    /// did not come from a balancer allowed to speak for a client), counted
    /// and logged (at most once a second).
    pub(super) fn refuse_proxy(&mut self, conn: OwnedFd, peer: Option<Peer>, why: &'static str) {
        drop(conn);
        self.note_proxy_refused(peer, why);
    }

    pub(super) fn note_proxy_refused(&mut self, peer: Option<Peer>, why: &'static str) {
        self.counters.proxy_refused += 1;
        crate::scoreboard::add(Sup::RefusedProxy, 1);
        self.proxy_refusals.note((peer, why), Instant::now());
        self.status_dirty = true;
    }

    /// A new connection from `peer` (the client: after its PROXY header, if
    /// any). With a complete head (the usual case: `TCP_DEFER_ACCEPT` held
    /// it until data came) and a worker its source may have, it is forked
    /// now; otherwise it waits in the gate, if its source has not filled its
    /// share of the gate (then it is refused: a 503 if a request came).
    /// `deferred`: its listener has `TCP_DEFER_ACCEPT`, so nothing to read
    /// after the kernel held it until the deferral ran out means it has been
    /// silent for `header_timeout` already, since it connected: closed now
    /// (nothing to answer), not held for as long again. One completed by a
    /// SYN cookie (the SYN queue full, as under a flood of silent
    /// connections) was not held: it waits in the gate like any other.
    pub(super) fn admit(&mut self, conn: OwnedFd, peer: Peer, deferred: bool) {
        let key = handoff::source_key(&peer);
        let meta = Meta {
            peer,
            served: 0,
            kind: Kind::New,
            since_ms: crate::scoreboard::now_ms(),
        };
        let bounds = head::Bounds {
            max_header_bytes: self.cfg.limits.max_header_bytes,
            max_line_bytes: max_line_bytes(&self.cfg),
        };
        let buf = &mut self.peek.spare()[..bounds.max_header_bytes];
        let complete = match crate::sys::peek(conn.as_raw_fd(), buf) {
            Ok([]) => return, // already closed: nothing to serve
            Ok(bytes) => head::complete(bytes, 0, bounds),
            // Held by TCP_DEFER_ACCEPT until it ran out: silent for that long.
            // (One that a SYN cookie completed has not waited: to the gate.)
            Err(Errno::EAGAIN) if deferred && crate::sys::syn_ack_resent(conn.as_raw_fd()) => {
                return;
            }
            Err(Errno::EAGAIN) => false,
            Err(_) => return, // reset already
        };
        let reserve = self.cfg.server.worker_reserve;
        let p = Pending::plain(conn, meta, key);
        if complete && self.sources.may_take(key, self.free_workers(), reserve) {
            return self.fork_worker(p);
        }
        if self.sources.in_gate(key) as usize >= self.pending_per_source {
            return self.refuse(p.conn, peer, Refused::SourceShare);
        }
        self.hand_to_gate(p);
    }

    /// Workers free now: not live, nor promised to a request the gate is
    /// sending.
    pub(super) fn free_workers(&self) -> usize {
        self.cfg
            .server
            .max_connections
            .saturating_sub(self.workers.len() + self.link.sends())
    }

    // -----------------------------------------------------------------------
    // Into a worker, into the gate, or refused

    /// Fork a worker for a connection with a complete head (and its body,
    /// when the gate received it: `Kind::Bodied`).
    pub(super) fn fork_worker(&mut self, p: Pending) {
        let Pending {
            conn,
            meta,
            key,
            body,
        } = p;
        // A scoreboard slot: one a worker left, or the next never used.
        let slot = self.workers.next_slot();
        crate::scoreboard::assign(slot as usize, meta.peer, meta.served);
        crate::sandbox::follow_paths(); // a root a deploy swapped: new rules
                                        // SAFETY: lbaws is single-threaded, so the child is a complete copy.
        match crate::sys::fork() {
            Ok(ForkResult::Child) => {
                let inherited = child::Inherited {
                    slot: slot as usize,
                    logs: self.log_fds,
                    stop_reader: self.stop_reader.as_fd(),
                    park: (self.link.is_up() && self.stop.is_none()).then(|| self.park_tx.as_fd()),
                    stopping: self.stop.is_some(),
                };
                let body = body.map(|a| (a.file, a.spec));
                child::run(conn, meta, body, &self.cfg, inherited)
            }
            Ok(ForkResult::Parent { child }) => {
                drop((conn, body)); // the worker has its own copies
                crate::scoreboard::set_pid(slot as usize, child.as_raw() as u32);
                self.sources.add(key, Place::Worker);
                self.workers.forked(Worker {
                    pid: child,
                    peer: meta.peer,
                    started: Instant::now(),
                    key,
                    slot,
                    stalled: None,
                });
                self.status_dirty = true;
            }
            Err(e) => {
                // Answer without waiting, then let the gate close it
                // gracefully (its request is unread: a plain close would
                // reset the connection and could destroy the 503).
                let _ = crate::sys::send_nowait(conn.as_raw_fd(), RESPONSE_503);
                let _ =
                    nix::sys::socket::shutdown(conn.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                crate::scoreboard::add(Sup::RefusedNoWorker, 1);
                self.status_dirty = true;
                self.fork_failures.note(e, Instant::now());
                let closing = Meta {
                    kind: Kind::Closing,
                    since_ms: crate::scoreboard::now_ms(),
                    ..meta
                };
                self.hand_to_gate(Pending::plain(conn, closing, key));
            }
        }
    }

    /// Give a connection to the gate (counted under its source there), or
    /// refuse it if the gate cannot take it. During the hand-over of an
    /// upgrade in place it is carried to the next image instead.
    pub(super) fn hand_to_gate(&mut self, p: Pending) {
        if self.handing_over() {
            return self.carry(p);
        }
        self.status_dirty = true;
        self.sources.add(p.key, Place::Gate);
        if let Err(p) = self.link.hand(p) {
            self.lost(p);
        }
    }

    /// A connection that was meant for the gate and did not get there (no
    /// gate, the link full or broken, or the gate could not take it).
    pub(super) fn lost(&mut self, p: Pending) {
        self.sources.remove(p.key, Place::Gate);
        if p.meta.kind == Kind::Closing {
            return; // answered already
        }
        self.refuse(p.conn, p.meta.peer, Refused::GateFull);
    }

    /// Refuse a connection: a 503 if anything has arrived on it (a request
    /// or the start of one), then what has arrived is read (so that the
    /// close is not a reset that destroys the answer), then the close.
    /// Counted, and logged at most once a second.
    pub(super) fn refuse(&mut self, conn: OwnedFd, peer: Peer, why: Refused) {
        let fd = conn.as_raw_fd();
        let scratch = self.peek.spare();
        let look = 64.min(scratch.len());
        if let Ok(bytes @ [_, ..]) = crate::sys::peek(fd, &mut scratch[..look]) {
            let answer = match lbaws::proto::head::begins_head_request(bytes) {
                true => RESPONSE_503_HEAD,
                false => RESPONSE_503,
            };
            let _ = crate::sys::send_nowait(fd, answer);
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
            for _ in 0..4 {
                match crate::sys::discard(fd, scratch) {
                    Ok(n) if n > 0 => continue,
                    _ => break,
                }
            }
        }
        drop(conn);
        let what = match why {
            Refused::SourceShare => Sup::RefusedPerSource,
            Refused::GateFull => Sup::RefusedGateFull,
        };
        crate::scoreboard::add(what, 1);
        self.refusals.note((why, peer), Instant::now());
        self.status_dirty = true;
    }

    // -----------------------------------------------------------------------
    // From workers

    /// Idle keep-alive connections handed back by workers: to the gate, to
    /// wait for their next request (or closed, when stopping).
    pub(super) fn take_parked(&mut self) {
        loop {
            let mut buf = [0u8; handoff::CONN_MSG];
            let (n, [fd, file, file2]) =
                match crate::sys::recv_with_fds(self.park_rx.as_fd(), &mut buf) {
                    Ok((0, _)) | Err(Errno::EAGAIN) => return,
                    Ok(r) => r,
                    Err(e) => {
                        crate::error!("receiving a parked connection: {e}");
                        return;
                    }
                };
            let decoded = handoff::decode(&buf[..n]);
            let Some(Msg::Park { pid, meta, body }) = decoded else {
                crate::error!("unexpected message on the park channel");
                continue;
            };
            // The connection leaves its worker: that worker's end no longer
            // ends a connection.
            if let Some(key) = self.workers.parked(pid) {
                self.sources.remove(key, Place::Worker);
            }
            let (Some(conn), true) = (fd, body.is_none() || file.is_some()) else {
                crate::error!(
                    "a parked connection (from {}) could not be received (descriptor limit?): lost",
                    meta.peer
                );
                continue;
            };
            let key = handoff::source_key(&meta.peer);
            let p = Pending {
                conn,
                meta,
                key,
                body: Attached::of(body, file, file2),
            };
            if matches!(meta.kind, Kind::Body | Kind::Tail) {
                // Its body is coming (the gate receives it, then it waits
                // for a worker again), or the rest of its response is going
                // (the gate sends it, then parks or closes the connection).
                if self.stop.is_some() {
                    self.refuse(p.conn, meta.peer, Refused::GateFull);
                } else {
                    self.hand_to_gate(p);
                }
                continue;
            }
            crate::scoreboard::add(Sup::Parks, 1);
            self.counters.parked += 1;
            if self.stop.is_some() {
                continue; // idle, and we are stopping: close it
            }
            let p = Pending {
                meta: Meta {
                    kind: Kind::Parked,
                    ..meta
                },
                ..p
            };
            self.hand_to_gate(p);
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

/// The longest first line the gate waits for before a worker answers 414
/// (the worker's own rule, `http::request::read`).
pub(super) fn max_line_bytes(cfg: &crate::config::Config) -> usize {
    cfg.limits.max_uri_bytes + 32
}
