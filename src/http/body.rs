//! Request bodies: `Content-Length` or `chunked` (with trailers), read within
//! `max_body_bytes` and `body_timeout`, handed to a sink piece by piece (the
//! worker discards them; CGI streams them to the script). A body is always
//! read to its end before the next request on the connection, or the
//! connection is closed.

use super::conn::{Conn, ReadErr};
use super::request::Framing;
use std::time::Instant;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyErr {
    /// Malformed chunked framing: 400.
    Bad,
    /// Over `max_body_bytes`: 413.
    TooLarge,
    /// Stalled past `body_timeout`: 408.
    Timeout,
    /// The client went away.
    Closed,
    /// The sink refused more data.
    Sink,
}

impl BodyErr {
    pub fn status(&self) -> Option<u16> {
        match self {
            BodyErr::Bad => Some(400),
            BodyErr::TooLarge => Some(413),
            BodyErr::Timeout => Some(408),
            BodyErr::Closed | BodyErr::Sink => None,
        }
    }
}

fn from_read(e: ReadErr) -> BodyErr {
    match e {
        ReadErr::Timeout => BodyErr::Timeout,
        _ => BodyErr::Closed,
    }
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Read the whole body, passing its decoded bytes to `sink`; returns the length.
pub fn read(
    conn: &mut Conn<'_>,
    framing: Framing,
    max: u64,
    deadline: Instant,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u64, BodyErr> {
    match framing {
        Framing::None => Ok(0),
        Framing::Length(n) => {
            if n > max {
                return Err(BodyErr::TooLarge);
            }
            copy(conn, n, deadline, sink)?;
            Ok(n)
        }
        Framing::Chunked => chunked(conn, max, deadline, sink),
    }
}

/// Pass exactly `n` bytes from the connection to the sink.
fn copy(
    conn: &mut Conn<'_>,
    mut n: u64,
    deadline: Instant,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), BodyErr> {
    while n > 0 {
        if conn.buffered().is_empty() {
            conn.fill(deadline, 64 << 10).map_err(from_read)?;
        }
        let take = (conn.buffered().len() as u64).min(n) as usize;
        if !sink(&conn.buffered()[..take]) {
            return Err(BodyErr::Sink);
        }
        conn.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// One CRLF-terminated line (without the CRLF); bare LF or CR is malformed.
fn line(conn: &mut Conn<'_>, deadline: Instant) -> Result<Vec<u8>, BodyErr> {
    loop {
        let buf = conn.buffered();
        if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
            if lf == 0 || buf[lf - 1] != b'\r' || buf[..lf - 1].contains(&b'\r') {
                return Err(BodyErr::Bad);
            }
            let l = buf[..lf - 1].to_vec();
            conn.consume(lf + 1);
            return Ok(l);
        }
        if buf.len() > MAX_LINE {
            return Err(BodyErr::Bad);
        }
        conn.fill(deadline, 64 << 10).map_err(from_read)?;
    }
}

fn chunked(
    conn: &mut Conn<'_>,
    max: u64,
    deadline: Instant,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u64, BodyErr> {
    let mut total: u64 = 0;
    loop {
        let l = line(conn, deadline)?;
        // chunk-size [ chunk-ext ]: hex digits, then optionally ";ext".
        let size_part = l.split(|&b| b == b';').next().unwrap_or(b"");
        let size_part = trim_ws(size_part);
        if size_part.is_empty()
            || size_part.len() > 15
            || !size_part.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(BodyErr::Bad);
        }
        let size = u64::from_str_radix(std::str::from_utf8(size_part).unwrap(), 16)
            .map_err(|_| BodyErr::Bad)?;
        if size == 0 {
            break;
        }
        total = total.checked_add(size).ok_or(BodyErr::TooLarge)?;
        if total > max {
            return Err(BodyErr::TooLarge);
        }
        copy(conn, size, deadline, sink)?;
        if !line(conn, deadline)?.is_empty() {
            return Err(BodyErr::Bad); // data longer than its size, or no CRLF after it
        }
    }
    // Trailer section: header lines until an empty one (read and dropped).
    let mut trailer_bytes = 0;
    loop {
        let l = line(conn, deadline)?;
        if l.is_empty() {
            return Ok(total);
        }
        trailer_bytes += l.len();
        if trailer_bytes > 16 << 10 || !l.contains(&b':') || l[0] == b' ' || l[0] == b'\t' {
            return Err(BodyErr::Bad);
        }
    }
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(s, |p| p + 1);
    &b[s..e]
}
