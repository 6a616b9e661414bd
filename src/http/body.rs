//! Request bodies: `Content-Length` or `chunked` (with trailers), read within
//! `max_body_bytes` and at the client's [`Pace`] (`body_timeout` between
//! bytes, `min_body_rate` on average), handed to a sink piece by piece (the
//! worker discards them; CGI streams them to the script). A body is always
//! read to its end before the next request on the connection, or the
//! connection is closed.

use super::conn::{Conn, Pace, Progress, ReadErr, Slow};
use super::request::Framing;
use std::time::Instant;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyErr {
    /// Malformed chunked framing: 400.
    Bad,
    /// Over `max_body_bytes`: 413.
    TooLarge,
    /// Stalled past `body_timeout`, or below `min_body_rate`: 408.
    Slow(Slow),
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
            BodyErr::Slow(_) => Some(408),
            BodyErr::Closed | BodyErr::Sink => None,
        }
    }
}

/// The reader of one body: the connection and the client's progress.
struct Reader<'c, 'a> {
    conn: &'c mut Conn<'a>,
    progress: Progress,
}

impl Reader<'_, '_> {
    /// More bytes into the connection's buffer, within the client's pace.
    fn fill(&mut self) -> Result<(), BodyErr> {
        match self.conn.fill(self.progress.deadline(), 64 << 10) {
            Ok(n) => {
                self.progress.moved(n, Instant::now());
                Ok(())
            }
            Err(ReadErr::Timeout) => Err(BodyErr::Slow(
                self.progress
                    .verdict(Instant::now())
                    .unwrap_or(Slow::Stalled),
            )),
            Err(_) => Err(BodyErr::Closed),
        }
    }
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Read the whole body, passing its decoded bytes to `sink`; returns the length.
pub fn read(
    conn: &mut Conn<'_>,
    framing: Framing,
    max: u64,
    pace: Pace,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u64, BodyErr> {
    let mut r = Reader {
        conn,
        progress: Progress::start(pace, Instant::now()),
    };
    match framing {
        Framing::None => Ok(0),
        Framing::Length(n) => {
            if n > max {
                return Err(BodyErr::TooLarge);
            }
            copy(&mut r, n, sink)?;
            Ok(n)
        }
        Framing::Chunked => chunked(&mut r, max, sink),
    }
}

/// Pass exactly `n` bytes from the connection to the sink.
fn copy(
    r: &mut Reader<'_, '_>,
    mut n: u64,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), BodyErr> {
    while n > 0 {
        if r.conn.buffered().is_empty() {
            r.fill()?;
        }
        let take = (r.conn.buffered().len() as u64).min(n) as usize;
        if !sink(&r.conn.buffered()[..take]) {
            return Err(BodyErr::Sink);
        }
        r.conn.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// One CRLF-terminated line (without the CRLF); bare LF or CR is malformed.
fn line(r: &mut Reader<'_, '_>) -> Result<Vec<u8>, BodyErr> {
    loop {
        let buf = r.conn.buffered();
        if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
            if lf == 0 || buf[lf - 1] != b'\r' || buf[..lf - 1].contains(&b'\r') {
                return Err(BodyErr::Bad);
            }
            let l = buf[..lf - 1].to_vec();
            r.conn.consume(lf + 1);
            return Ok(l);
        }
        if buf.len() > MAX_LINE {
            return Err(BodyErr::Bad);
        }
        r.fill()?;
    }
}

fn chunked(
    r: &mut Reader<'_, '_>,
    max: u64,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u64, BodyErr> {
    let mut total: u64 = 0;
    loop {
        let l = line(r)?;
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
        copy(r, size, sink)?;
        if !line(r)?.is_empty() {
            return Err(BodyErr::Bad); // data longer than its size, or no CRLF after it
        }
    }
    // Trailer section: header lines until an empty one (read and dropped).
    let mut trailer_bytes = 0;
    loop {
        let l = line(r)?;
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
