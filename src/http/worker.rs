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
use crate::config::{Action, Config, Hit, Route, SiteLog};
use crate::handoff::{self, BodySpec, Kind, Meta, Msg};
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
    /// The first request, kept by the gate while its body came: the file
    /// holds the head, then the body.
    pub prepared: Option<(OwnedFd, BodySpec)>,
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
    /// The first request's body, received by the gate: a file positioned
    /// where the body starts, and its length.
    prepared: Option<(OwnedFd, u64)>,
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
    let prepared = match ctx.prepared {
        Some((file, spec)) => match prepare(&mut conn, file, spec) {
            Ok(body) => Some(body),
            Err(e) => {
                crate::error!("{peer}: the request the gate kept: {e}");
                return EXIT_IOERR;
            }
        },
        None => None,
    };
    let mut s = Session {
        conn: &mut conn,
        peer,
        cfg,
        park: ctx.park,
        started: Instant::now(),
        served: ctx.served as u64,
        handled: 0,
        roots: RootCache::default(),
        prepared,
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
        // The site the host names (else the default), and its route.
        let hit = self.cfg.pick(req.host.as_deref(), &req.path);
        scoreboard::set_site(hit.site.row);
        let route = hit.route;
        // A route the peer may not use answers 403 without its body.
        let allowed = route.is_none_or(|r| dispatch::allowed(r, self.peer));
        let cgi = allowed && matches!(route.map(|r| &r.action), Some(Action::Cgi(_)));
        if cgi && self.hand_off_body(&req, route) {
            return Some(EXIT_OK); // the gate receives the body
        }
        let mut req = req;
        if !cgi && self.prepared.take().is_some() {
            // The gate received a body for a route that (after a reload)
            // no longer wants it: it is not on the connection any more.
            req.framing = Framing::None;
        }
        self.conn.consume(req.head_len);
        scoreboard::request_line(&[req.method.as_bytes(), req.target.as_bytes(), req.protocol()]);
        self.served += 1;
        self.handled += 1;
        if cgi {
            self.with_body(&req, hit)
        } else {
            self.without_body(&req, hit)
        }
    }

    /// A CGI route's body that has not all come yet goes to the gate to be
    /// received there (at no process's cost): the connection, and a file
    /// with the head and the body's first bytes as they came, go back to
    /// the supervisor; a worker starts again when the body is whole. True
    /// if handed off (this worker is done); false to read it here (the
    /// route's `buffer_body = false`, a body that is here whole already, a
    /// body the worker refuses anyway, no park channel, or a failure).
    fn hand_off_body(&mut self, req: &Request, route: Option<&Route>) -> bool {
        let Some(Action::Cgi(c)) = route.map(|r| &r.action) else {
            return false;
        };
        let Some(park) = self.park else {
            return false;
        };
        let max = self.cfg.limits.max_body_bytes;
        let first = &self.conn.buffered()[req.head_len..];
        if !c.buffer_body
            || self.prepared.is_some()
            || self.conn.stopping
            || body::here_whole(first, req.framing, max)
        {
            return false;
        }
        if req.expect_continue {
            self.conn.start_response();
            if self
                .conn
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n", false)
                .is_err()
            {
                return false;
            }
        }
        let spec = BodySpec {
            head_len: req.head_len as u32,
            raw_len: first.len() as u32,
            chunked: req.framing == Framing::Chunked,
            length: match req.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            ..Default::default()
        };
        let file = match keep_in_file(self.conn.buffered()) {
            Ok(f) => f,
            Err(e) => {
                crate::debug!("{}: cannot hand the body to the gate ({e})", self.peer);
                return false;
            }
        };
        use std::os::fd::AsRawFd as _;
        match self.send_park(park, Kind::Body, Some(spec), &[file.as_raw_fd()]) {
            Ok(()) => true,
            Err(e) => {
                crate::debug!("{}: cannot hand the body to the gate ({e})", self.peer);
                false
            }
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

    /// Send the connection to the supervisor (for the gate) as `kind`, with
    /// `files` and their `body` spec after it.
    fn send_park(
        &self,
        park: std::os::fd::BorrowedFd<'_>,
        kind: Kind,
        body: Option<BodySpec>,
        files: &[std::os::fd::RawFd],
    ) -> Result<(), Errno> {
        let msg = Msg::Park {
            pid: std::process::id(),
            meta: Meta {
                peer: self.peer,
                served: self.served.min(u32::MAX as u64) as u32,
                kind,
                since_ms: scoreboard::now_ms(),
            },
            body,
        };
        let mut buf = [0u8; handoff::CONN_MSG];
        let n = handoff::encode(&msg, &mut buf);
        let mut fds = [self.conn.raw_fd(); 3];
        fds[1..1 + files.len()].copy_from_slice(files);
        crate::sys::send_with_fds(park, &buf[..n], &fds[..1 + files.len()])
    }

    /// Park: send the idle connection to the supervisor. False if it could
    /// not be sent (the worker then keeps it).
    fn hand_back(&mut self) -> bool {
        let Some(park) = self.park else {
            return false;
        };
        match self.send_park(park, Kind::Parked, None, &[]) {
            Ok(()) => true,
            Err(e) => {
                crate::debug!("{}: cannot park ({e}); keeping the connection", self.peer);
                self.park = None;
                false
            }
        }
    }

    /// The rest of a file response to a slow reader goes to the gate
    /// (`gate/tail.rs`), with what the access line needs: `None`, the
    /// worker is done. If it cannot be handed over, the worker sends it
    /// (`Some`: how that went).
    fn hand_off_tail(
        &mut self,
        req: &Request,
        hit: Hit<'_>,
        persist: Persist,
    ) -> Option<Result<(), Errno>> {
        let Some((file, offset, left)) = self.conn.take_tail() else {
            return Some(Err(Errno::EIO));
        };
        let (Some(park), Some((status, sent))) = (self.park, self.conn.response_so_far()) else {
            return self.send_rest(file, offset, left);
        };
        let dest = match hit.site.access {
            SiteLog::Main => String::new(),
            SiteLog::Off => "off".into(),
            SiteLog::File(i) => i.to_string(),
        };
        let log = handoff::TailLog::encode([
            super::access::client(self.peer).as_bytes(),
            req.method.as_bytes(),
            req.target.as_bytes(),
            req.protocol(),
            req.header("referer").unwrap_or(b""),
            req.header("user-agent").unwrap_or(b""),
            req.host.as_deref().unwrap_or("").as_bytes(),
            hit.site.label.as_bytes(),
            dest.as_bytes(),
            hit.site.row.to_string().as_bytes(),
            scoreboard::began_us().to_string().as_bytes(),
        ]);
        let Ok(log) = keep_in_file(&log) else {
            return self.send_rest(file, offset, left);
        };
        let keep_alive = persist != Persist::Close && !self.conn.has_pending_input();
        let spec = BodySpec {
            offset: offset as u64,
            length: left,
            sent,
            status,
            keep_alive,
            ..Default::default()
        };
        use std::os::fd::AsRawFd as _;
        let files = [file.as_raw_fd(), log.as_raw_fd()];
        match self.send_park(park, Kind::Tail, Some(spec), &files) {
            Ok(()) => None,
            Err(e) => {
                crate::debug!("{}: cannot hand the response to the gate ({e})", self.peer);
                self.send_rest(file, offset, left)
            }
        }
    }

    /// Send the rest of a response here after all.
    fn send_rest(&mut self, file: OwnedFd, offset: i64, left: u64) -> Option<Result<(), Errno>> {
        self.conn.tail_ok.set(false);
        Some(self.conn.sendfile(&file, offset, left))
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
        let mut body_fd: Option<(OwnedFd, u64)> = self.prepared.take();
        if body_fd.is_none() && req.framing != Framing::None {
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
        // A file a client reads slowly may be finished by the gate.
        self.conn
            .tail_ok
            .set(self.park.is_some() && !self.conn.stopping);
        let result = match dispatch::respond(
            self.conn,
            req,
            hit,
            self.cfg,
            persist,
            self.peer,
            body,
            &self.roots,
        ) {
            // A file a client reads slowly: the gate sends the rest (this
            // worker is done), or, if it cannot take it, the worker does.
            Err(Errno::EINPROGRESS) => match self.hand_off_tail(req, hit, persist) {
                // The gate has it, and writes its access line: this worker
                // lets go of the connection.
                None => return Some(EXIT_OK),
                Some(Ok(())) => {
                    self.conn
                        .response_so_far()
                        .map_or(Err(Errno::EIO), |(status, b)| {
                            Ok((
                                Sent {
                                    status,
                                    body_bytes: b,
                                },
                                self.roots.close_after.get(),
                            ))
                        })
                }
                Some(Err(e)) => Err(e),
            },
            r => r,
        };
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
            body::log_slow(self.peer, why, self.body_pace());
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

/// The request the gate kept: its head into the connection's buffer (read
/// as if it had just come), its body as the file positioned where the body
/// starts, and the body's length.
fn prepare(conn: &mut Conn<'_>, file: OwnedFd, spec: BodySpec) -> Result<(OwnedFd, u64), Errno> {
    let mut head = vec![0u8; spec.head_len as usize];
    let n = nix::sys::uio::pread(&file, &mut head, 0)?;
    if n != head.len() {
        return Err(Errno::EIO);
    }
    conn.preload(&head);
    nix::unistd::lseek(&file, spec.head_len as i64, nix::unistd::Whence::SeekSet)?;
    Ok((file, spec.length))
}

/// A memfd holding `bytes` (what came of a request so far).
fn keep_in_file(bytes: &[u8]) -> Result<OwnedFd, Errno> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let file = memfd_create(c"lbaws-request", MFdFlags::MFD_CLOEXEC)?;
    let mut rest = bytes;
    while !rest.is_empty() {
        match nix::unistd::write(&file, rest) {
            Ok(0) => return Err(Errno::ENOSPC),
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(file)
}

/// The client going away is a normal end; anything else is an I/O error.
fn io_exit(e: Errno) -> i32 {
    match e {
        Errno::EPIPE | Errno::ECONNRESET | Errno::ETIMEDOUT | Errno::EAGAIN => EXIT_OK,
        _ => EXIT_IOERR,
    }
}
