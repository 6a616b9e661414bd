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
    let Some(dest) = dest(site.map(|s| s.access)) else {
        return;
    };
    let client = client(peer);
    let entry = Entry {
        client: &client,
        site: site.map(|s| s.label.as_str()),
        host: req.and_then(|r| r.host.as_deref()).map(str::as_bytes),
        request: req.map(|r| [r.method.as_bytes(), r.target.as_bytes(), r.protocol()]),
        referer: req.and_then(|r| r.header("referer")),
        user_agent: req.and_then(|r| r.header("user-agent")),
        status: sent.status,
        body_bytes: sent.body_bytes,
        took_us,
        cut,
    };
    crate::log::access_to(dest, &entry.line());
}

/// Where a line of a site with this `access` goes (`None`: nowhere).
pub fn dest(access: Option<SiteLog>) -> Option<Dest> {
    match access {
        Some(SiteLog::Off) => None,
        Some(SiteLog::File(i)) => Some(Dest::Site(i)),
        _ if crate::log::access_enabled() => Some(Dest::Main),
        _ => None,
    }
}

/// The client's address as lines show it.
pub fn client(peer: Peer) -> String {
    match peer {
        Peer::Inet(a) => a.ip().to_canonical().to_string(),
        Peer::Unix => "unix".to_string(),
    }
}

/// What one access line says, wherever it is written (a worker, or the
/// gate for a response it finished).
pub struct Entry<'a> {
    pub client: &'a str,
    /// The site's label (`None`: refused before a site was known).
    pub site: Option<&'a str>,
    pub host: Option<&'a [u8]>,
    /// The request line's parts (method, target, version), if it was read.
    pub request: Option<[&'a [u8]; 3]>,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub status: u16,
    pub body_bytes: u64,
    pub took_us: u64,
    /// The response was cut: its body ends short.
    pub cut: bool,
}

impl Entry<'_> {
    /// The line, in the configured format (without its newline).
    pub fn line(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let format = crate::log::access_format();
        if format == AccessFormat::Json {
            return self.json(now);
        }
        let mut line = crate::log::clf_line(&crate::log::Clf {
            host: self.client,
            time: now,
            request: self.request.as_ref().map(|p| &p[..]),
            status: self.status,
            body_bytes: self.body_bytes,
            referer: self.referer,
            user_agent: self.user_agent,
            cut: self.cut,
        });
        if format == AccessFormat::VhostCombined {
            line.insert(0, ' ');
            line.insert_str(0, self.site.unwrap_or("-"));
        }
        line
    }

    fn json(&self, now: i64) -> String {
        let mut l = crate::log::json::Line::new(crate::log::line_budget());
        l.str("time", &crate::log::Utc(now).to_string());
        l.str("client", self.client);
        match self.site {
            Some(s) => l.str("site", s),
            None => l.null("site"),
        }
        l.bytes("host", self.host);
        let [method, target, version] = match self.request {
            Some([m, t, v]) => [Some(m), Some(t), Some(v)],
            None => [None; 3],
        };
        l.bytes("method", method);
        l.bytes("target", target);
        match version {
            Some(v) => l.bytes("protocol", Some(v)),
            None => l.null("protocol"),
        }
        l.num("status", self.status as u64);
        l.num("bytes", self.body_bytes);
        l.num("duration_us", self.took_us);
        l.bytes("referer", self.referer);
        l.bytes("user_agent", self.user_agent);
        l.bool("cut", self.cut);
        l.finish()
    }
}
