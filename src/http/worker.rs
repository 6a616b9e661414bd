//! The worker's keep-alive loop: one forked process owns one connection while
//! it has requests in flight, and answers them in order.
//!
//! ```text
//!   loop: wait for a request -> read the head -> refuse it (4xx/5xx,
//!         Connection: close, close) or: route -> [CGI: read the body]
//!         -> respond [others: the body is not waited for; a small one is
//!         dropped after the answer, else the connection closes]
//!         -> access log line -> close, or go round again
//! ```
//!
//! Where a worker can wait, and for how long (invariant 8):
//!
//! | wait | deadline | then |
//! |---|---|---|
//! | the first request's head (usually there already: the supervisor forked for it) | `header_timeout` from the start | 408, or a quiet close if nothing came |
//! | the next request, on a keep-alive connection | `park_after` (none while requests wait for a worker: connections take turns) | the connection is *parked*: handed back to the supervisor (`SCM_RIGHTS`), which keeps it in the gate; the worker exits |
//! | the next request, without a park channel (`--inetd`, gate down, stopping) | `keepalive_timeout`, or the stop pipe | quiet close |
//! | a later request's head, once begun | `header_timeout` | 408 |
//! | a request body | `body_timeout` between bytes, `min_body_rate` on average | 408 |
//! | a response write | `body_timeout` between progress, `min_send_rate` on average | close |
//! | the graceful close | 2 s | close |
//! | a CGI script's header (`cgi/running.rs`), its stdout open or closed | the route's `timeout` | SIGTERM to its group, SIGKILL 2 s later, 504 (502 if it exits first) |
//! | a CGI script's body | `body_timeout` between output (or the route's `timeout`, if longer) | the same, and the response is cut |
//! | a script's exit once its output has ended (killed: the response is cut) | 2 s | SIGKILL to its group |
//! | descendants a script left (they come back to the worker, a subreaper) | SIGTERM, 2 s | SIGKILL, reaped |
//!
//! When to park was measured (`bench/run`, keep-alive, and `bench/hostile`):
//! parking at once costs a busy keep-alive connection a fork per request
//! (wrk's next request is rarely there the instant the response has left),
//! while a short wait keeps busy connections in their worker at full speed
//! and still frees the worker of an idle one within `park_after` (100 ms by
//! default). The wait is a single blocking `recv` (`SO_RCVTIMEO`), not a
//! `poll` and a `recv`: a keep-alive request costs one system call less.

use super::access::{log_access, log_cut, log_site};
use super::body;
use super::conn::{Conn, Pace, ReadErr};
use super::dispatch;
use super::request::{self, Framing, Refusal, Request};
use super::response::{self, Face, Persist, Sent};
use super::static_file::RootCache;
use super::{EXIT_IOERR, EXIT_OK};
use crate::config::{Action, Config, Hit};
use crate::handoff::{self, Kind, Meta, Msg};
use crate::listen::Peer;
use crate::scoreboard::{self, State, Sup};
use nix::errno::Errno;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

/// A body this small is read and dropped after an answer that did not need
/// it, and the connection kept; a larger one (or one of unknown length)
/// closes the connection instead.
const DRAIN_MAX: u64 = 64 << 10;

/// What a worker gets from whoever started it.
#[derive(Default)]
pub struct Ctx<'a> {
    /// The supervisor's stop pipe (read end), watched while idle.
    pub stop: Option<BorrowedFd<'a>>,
    /// Where to hand the connection back while it is idle.
    pub park: Option<BorrowedFd<'a>>,
    /// Requests answered on this connection before this worker.
    pub served: u32,
    /// The supervisor is stopping: this is the connection's last request.
    pub stopping: bool,
}

/// One worker's connection.
struct Session<'c, 'a> {
    conn: &'c mut Conn<'a>,
    peer: Peer,
    cfg: &'c Config,
    park: Option<BorrowedFd<'a>>,
    started: Instant,
    /// Requests answered on the connection, by earlier workers too.
    served: u64,
    /// Requests answered by this worker.
    handled: u64,
    roots: RootCache,
}

enum Next {
    Request,
    Close,
    /// Handed back to the supervisor: exit.
    Parked,
}

/// Serve the connection; the result is the worker's exit code.
pub fn serve(fd: &OwnedFd, peer: Peer, cfg: &Config, ctx: Ctx<'_>) -> i32 {
    // A client that stops reading cannot hold a worker for ever: sends block
    // at most SEND_TICK (SO_SNDTIMEO, from the listener; in --inetd mode set
    // on the connection itself) and then check the response's progress.
    let send_pace = Pace {
        stall: cfg.limits.body_timeout,
        rate: cfg.limits.min_send_rate,
    };
    let mut conn = Conn::new(fd, peer, ctx.stop, send_pace);
    conn.stopping = ctx.stopping;
    let mut s = Session {
        conn: &mut conn,
        peer,
        cfg,
        park: ctx.park,
        started: Instant::now(),
        served: ctx.served as u64,
        handled: 0,
        roots: RootCache::default(),
    };
    loop {
        // Each request's allocations go back to the worker's arena after it.
        crate::alloc::mark();
        let step = s.one_request();
        crate::alloc::release();
        if let Some(code) = step {
            return code;
        }
    }
}

impl Session<'_, '_> {
    /// Wait for, read and answer one request; `Some(exit code)` ends the worker.
    fn one_request(&mut self) -> Option<i32> {
        match self.wait_for_request() {
            Next::Request => {}
            Next::Close | Next::Parked => return Some(EXIT_OK),
        }
        scoreboard::begin_request();
        let limits = &self.cfg.limits;
        let head_deadline = if self.handled == 0 {
            self.started
        } else {
            Instant::now()
        } + limits.header_timeout;
        let req = match request::read(self.conn, limits, head_deadline) {
            Ok(r) => r,
            Err(Refusal::Quiet) | Err(Refusal::Stopping) => return Some(EXIT_OK),
            Err(Refusal::Io(e)) => return Some(io_exit(e)),
            Err(Refusal::Status(status)) => {
                crate::debug!("{}: request refused with {status}", self.peer);
                return Some(self.refuse(None, status));
            }
        };
        self.conn.consume(req.head_len);
        let version: &[u8] = if req.version == 0 {
            b"HTTP/1.0"
        } else {
            b"HTTP/1.1"
        };
        scoreboard::request_line(&[req.method.as_bytes(), req.target.as_bytes(), version]);
        self.served += 1;
        self.handled += 1;
        // The site the host names (else the default), and its route.
        let hit = self.cfg.pick(req.host.as_deref(), &req.path);
        scoreboard::set_site(hit.site.row);
        let route = hit.route;
        // A route the peer may not use answers 403 without its body.
        let allowed = route.is_none_or(|r| dispatch::allowed(r, self.peer));
        if allowed && matches!(route.map(|r| &r.action), Some(Action::Cgi(_))) {
            self.with_body(&req, hit)
        } else {
            self.without_body(&req, hit)
        }
    }

    /// The next request has arrived (`Request`), or the connection ends here.
    fn wait_for_request(&mut self) -> Next {
        if !self.conn.buffered().is_empty() {
            return Next::Request; // pipelined, or the rest of a head
        }
        let limits = &self.cfg.limits;
        if self.handled == 0 {
            // Forked for a complete head (or --inetd): it is usually there.
            match self.conn.read_available() {
                Ok(0) => {}
                Ok(_) => return Next::Request,
                Err(_) => return Next::Close,
            }
            let deadline = self.started + limits.header_timeout;
            return match self.conn.wait_readable(deadline, true) {
                Ok(()) => Next::Request,
                Err(_) => Next::Close, // timeout, stop or closed: close quietly
            };
        }
        if self.conn.stopping {
            return Next::Close; // the supervisor is stopping: no next request
        }
        scoreboard::set_state(State::KeepAlive);
        let idle_since = Instant::now();
        if self.park.is_some()
            && !self.conn.stopping
            && limits.park_after < limits.keepalive_timeout
        {
            // Requests wait for a worker: this connection takes its turn
            // in the gate now, rather than keep a worker others need.
            if scoreboard::get(Sup::Queued) > 0 && self.hand_back() {
                scoreboard::add(Sup::Turns, 1);
                return Next::Parked;
            }
            match self.conn.recv_idle(limits.park_after) {
                Ok(_) => return Next::Request,
                Err(ReadErr::Timeout) => {
                    if self.hand_back() {
                        return Next::Parked;
                    }
                }
                Err(_) => return Next::Close,
            }
        }
        // No parking: wait here for the rest of keepalive_timeout.
        match self
            .conn
            .wait_readable(idle_since + limits.keepalive_timeout, true)
        {
            Ok(()) => Next::Request,
            Err(_) => Next::Close,
        }
    }

    /// Park: send the idle connection to the supervisor. False if it could
    /// not be sent (the worker then keeps it).
    fn hand_back(&mut self) -> bool {
        let Some(park) = self.park else {
            return false;
        };
        let meta = Meta {
            peer: self.peer,
            served: self.served.min(u32::MAX as u64) as u32,
            kind: Kind::Parked,
            since_ms: scoreboard::now_ms(),
        };
        let msg = Msg::Park {
            pid: std::process::id(),
            meta,
        };
        let mut buf = [0u8; 64];
        let n = handoff::encode(&msg, &mut buf);
        match crate::sys::send_with_fd(park, &buf[..n], Some(self.conn.raw_fd())) {
            Ok(()) => true,
            Err(e) => {
                crate::debug!("{}: cannot park ({e}); keeping the connection", self.peer);
                self.park = None;
                false
            }
        }
    }

    /// How the connection continues after this response.
    fn persist(&self, req: &Request, can_keep: bool) -> Persist {
        let keep = can_keep
            && req.keep_alive
            && !self.conn.stopping
            && self.served < self.cfg.limits.max_requests_per_connection;
        if keep {
            Persist::KeepAlive {
                http10: req.version == 0,
            }
        } else {
            Persist::Close
        }
    }

    /// A request whose answer depends on its body (CGI): read the body (into
    /// a memfd, for the script's stdin), then answer.
    fn with_body(&mut self, req: &Request, hit: Hit<'_>) -> Option<i32> {
        let mut body_fd: Option<(OwnedFd, u64)> = None;
        if req.framing != Framing::None {
            if req.expect_continue {
                self.conn.start_response();
                if let Err(e) = self.conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", false) {
                    return Some(io_exit(e));
                }
            }
            scoreboard::set_state(State::Body);
            // In memory up to [limits] cgi_body_in_memory, then in an
            // unlinked file in [server] temp_dir (cgi/spool.rs).
            let cfg = self.cfg;
            let mut spool =
                super::cgi::spool::Spool::new(cfg.limits.cgi_body_in_memory, &cfg.server.temp_dir);
            let mut sink = |data: &[u8]| spool.write(data);
            match body::read(
                self.conn,
                req.framing,
                self.cfg.limits.max_body_bytes,
                self.body_pace(),
                &mut sink,
            ) {
                Ok(_) => match spool.finish() {
                    Ok(body) => body_fd = Some(body),
                    Err(e) => {
                        crate::error!("request body: {e}");
                        return Some(self.body_failed(req, body::BodyErr::Sink));
                    }
                },
                Err(e) => return Some(self.body_failed(req, e)),
            }
        }
        let persist = self.persist(req, true);
        self.answer(req, hit, persist, body_fd)
    }

    /// A request whose answer does not depend on its body (everything but
    /// CGI): answer at once, without waiting for a body; then drop a small
    /// body and keep the connection, or close it.
    fn without_body(&mut self, req: &Request, hit: Hit<'_>) -> Option<i32> {
        let drain = match req.framing {
            Framing::None => Some(0),
            // With `Expect: 100-continue` and no 100 sent, the client may
            // never send the body: what follows could not be told from it.
            Framing::Length(n) if n <= DRAIN_MAX && !req.expect_continue => Some(n),
            _ => None,
        };
        let persist = self.persist(req, drain.is_some());
        let code = self.answer(req, hit, persist, None);
        if code.is_some() || req.framing == Framing::None {
            return code;
        }
        // Kept: the small body is still to come off the connection.
        let mut drop_it = |_: &[u8]| true;
        match body::read(
            self.conn,
            req.framing,
            DRAIN_MAX,
            self.body_pace(),
            &mut drop_it,
        ) {
            Ok(_) => None,
            Err(e) => {
                if let body::BodyErr::Slow(_) = e {
                    crate::info!("{}: body not sent after the answer: closing", self.peer);
                }
                Some(EXIT_OK)
            }
        }
    }

    /// Answer (following CGI local redirects) and log; `Some` ends the worker.
    fn answer(
        &mut self,
        req: &Request,
        hit: Hit<'_>,
        persist: Persist,
        body: Option<(OwnedFd, u64)>,
    ) -> Option<i32> {
        scoreboard::set_state(State::Write);
        self.conn.start_response();
        let result = dispatch::respond(
            self.conn,
            req,
            hit,
            self.cfg,
            persist,
            self.peer,
            body,
            &self.roots,
        );
        let close = match result {
            Ok((sent, _)) if self.conn.is_cut() => {
                // Its source died or stalled mid-body: the response ends
                // short (no last chunk, fewer bytes than its length, or a
                // reset), and the connection with it, at once.
                log_cut(self.peer, Some(req), Some(hit.site), sent);
                return Some(EXIT_OK);
            }
            Ok((sent, close)) => {
                log_site(self.peer, Some(req), Some(hit.site), sent);
                close
            }
            Err(e) => {
                // Cut short (the client left, or was too slow): logged with
                // the status and the body bytes that did go out.
                if let Some((status, body_bytes)) = self.conn.cut_short() {
                    log_cut(
                        self.peer,
                        Some(req),
                        Some(hit.site),
                        Sent { status, body_bytes },
                    );
                }
                return Some(io_exit(e));
            }
        };
        if persist == Persist::Close || close {
            if self.conn.has_pending_input() {
                self.conn.close_gracefully();
            }
            return Some(EXIT_OK);
        }
        None
    }

    fn body_pace(&self) -> Pace {
        Pace {
            stall: self.cfg.limits.body_timeout,
            rate: self.cfg.limits.min_body_rate,
        }
    }

    /// The body could not be read: its status (408/400/413/500), or a quiet end.
    fn body_failed(&mut self, req: &Request, e: body::BodyErr) -> i32 {
        if let body::BodyErr::Slow(why) = e {
            let limits = &self.cfg.limits;
            match why {
                super::conn::Slow::Stalled => crate::info!(
                    "{}: request body stalled for {:?} (body_timeout): 408",
                    self.peer,
                    limits.body_timeout
                ),
                super::conn::Slow::BelowRate(r) => crate::info!(
                    "{}: request body at {r} B/s, below min_body_rate {}: 408",
                    self.peer,
                    limits.min_body_rate
                ),
            }
        }
        match e.status().or((e == body::BodyErr::Sink).then_some(500)) {
            Some(status) => self.refuse(Some(req), status),
            None => EXIT_OK,
        }
    }

    /// Refuse with `status`, `Connection: close`, and close gracefully.
    fn refuse(&mut self, req: Option<&Request>, status: u16) -> i32 {
        self.conn.start_response();
        // A HEAD request's answer has no body, refusals included, even when
        // the head was refused before it parsed.
        let head_only = match req {
            Some(r) => r.is_head(),
            None => request::begins_head_request(self.conn.buffered()),
        };
        let sent = response::error(
            self.conn,
            status,
            Face::plain(self.cfg.server.server_header),
            head_only,
            Persist::Close,
        );
        log_access(self.peer, req, sent.unwrap_or_default());
        self.conn.close_gracefully();
        EXIT_OK
    }
}

/// The client going away is a normal end; anything else is an I/O error.
fn io_exit(e: Errno) -> i32 {
    match e {
        Errno::EPIPE | Errno::ECONNRESET | Errno::ETIMEDOUT | Errno::EAGAIN => EXIT_OK,
        _ => EXIT_IOERR,
    }
}
