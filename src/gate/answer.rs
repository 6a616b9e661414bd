//! The gate's own answers: 408 (half a head at `header_timeout`) and 503
//! (no worker within `queue_timeout`; no room), each written without
//! waiting, with its access log line, then a graceful close: the connection
//! is half-closed and what the client still sends is read and dropped, so
//! that a close with unread bytes (a reset) cannot destroy the answer on its
//! way. In a slot of its own (`answer`: it lingers up to 2 s), or at once
//! when there is no room for one (`refuse_now`: what has arrived is read,
//! then the close).

use super::*;
use crate::listen::Peer;

impl Gate {
    /// The fixed answer, written without waiting, then a graceful close.
    pub(super) fn answer(&mut self, slot: u32, status: u16) {
        self.leave_queue(slot);
        let server_header = self.limits.server_header;
        let h = self.slots[slot as usize].as_mut().expect("live");
        let fd = h.fd.as_raw_fd();
        answer_on(fd, h.meta.peer, status, server_header, &mut self.peek);
        h.state = State::Lingering;
        self.set_deadline(slot, Instant::now() + LINGER);
        self.room
            .entered(slot, self.gens[slot as usize], self.class_of(slot));
        // Edge-triggered: what has already arrived gives no new event.
        self.drain(slot);
    }
}

/// Answer `status` on `fd` (from `peer`) without waiting, log it, and
/// half-close. `scratch` is room for a look at the first bytes.
fn answer_on(
    fd: i32,
    peer: Peer,
    status: u16,
    server_header: bool,
    scratch: &mut [MaybeUninit<u8>],
) {
    let head_only = begins_head(fd, scratch);
    let mut out = [0u8; 256];
    let (n, body) = fixed_response(&mut out, status, server_header, head_only);
    let sent = crate::sys::send_nowait(fd, &out[..n]);
    let body_bytes = if sent == Ok(n) { body as u64 } else { 0 };
    crate::http::access::log_access(
        peer,
        None,
        crate::http::response::Sent { status, body_bytes },
    );
    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
}

/// Refuse a connection there is no room to hold: `status` (with its access
/// log line) if anything has arrived on it, then what has arrived is read
/// and dropped (up to `scratch`'s size a few times), so that the close
/// that follows is a FIN, not a reset. With nothing received, the close
/// alone says it (it is not a request yet). The caller closes `fd`.
pub(super) fn refuse_now(
    fd: i32,
    peer: Peer,
    status: u16,
    server_header: bool,
    scratch: &mut [MaybeUninit<u8>],
) {
    match crate::sys::peek(fd, &mut scratch[..1]) {
        Ok([_]) => answer_on(fd, peer, status, server_header, scratch),
        _ => return,
    }
    for _ in 0..4 {
        match crate::sys::discard(fd, scratch) {
            Ok(n) if n > 0 => continue,
            _ => return,
        }
    }
}

/// Whether the connection's first bytes begin a HEAD request, whose answer
/// has no body (RFC 9110 9.3.2), even a 408 or 503.
fn begins_head(fd: i32, scratch: &mut [MaybeUninit<u8>]) -> bool {
    let limit = 64.min(scratch.len());
    let bytes = crate::sys::peek(fd, &mut scratch[..limit]).unwrap_or(&[]);
    lbaws::proto::head::begins_head_request(bytes)
}

/// "HTTP/1.1 408 Request Timeout" with `Date`, a one-line body (none for
/// `head_only`) and `Connection: close` (and `Retry-After: 1` for a 503),
/// into `out`; returns its length and its body's.
pub fn fixed_response(
    out: &mut [u8; 256],
    status: u16,
    server_header: bool,
    head_only: bool,
) -> (usize, usize) {
    use std::io::Write as _;
    let reason = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let mut w = &mut out[..];
    let _ =
        write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nDate: {}\r\n{}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{}Connection: close\r\n\r\n{status} {reason}\n",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        if server_header { "Server: lbaws\r\n" } else { "" },
        reason.len() + 5,
        if status == 503 { "Retry-After: 1\r\n" } else { "" },
    );
    let body = reason.len() + 5;
    let len = 256 - w.len();
    if head_only {
        (len - body, 0)
    } else {
        (len, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_responses_are_whole() {
        for (status, sh) in [
            (400, true),
            (408, true),
            (413, false),
            (500, true),
            (503, false),
        ] {
            let mut out = [0u8; 256];
            let (n, b) = fixed_response(&mut out, status, sh, true);
            assert_eq!(b, 0);
            assert!(out[..n].ends_with(b"\r\n\r\n"), "HEAD: no body");
            let (n, _) = fixed_response(&mut out, status, sh, false);
            let text = std::str::from_utf8(&out[..n]).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(head.contains("\r\nDate: "));
            assert_eq!(head.contains("Server: lbaws"), sh);
            assert_eq!(head.contains("Retry-After: 1"), status == 503);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{text}");
        }
    }
}
