//! The worker's keep-alive loop: one forked process owns one connection for
//! its whole life and answers its requests in order.
//!
//! ```text
//!   loop: wait for a request (header_timeout for the first, keepalive_timeout
//!         between requests, or until the supervisor stops) -> read the head ->
//!         refuse it (4xx/5xx, Connection: close, close) or: read/discard its
//!         body -> route (longest prefix) -> respond -> access log line ->
//!         close, or go round again
//! ```

use super::body;
use super::cgi::{self, CgiRequest, Outcome};
use super::conn::Conn;
use super::request::{self, Framing, Refusal, Request};
use super::response::{self, Head, Persist, Sent};
use super::static_file::{self, Ctx, RootCache};
use super::{EXIT_IOERR, EXIT_OK};
use crate::config::{Action, Config, Route};
use crate::listen::Peer;
use nix::errno::Errno;
use std::fmt::Write as _;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

/// Serve the connection; the result is the worker's exit code.
pub fn serve(fd: &OwnedFd, peer: Peer, cfg: &Config, stop: Option<BorrowedFd<'_>>) -> i32 {
    // A client that stops reading cannot hold a worker for ever: the socket's
    // SO_SNDTIMEO (body_timeout) came with it from the listener (set by
    // listen::set_send_timeout; in --inetd mode, on the connection itself).

    let mut conn = Conn::new(fd, stop);
    let started = Instant::now();
    let mut served: u64 = 0;
    let roots = RootCache::default();
    loop {
        // Each request's allocations go back to the worker's arena after it.
        crate::alloc::mark();
        let step = one_request(&mut conn, peer, cfg, started, &mut served, &roots);
        crate::alloc::release();
        if let Some(code) = step {
            return code;
        }
    }
}

/// Wait for, read and answer one request; `Some(exit code)` ends the worker.
fn one_request(
    conn: &mut Conn<'_>,
    peer: Peer,
    cfg: &Config,
    started: Instant,
    served: &mut u64,
    roots: &RootCache,
) -> Option<i32> {
    let limits = &cfg.limits;
    let served_before = *served;
    {
        // Wait for the first byte: the first request has header_timeout from
        // the connection's start, later ones keepalive_timeout of idleness.
        let idle_deadline = if served_before == 0 {
            started + limits.header_timeout
        } else {
            Instant::now() + limits.keepalive_timeout
        };
        // A new connection's request is usually there already: try to read it
        // before polling. Between keep-alive requests the next one comes only
        // after our response, so poll straight away.
        let arrived = match (conn.buffered().is_empty(), served_before) {
            (false, _) => Ok(1),
            (true, 0) => conn.read_available(),
            (true, _) => Ok(0),
        };
        match arrived {
            Ok(0) => {
                if conn.wait_readable(idle_deadline, true).is_err() {
                    return Some(EXIT_OK); // idle timeout, stop, or closed: close quietly
                }
            }
            Ok(_) => {}
            Err(_) => return Some(EXIT_OK),
        }
        let head_deadline = if served_before == 0 {
            started
        } else {
            Instant::now()
        } + limits.header_timeout;
        let req = match request::read(conn, limits, head_deadline) {
            Ok(r) => r,
            Err(Refusal::Quiet) | Err(Refusal::Stopping) => return Some(EXIT_OK),
            Err(Refusal::Io(e)) => return Some(io_exit(e)),
            Err(Refusal::Status(status)) => {
                crate::debug!("{peer}: request refused with {status}");
                let sent = response::error(
                    conn,
                    status,
                    cfg.server.server_header,
                    false,
                    Persist::Close,
                );
                log_access(peer, None, sent.unwrap_or_default());
                conn.close_gracefully();
                return Some(EXIT_OK);
            }
        };
        conn.consume(req.head_len);
        *served += 1;

        // Body first: it must be off the connection before the next request.
        // A CGI script gets it (decoded) in a memfd; anything else drops it.
        let route = cfg.route(&req.path);
        let for_cgi = matches!(route.map(|r| &r.action), Some(Action::Cgi(_)));
        let mut body_fd: Option<(OwnedFd, u64)> = None;
        if req.framing != Framing::None {
            if req.expect_continue {
                if let Err(e) = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", false) {
                    return Some(io_exit(e));
                }
            }
            let deadline = Instant::now() + limits.body_timeout;
            let store = if for_cgi {
                match nix::sys::memfd::memfd_create(
                    c"lbaws-body",
                    nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                ) {
                    Ok(fd) => Some(fd),
                    Err(e) => {
                        crate::error!("memfd_create: {e}");
                        return Some(EXIT_IOERR);
                    }
                }
            } else {
                None
            };
            let mut sink = |data: &[u8]| match &store {
                Some(fd) => write_fully(fd, data),
                None => true,
            };
            let read = body::read(
                conn,
                req.framing,
                limits.max_body_bytes,
                deadline,
                &mut sink,
            );
            if let (Ok(len), Some(fd)) = (&read, store) {
                let _ = nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekSet);
                body_fd = Some((fd, *len));
            }
            if let Err(e) = read {
                let Some(status) = e.status().or((e == body::BodyErr::Sink).then_some(500)) else {
                    return Some(EXIT_OK);
                };
                let sent = response::error(
                    conn,
                    status,
                    cfg.server.server_header,
                    req.is_head(),
                    Persist::Close,
                );
                log_access(peer, Some(&req), sent.unwrap_or_default());
                conn.close_gracefully();
                return Some(EXIT_OK);
            }
        }

        let keep = req.keep_alive && !conn.stopping && *served < limits.max_requests_per_connection;
        let persist = if keep {
            Persist::KeepAlive {
                http10: req.version == 0,
            }
        } else {
            Persist::Close
        };
        let result = respond(conn, &req, route, cfg, persist, peer, body_fd, roots);
        let close = match result {
            Ok((sent, close)) => {
                log_access(peer, Some(&req), sent);
                close
            }
            Err(e) => return Some(io_exit(e)),
        };
        if !keep || close {
            if conn.has_pending_input() {
                conn.close_gracefully();
            }
            return Some(EXIT_OK);
        }
        None
    }
}

/// Answer one request whose body has been read, following CGI local
/// redirects (at most 10). The flag says the connection must close.
#[allow(clippy::too_many_arguments)]
fn respond(
    conn: &Conn<'_>,
    req: &Request,
    route: Option<&Route>,
    cfg: &Config,
    persist: Persist,
    peer: Peer,
    body: Option<(OwnedFd, u64)>,
    roots: &RootCache,
) -> Result<(Sent, bool), Errno> {
    let mut body = body;
    let mut redirected: Option<Request> = None;
    let mut route = route;
    for _ in 0..10 {
        let r = redirected.as_ref().unwrap_or(req);
        if let Some(Route {
            prefix,
            action: Action::Cgi(cgi_route),
        }) = route
        {
            let cx = CgiRequest {
                req: r,
                prefix,
                peer,
                body: body.take(),
            };
            match cgi::serve(conn, cx, cgi_route, cfg, persist)? {
                Outcome::Sent { sent, close } => return Ok((sent, close)),
                Outcome::Redirect(location) => {
                    match local_request(req, &location) {
                        Some(next) => {
                            route = cfg.route(&next.path);
                            redirected = Some(next);
                        }
                        None => {
                            return response::error(
                                conn,
                                500,
                                cfg.server.server_header,
                                req.is_head(),
                                persist,
                            )
                            .map(|s| (s, false))
                        }
                    }
                    continue;
                }
            }
        }
        return answer(conn, r, route, cfg, persist, roots).map(|s| (s, false));
    }
    crate::error!("{}: more than 10 CGI local redirects", req.target);
    response::error(conn, 500, cfg.server.server_header, req.is_head(), persist).map(|s| (s, false))
}

/// The GET a CGI `Location: /path?query` asks the server to serve instead.
fn local_request(orig: &Request, location: &str) -> Option<Request> {
    let (path, query) = match location.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (location, None),
    };
    let path = request::normalize_path(path).ok()?;
    let headers = orig
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("content-type")
        })
        .cloned()
        .collect();
    Some(Request {
        method: if orig.is_head() {
            "HEAD".into()
        } else {
            "GET".into()
        },
        target: location.to_string(),
        path,
        query,
        version: orig.version,
        headers,
        host: orig.host.clone(),
        framing: Framing::None,
        keep_alive: orig.keep_alive,
        expect_continue: false,
        head_len: 0,
    })
}

fn write_fully(fd: &OwnedFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Answer a request with a route other than CGI.
fn answer(
    conn: &Conn<'_>,
    req: &Request,
    route: Option<&Route>,
    cfg: &Config,
    persist: Persist,
    roots: &RootCache,
) -> Result<Sent, Errno> {
    let sh = cfg.server.server_header;
    if req.path == "*" {
        // OPTIONS *: what the server supports in general.
        let mut h = Head::new(204, sh);
        h.header("Allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH");
        return response::send(conn, h, "", b"", true, persist);
    }
    let Some(route) = route else {
        return response::error(conn, 404, sh, req.is_head(), persist);
    };
    match &route.action {
        Action::Respond {
            status,
            body,
            content_type,
        } => {
            if matches!(req.method.as_str(), "CONNECT" | "TRACE") {
                return method_not_allowed(
                    conn,
                    req,
                    sh,
                    persist,
                    "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH",
                );
            }
            response::send(
                conn,
                Head::new(*status, sh),
                content_type,
                body.as_bytes(),
                req.is_head(),
                persist,
            )
        }
        Action::Redirect { to, status } => {
            let mut h = Head::new(*status, sh);
            h.header("Location", to);
            response::error_with(conn, h, req.is_head(), persist)
        }
        Action::Static(st) => {
            let cx = Ctx {
                conn,
                req,
                server_header: sh,
                persist,
                roots,
            };
            static_file::serve(&cx, st, below_prefix(route, &req.path))
        }
        Action::Cgi(_) => unreachable!("CGI routes are answered by respond()"),
    }
}

/// The part of `path` below the route's prefix, without a leading '/'.
fn below_prefix<'p>(route: &Route, path: &'p str) -> &'p str {
    path[route.prefix.len().min(path.len())..].trim_start_matches('/')
}

fn method_not_allowed(
    conn: &Conn<'_>,
    req: &Request,
    sh: bool,
    persist: Persist,
    allow: &str,
) -> Result<Sent, Errno> {
    let mut h = Head::new(405, sh);
    h.header("Allow", allow);
    response::error_with(conn, h, req.is_head(), persist)
}

/// One Combined Log Format line:
/// `peer - - [time] "request line" status bytes "referer" "user-agent"`.
fn log_access(peer: Peer, req: Option<&Request>, sent: Sent) {
    if !crate::log::access_enabled() {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let host = match peer {
        Peer::Inet(a) => a.ip().to_canonical().to_string(),
        Peer::Unix => "unix".to_string(),
    };
    let mut line = String::with_capacity(200);
    let _ = write!(line, "{host} - - [{}] \"", crate::log::ClfTime(now));
    match req {
        Some(r) => {
            escape_into(&mut line, r.method.as_bytes());
            line.push(' ');
            escape_into(&mut line, r.target.as_bytes());
            let _ = write!(line, " HTTP/1.{}", r.version);
        }
        None => line.push('-'),
    }
    let _ = write!(line, "\" {} ", sent.status);
    if sent.body_bytes == 0 {
        line.push('-');
    } else {
        let _ = write!(line, "{}", sent.body_bytes);
    }
    for name in ["referer", "user-agent"] {
        line.push_str(" \"");
        match req.and_then(|r| r.header(name)) {
            Some(v) => escape_into(&mut line, v),
            None => line.push('-'),
        }
        line.push('"');
    }
    crate::log::access(&line);
}

/// Quote-safe: `"` and `\` escaped, control and non-ASCII bytes as `\xNN`.
fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// The client going away is a normal end; anything else is an I/O error.
fn io_exit(e: Errno) -> i32 {
    match e {
        Errno::EPIPE | Errno::ECONNRESET | Errno::ETIMEDOUT | Errno::EAGAIN => EXIT_OK,
        _ => EXIT_IOERR,
    }
}
