//! What answers a request: its route's action (a fixed response, a
//! redirect, a static file, a CGI script, following a script's local
//! redirects within its site, the status page), once the worker has read
//! the head (and, for CGI, the body). A route's `allow` is checked first: a
//! peer outside it gets 403, whatever the action. Every response carries
//! its site's and route's `headers`, and an error its site's page
//! ([`Face`]).

use super::cgi::{self, CgiRequest, Outcome};
use super::conn::Conn;
use super::request::{self, Framing, Request};
use super::response::{self, Face, Head, Persist, Sent};
use super::static_file::{self, Ctx, RootCache};
use crate::config::{Action, Config, Hit, Route, Template};
use crate::listen::Peer;
use nix::errno::Errno;
use std::os::fd::OwnedFd;

/// Answer one request whose body has been read, following CGI local
/// redirects (at most 10). The flag says the connection must close.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    conn: &Conn<'_>,
    req: &Request,
    hit: Hit<'_>,
    cfg: &Config,
    persist: Persist,
    peer: Peer,
    body: Option<(OwnedFd, u64)>,
    roots: &RootCache,
) -> Result<(Sent, bool), Errno> {
    let mut body = body;
    let mut redirected: Option<Box<Request>> = None;
    let mut route = hit.route;
    let site = hit.site;
    let site_face = Face::of(cfg, site, &site.fields, roots);
    for _ in 0..10 {
        let r = redirected.as_deref().unwrap_or(req);
        let face = match route {
            Some(rt) => Face::of(cfg, site, &rt.fields, roots),
            None => site_face,
        };
        if route.is_some_and(|rt| !allowed(rt, peer)) {
            crate::debug!("{peer}: {} not allowed on this route: 403", r.target);
            return response::error(conn, 403, face, req.is_head(), persist).map(|s| (s, false));
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
                face,
                site,
            };
            match cgi::serve(conn, cx, cgi_route, cfg, persist)? {
                Outcome::Sent { sent, close } => return Ok((sent, close)),
                Outcome::Redirect(location) => {
                    match local_request(req, &location) {
                        Some(next) => {
                            route = cfg.site_route(site, &next.path);
                            redirected = Some(next);
                        }
                        None => {
                            return response::error(conn, 500, face, req.is_head(), persist)
                                .map(|s| (s, false))
                        }
                    }
                    continue;
                }
            }
        }
        return answer(conn, r, route, face, cfg, persist, roots)
            .map(|s| (s, roots.close_after.get()));
    }
    crate::error!("{}: more than 10 CGI local redirects", req.target);
    response::error(conn, 500, site_face, req.is_head(), persist).map(|s| (s, false))
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
    sh: Face<'_>,
    cfg: &Config,
    persist: Persist,
    roots: &RootCache,
) -> Result<Sent, Errno> {
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
            let Some(location) = location(to, req, &cfg.sites[route.site]) else {
                return response::error(conn, 500, sh, req.is_head(), persist);
            };
            let mut h = Head::new(*status, sh);
            h.header("Location", location);
            response::error_with(conn, h, req.is_head(), persist)
        }
        Action::Static(st) => {
            let cx = Ctx {
                conn,
                req,
                face: sh,
                persist,
                roots,
            };
            static_file::serve(&cx, st, below_prefix(route, &req.path))
        }
        Action::Status(format) => super::status::serve(conn, req, cfg, sh, *format, persist),
        Action::Cgi(_) => unreachable!("CGI routes are answered by respond()"),
    }
}

/// A redirect's target for this request: its placeholders filled in.
/// `None` (logged): it could not be made (a template that needs a host
/// for a request without one, on a site with no plain name to stand in).
fn location<'t>(
    to: &'t Template,
    req: &Request,
    site: &crate::config::Site,
) -> Option<std::borrow::Cow<'t, str>> {
    if let Some(fixed) = to.fixed() {
        return Some(fixed.into());
    }
    let fallback = site.names.iter().find_map(|n| match n {
        crate::config::Pattern::Wildcard(_) => None,
        n => Some(n.to_string()),
    });
    let host = match (&req.host, &fallback) {
        (Some(h), _) => without_port(h),
        (None, Some(f)) => f.as_str(),
        (None, None) if to.uses_host() => {
            crate::error!(
                "redirect {to}: {} named no host, and site {} has no plain name to use",
                req.target,
                site.label
            );
            return None;
        }
        (None, None) => "",
    };
    let vars = lbaws::proto::template::Vars {
        host,
        target: &req.target,
        path: &req.path,
        query: req.query.as_deref(),
        scheme: "http",
    };
    match to.expand(&vars) {
        Some(l) if !l.is_empty() => Some(l.into()),
        _ => {
            crate::error!("redirect {to}: no valid target for {}", req.target);
            None
        }
    }
}

/// A host without its port (`[::1]:8080` is `[::1]`).
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The part of `path` below the route's prefix, without a leading '/'.
fn below_prefix<'p>(route: &Route, path: &'p str) -> &'p str {
    path[route.prefix.len().min(path.len())..].trim_start_matches('/')
}

fn method_not_allowed(
    conn: &Conn<'_>,
    req: &Request,
    sh: Face<'_>,
    persist: Persist,
    allow: &str,
) -> Result<Sent, Errno> {
    let mut h = Head::new(405, sh);
    h.header("Allow", allow);
    response::error_with(conn, h, req.is_head(), persist)
}
