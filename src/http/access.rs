//! The access log line (and the scoreboard's count of the response), in
//! the configured format (`[log] access_format`), written by the worker
//! that served the request with a single `write(2)` (see
//! `crate::log::access`), to `[log] access` or the site's own file:
//!
//! - `combined`: Combined Log Format;
//! - `vhost_combined`: the site's label, a space, then the Combined line
//!   (`-` for a request refused before it was routed);
//! - `json`: one object a line (`time`, `client`, `site`, `host`, `method`,
//!   `target`, `protocol`, `status`, `bytes`, `duration_us`, `referer`,
//!   `user_agent`, `cut`), escaped per RFC 8259 (`crate::log::json`).
//!
//! A response that was cut (its body ends short: the script died or
//! stalled, the client left) has ` cut` after the user agent (`"cut":true`
//! in JSON). The line of a request whose worker died first is written by
//! the supervisor (`crate::scoreboard::log_owed`).

use super::request::Request;
use super::response::Sent;
use crate::config::{AccessFormat, Site, SiteLog};
use crate::listen::Peer;
use crate::log::Dest;

/// The line of a response before any site was known (a refusal): counted,
/// and logged to `[log] access`.
pub fn log_access(peer: Peer, req: Option<&Request>, sent: Sent) {
    log_line(peer, req, None, sent, false)
}

/// The line of a response of `site`.
pub fn log_site(peer: Peer, req: Option<&Request>, site: Option<&Site>, sent: Sent) {
    log_line(peer, req, site, sent, false)
}

/// The same, for a response that was cut.
pub fn log_cut(peer: Peer, req: Option<&Request>, site: Option<&Site>, sent: Sent) {
    log_line(peer, req, site, sent, true)
}

fn log_line(peer: Peer, req: Option<&Request>, site: Option<&Site>, sent: Sent, cut: bool) {
    // Every response passes here: the status page's counts too.
    let took_us = crate::scoreboard::request_done(sent.status, sent.body_bytes);
    let dest = match site.map(|s| s.access) {
        Some(SiteLog::Off) => return,
        Some(SiteLog::File(i)) => Dest::Site(i),
        _ if crate::log::access_enabled() => Dest::Main,
        _ => return,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let client = match peer {
        Peer::Inet(a) => a.ip().to_canonical().to_string(),
        Peer::Unix => "unix".to_string(),
    };
    let version: &[u8] = match req.map(|r| r.version) {
        Some(0) => b"HTTP/1.0",
        _ => b"HTTP/1.1",
    };
    let format = crate::log::access_format();
    if format == AccessFormat::Json {
        let line = json_line(&client, now, req, site, sent, cut, version, took_us);
        crate::log::access_to(dest, &line);
        return;
    }
    let parts: Option<[&[u8]; 3]> =
        req.map(|r| [r.method.as_bytes(), r.target.as_bytes(), version]);
    let mut line = crate::log::clf_line(&crate::log::Clf {
        host: &client,
        time: now,
        request: parts.as_ref().map(|p| &p[..]),
        status: sent.status,
        body_bytes: sent.body_bytes,
        referer: req.and_then(|r| r.header("referer")),
        user_agent: req.and_then(|r| r.header("user-agent")),
        cut,
    });
    if format == AccessFormat::VhostCombined {
        let label = site.map_or("-", |s| s.label.as_str());
        line.insert(0, ' ');
        line.insert_str(0, label);
    }
    crate::log::access_to(dest, &line);
}

#[allow(clippy::too_many_arguments)]
fn json_line(
    client: &str,
    now: i64,
    req: Option<&Request>,
    site: Option<&Site>,
    sent: Sent,
    cut: bool,
    version: &[u8],
    took_us: u64,
) -> String {
    let mut l = crate::log::json::Line::new(crate::log::line_budget());
    l.str("time", &crate::log::Utc(now).to_string());
    l.str("client", client);
    match site {
        Some(s) => l.str("site", &s.label),
        None => l.null("site"),
    }
    l.bytes(
        "host",
        req.and_then(|r| r.host.as_deref()).map(str::as_bytes),
    );
    l.bytes("method", req.map(|r| r.method.as_bytes()));
    l.bytes("target", req.map(|r| r.target.as_bytes()));
    match req {
        Some(_) => l.bytes("protocol", Some(version)),
        None => l.null("protocol"),
    }
    l.num("status", sent.status as u64);
    l.num("bytes", sent.body_bytes);
    l.num("duration_us", took_us);
    l.bytes("referer", req.and_then(|r| r.header("referer")));
    l.bytes("user_agent", req.and_then(|r| r.header("user-agent")));
    l.bool("cut", cut);
    l.finish()
}
