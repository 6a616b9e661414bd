//! The access log line (and the scoreboard's count of the response): Combined Log Format, written by the worker that
//! served the request with a single `write(2)` (see `crate::log::access`).

use super::request::Request;
use super::response::Sent;
use crate::listen::Peer;
use std::fmt::Write as _;

/// One Combined Log Format line:
/// `peer - - [time] "request line" status bytes "referer" "user-agent"`.
pub fn log_access(peer: Peer, req: Option<&Request>, sent: Sent) {
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
