//! Reading and parsing a request head (`httparse`), with hard limits on size,
//! header count and time.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The client closed (or reset) before a complete head; `started` tells
    /// whether any byte of a request had arrived.
    Closed {
        started: bool,
    },
    /// No complete head before the deadline.
    Timeout {
        started: bool,
    },
    /// The head is larger than `max_header_bytes` (431).
    TooLarge,
    /// More than `max_headers` header fields (431).
    TooManyHeaders,
    /// Not HTTP (400).
    Malformed,
    /// A version other than HTTP/1.0 or 1.1 (505).
    BadVersion,
    Io(Errno),
}

/// A parsed request head, owning its strings (it is small, and a worker is
/// a short-lived process).
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub target: String,
    /// Minor version: 0 or 1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the buffer the head took.
    pub len: usize,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The path part of the target (before any `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Read from `fd` until a complete head is in `buf`, within `deadline`, and parse it.
pub fn read_head(
    fd: &OwnedFd,
    buf: &mut Vec<u8>,
    max_bytes: usize,
    max_headers: usize,
    deadline: Instant,
) -> Result<Head, ReadError> {
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            if let Some(h) = parse(buf, max_headers)? {
                return Ok(h);
            }
        }
        if buf.len() >= max_bytes {
            return Err(ReadError::TooLarge);
        }
        let started = !buf.is_empty();
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::Timeout { started });
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut pfd,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue, // the deadline check above ends it
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ReadError::Io(e)),
        }
        let room = (max_bytes - buf.len()).min(chunk.len());
        match recv(fd.as_raw_fd(), &mut chunk[..room], MsgFlags::empty()) {
            Ok(0) => return Err(ReadError::Closed { started }),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(Errno::ECONNRESET) => return Err(ReadError::Closed { started }),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Parse a head from the start of `buf`; `Ok(None)` when it is incomplete.
pub fn parse(buf: &[u8], max_headers: usize) -> Result<Option<Head>, ReadError> {
    // httparse wants the slot array up front; stay within the configured count.
    let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let version = req.version.unwrap_or(1);
            Ok(Some(Head {
                method: req.method.unwrap_or("").to_string(),
                target: req.path.unwrap_or("").to_string(),
                version,
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                len,
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(ReadError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            // httparse only knows HTTP/1.x; "HTTP/2.0" and friends are well-formed
            // but unsupported versions: 505, not 400.
            if looks_like_other_version(buf) {
                Err(ReadError::BadVersion)
            } else {
                Err(ReadError::Malformed)
            }
        }
        Err(_) => Err(ReadError::Malformed),
    }
}

fn looks_like_other_version(buf: &[u8]) -> bool {
    let line = buf
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(b"");
    let Some(v) = line.rsplit(|&b| b == b' ').next() else {
        return false;
    };
    v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_and_partial() {
        let h = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n", 10)
            .unwrap()
            .unwrap();
        assert_eq!((h.method.as_str(), h.path(), h.version), ("GET", "/a", 1));
        assert_eq!(h.header("host"), Some(&b"x"[..]));
        assert!(parse(b"GET / HTTP/1.1\r\nHost:", 10).unwrap().is_none());
    }

    #[test]
    fn refuses_bad_heads() {
        assert_eq!(
            parse(b"GET / HTTP/2.0\r\n\r\n", 10).unwrap_err(),
            ReadError::BadVersion
        );
        assert_eq!(
            parse(b"\x01\x02 / HTTP/1.1\r\n\r\n", 10).unwrap_err(),
            ReadError::Malformed
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 1).unwrap_err(),
            ReadError::TooManyHeaders
        );
    }
}
