//! What answers a request: its route's action (a fixed response, a
//! redirect, a static file, a CGI script, following a script's local
//! redirects, the status page), once the worker has read the head (and, for
//! CGI, the body). A route's `allow` is checked first: a peer outside it
//! gets 403, whatever the action.

use super::cgi::{self, CgiRequest, Outcome};
use super::conn::Conn;
use super::request::{self, Framing, Request};
use super::response::{self, Head, Persist, Sent};
use super::static_file::{self, Ctx, RootCache};
use crate::config::{Action, Config, Route};
use crate::listen::Peer;
use nix::errno::Errno;
use std::os::fd::OwnedFd;

/// Answer one request whose body has been read, following CGI local
/// redirects (at most 10). The flag says the connection must close.
#[allow(clippy::too_many_arguments)]
pub fn respond(
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
    let mut redirected: Option<Box<Request>> = None;
    let mut route = route;
    for _ in 0..10 {
        let r = redirected.as_deref().unwrap_or(req);
        if route.is_some_and(|rt| !allowed(rt, peer)) {
            crate::debug!("{peer}: {} not allowed on this route: 403", r.target);
            return response::error(conn, 403, cfg.server.server_header, req.is_head(), persist)
                .map(|s| (s, false));
        }
        if let Some(Route {
            prefix,
            action: Action::Cgi(cgi_route),
            ..
        }) = route
        {
            crate::scoreboard::set_state(crate::scoreboard::State::Cgi);
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
        return answer(conn, r, route, cfg, persist, roots).map(|s| (s, roots.close_after.get()));
    }
    crate::error!("{}: more than 10 CGI local redirects", req.target);
    response::error(conn, 500, cfg.server.server_header, req.is_head(), persist).map(|s| (s, false))
}

/// May `peer` use `route` (its `allow`, if it has one)?
pub fn allowed(route: &Route, peer: Peer) -> bool {
    route.allow.as_ref().is_none_or(|a| a.permits(peer))
}

/// The GET a CGI `Location: /path?query` asks the server to serve instead.
fn local_request(orig: &Request, location: &str) -> Option<Box<Request>> {
    let (path, query) = match location.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (location, None),
    };
    let path = request::normalize_path(path)?;
    let headers = orig
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("content-type")
        })
        .cloned()
        .collect();
    Some(Box::new(Request {
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
    }))
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
        Action::Status(format) => super::status::serve(conn, req, cfg, *format, persist),
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
