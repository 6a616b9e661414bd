//! The access log line (and the scoreboard's count of the response): Combined Log Format, written by the worker that
//! served the request with a single `write(2)` (see `crate::log::access`).
//! A response that was cut (its body ends short: the script died or stalled,
//! the client left) has ` cut` after the user agent. The line of a request
//! whose worker died first is written by the supervisor
//! (`crate::scoreboard::log_owed`).

use super::request::Request;
use super::response::Sent;
use crate::listen::Peer;

/// One Combined Log Format line:
/// `peer - - [time] "request line" status bytes "referer" "user-agent"`.
pub fn log_access(peer: Peer, req: Option<&Request>, sent: Sent) {
    log_line(peer, req, sent, false)
}

/// The same, for a response that was cut.
pub fn log_cut(peer: Peer, req: Option<&Request>, sent: Sent) {
    log_line(peer, req, sent, true)
}

fn log_line(peer: Peer, req: Option<&Request>, sent: Sent, cut: bool) {
    // Every response passes here: the status page's counts too.
    crate::scoreboard::request_done(sent.status, sent.body_bytes);
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
    let version: &[u8] = match req.map(|r| r.version) {
        Some(0) => b"HTTP/1.0",
        _ => b"HTTP/1.1",
    };
    let parts: Option<[&[u8]; 3]> =
        req.map(|r| [r.method.as_bytes(), r.target.as_bytes(), version]);
    let line = crate::log::clf_line(&crate::log::Clf {
        host: &host,
        time: now,
        request: parts.as_ref().map(|p| &p[..]),
        status: sent.status,
        body_bytes: sent.body_bytes,
        referer: req.and_then(|r| r.header("referer")),
        user_agent: req.and_then(|r| r.header("user-agent")),
        cut,
    });
    crate::log::access(&line);
}
