//! Request bodies: `Content-Length` or `chunked` (with trailers), read within
//! `max_body_bytes` and at the client's [`Pace`] (`body_timeout` between
//! bytes, `min_body_rate` on average), handed to a sink piece by piece (the
//! worker discards them; CGI streams them to the script). A body is always
//! read to its end before the next request on the connection, or the
//! connection is closed.

use super::conn::{Conn, Pace, Progress, ReadErr, Slow};
use super::request::Framing;
use lbaws::proto::chunked::{self, Decoder};
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

/// The log line of a body refused for its pace (by a worker, or the gate).
pub fn log_slow(peer: crate::listen::Peer, why: Slow, pace: Pace) {
    match why {
        Slow::Stalled => crate::info!(
            "{peer}: request body stalled for {:?} (body_timeout): 408",
            pace.stall
        ),
        Slow::BelowRate(r) => crate::info!(
            "{peer}: request body at {r} B/s, below min_body_rate {}: 408",
            pace.rate
        ),
    }
}

/// Whether `bytes` (what follows a head) hold its whole body, or one the
/// worker refuses without reading on (over `max`, bad chunked framing).
pub fn here_whole(bytes: &[u8], framing: Framing, max: u64) -> bool {
    match framing {
        Framing::None => true,
        Framing::Length(n) => n > max || bytes.len() as u64 >= n,
        Framing::Chunked => {
            let mut dec = Decoder::new(max);
            let mut used = 0;
            while used < bytes.len() {
                match dec.feed(&bytes[used..]) {
                    Ok((n, _)) => used += n,
                    Err(_) => return true,
                }
                if dec.done() {
                    return true;
                }
            }
            dec.done()
        }
    }
}

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

/// A chunked body, through the decoder of the library target (the grammar
/// and its limits are there).
fn chunked(
    r: &mut Reader<'_, '_>,
    max: u64,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u64, BodyErr> {
    let mut dec = Decoder::new(max);
    while !dec.done() {
        if r.conn.buffered().is_empty() {
            r.fill()?;
        }
        let (used, data) = dec.feed(r.conn.buffered()).map_err(|e| match e {
            chunked::Error::Bad => BodyErr::Bad,
            chunked::Error::TooLarge => BodyErr::TooLarge,
        })?;
        if !data.is_empty() && !sink(data) {
            return Err(BodyErr::Sink);
        }
        r.conn.consume(used);
    }
    Ok(dec.total())
}
