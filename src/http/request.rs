//! Reading a request head from the connection: bytes gathered under the
//! head's deadline and size limits, then judged by the parser of the library
//! target (`lbaws::proto::head`, where the rules are and where the fuzz
//! targets reach them). Anything malformed is refused with its status (and
//! the connection then closes): lbaws never guesses.

use super::conn::{Conn, ReadErr};
use crate::config::Limits;
use lbaws::proto::head;
pub use lbaws::proto::head::{begins_head_request, Framing, Request};
/// Decode and normalise a path (local redirects reuse it); `None`: refused.
pub use lbaws::proto::target::normalize_path;
use std::time::Instant;

/// Why a request could not be read: either the connection simply ended, or
/// the request is refused with a status.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Closed, reset or timed out before any byte of a request: close quietly.
    Quiet,
    /// The supervisor is stopping and the connection was idle.
    Stopping,
    Status(u16),
    Io(nix::errno::Errno),
}

/// Read one request head from the connection.
pub fn read(
    conn: &mut Conn<'_>,
    limits: &Limits,
    deadline: Instant,
) -> Result<Box<Request>, Refusal> {
    loop {
        let buf = conn.buffered();
        if !buf.is_empty() {
            if let Some(req) = parse(buf, limits)? {
                return Ok(req);
            }
            // The request line alone may not exceed the URI limit by much.
            if !buf.contains(&b'\n') && buf.len() > limits.max_uri_bytes + 32 {
                return Err(Refusal::Status(414));
            }
            if buf.len() >= limits.max_header_bytes {
                return Err(Refusal::Status(431));
            }
        }
        let started = !conn.buffered().is_empty();
        match conn.fill(deadline, limits.max_header_bytes) {
            Ok(_) => {}
            Err(ReadErr::Timeout) if started => return Err(Refusal::Status(408)),
            Err(ReadErr::Timeout) | Err(ReadErr::Closed) => return Err(Refusal::Quiet),
            Err(ReadErr::Stopping) => return Err(Refusal::Stopping),
            Err(ReadErr::Io(e)) => return Err(Refusal::Io(e)),
        }
    }
}

/// Parse a complete head from `buf` under `limits`; `Ok(None)` while
/// incomplete.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Box<Request>>, Refusal> {
    head::parse(buf, &head_limits(limits)).map_err(Refusal::Status)
}

fn head_limits(l: &Limits) -> head::Limits {
    head::Limits {
        max_headers: l.max_headers,
        max_header_bytes: l.max_header_bytes,
        max_uri_bytes: l.max_uri_bytes,
        max_body_bytes: l.max_body_bytes,
    }
}
