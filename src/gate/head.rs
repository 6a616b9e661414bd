//! Is a request head complete? The one question the supervisor and the gate
//! may ask of a client's bytes (invariant 7): they look for the end of the
//! head and never parse it. Whatever the answer, the bytes stay on the
//! socket (`MSG_PEEK`); the worker reads and judges them exactly as if it had
//! been forked at `accept`.
//!
//! "Complete" means a worker has something to do: the blank line that ends a
//! head arrived (CRLF CRLF, or bare LF LF, which the worker refuses with 400),
//! or the bytes can never become a head the worker would accept: too many of
//! them (431), a first line too long (414), or a control byte no head may hold
//! (400, e.g. a TLS handshake sent to a plain HTTP port). Empty lines before
//! the request line (RFC 9112 2.2) do not count as an end.

/// Limits that decide "complete" besides the blank line.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// `[limits] max_header_bytes`: this many bytes without an end go to a
    /// worker, which answers 431.
    pub max_header_bytes: usize,
    /// A first line longer than this without its LF goes to a worker (414).
    pub max_line_bytes: usize,
}

/// Whether `buf` (everything received so far, from the start) holds a
/// complete head, or bytes a worker must refuse. `from` is how much of `buf`
/// an earlier call already examined (0 for the first look), so that a client
/// sending its head a byte at a time is not scanned again from the start.
pub fn complete(buf: &[u8], from: usize, b: Bounds) -> bool {
    if buf.len() >= b.max_header_bytes {
        return true;
    }
    // Empty lines before the request line are allowed and skipped.
    let Some(start) = buf.iter().position(|&c| c != b'\r' && c != b'\n') else {
        return false;
    };
    let first_lf = memchr::memchr(b'\n', &buf[start..]);
    if first_lf.is_none() && buf.len() - start > b.max_line_bytes {
        return true;
    }
    // Re-examine two bytes before `from`: an end may straddle two looks.
    let scan = from.saturating_sub(2).max(start);
    let tail = &buf[scan..];
    if tail.iter().any(|&c| is_forbidden(c)) {
        return true;
    }
    memchr::memchr_iter(b'\n', tail).any(|i| match tail.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => tail.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// A control byte that no request head may contain (HTAB, CR and LF may).
fn is_forbidden(c: u8) -> bool {
    (c < 0x20 && c != b'\t' && c != b'\r' && c != b'\n') || c == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        max_header_bytes: 64,
        max_line_bytes: 24,
    };

    fn done(s: &[u8]) -> bool {
        complete(s, 0, B)
    }

    #[test]
    fn ends_of_heads() {
        assert!(done(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(
            done(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST body"),
            "pipelined data after"
        );
        assert!(
            done(b"GET / HTTP/1.1\nHost: a\n\n"),
            "bare LF: the worker says 400"
        );
        assert!(!done(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!done(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
        assert!(!done(b""));
        assert!(
            !done(b"\r\n\r\n\r\n"),
            "empty lines before the request line"
        );
        assert!(!done(b"\r\n\r\nGET / HTTP/1.1\r\n"));
        assert!(done(b"\r\nGET / HTTP/1.0\r\n\r\n"));
    }

    #[test]
    fn what_a_worker_must_refuse_goes_at_once() {
        assert!(done(&[0x16, 0x03, 0x01, 0x02, 0x00]), "a TLS ClientHello");
        assert!(done(b"GET / HTTP/1.1\r\nX: a\x00b\r\n"), "NUL");
        assert!(
            !done(b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n"),
            "obs-text is allowed"
        );
        assert!(done(&[b'a'; 64]), "max_header_bytes");
        assert!(done(&[b'a'; 25]), "a first line over max_line_bytes");
        assert!(!done(&[b'a'; 24]));
        assert!(
            !done(b"GET /aaaaaaaaaaaaaaaaaaaaaa\r\nX: 1\r\n"),
            "long line, but it ended"
        );
    }

    #[test]
    fn looks_resume_where_they_stopped() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for split in 0..head.len() {
            assert!(!complete(&head[..split], 0, B) || split == head.len());
            assert!(complete(head, split, B), "resuming at {split}");
        }
    }
}
