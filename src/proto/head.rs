//! The request head: a request line checked by lbaws's own strict grammar,
//! header fields parsed by `httparse`, then held to RFC 9112's MUSTs.
//! Anything malformed is refused with its status (the connection then
//! closes): lbaws never guesses.
//!
//! - Only empty lines (CRLF) may come before the request line (RFC 9112
//!   2.2); a bare CR or LF anywhere in a head is refused.
//! - The request line is exactly `method SP request-target SP HTTP-version
//!   CRLF` (RFC 9112 3): method a token, target visible ASCII, version
//!   `HTTP/` DIGIT `.` DIGIT. Anything else is 400; a well-formed version of
//!   another major is 505; a higher minor of 1 (`HTTP/1.2`) is served as
//!   HTTP/1.1 (RFC 9110 2.5).
//! - Host: exactly one in HTTP/1.1, at most one in 1.0, and a valid host
//!   (`target`). Framing: `Transfer-Encoding` with `Content-Length` is
//!   refused, `chunked` must be the only coding, lengths must agree.
//! - `Expect: 100-continue` from an HTTP/1.0 client is ignored (RFC 9110
//!   10.1.1); any other expectation is 417.

use super::is_tchar;
use super::target;

/// How the request body is framed (RFC 9112 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The target as sent (for the access log and CGI's REQUEST_URI).
    pub target: String,
    /// Decoded, normalised path; starts with '/'.
    pub path: String,
    /// The raw query (after '?'), if any.
    pub query: Option<String>,
    /// HTTP/1.`version`: 0 or 1 (a higher minor is answered as 1).
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Host from the target (absolute-form) or the Host header (validated;
    /// CGI's SERVER_NAME comes from it).
    pub host: Option<String>,
    pub framing: Framing,
    /// The client allows the connection to stay open.
    pub keep_alive: bool,
    /// An HTTP/1.1 client waits for `100 Continue` before its body.
    pub expect_continue: bool,
    /// Bytes of the head in the buffer.
    pub head_len: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All values of a list header, split on commas, trimmed, lower-cased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        tokens_of(&self.headers, name)
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The protocol as lines show it: `HTTP/1.0`, or `HTTP/1.1`.
    pub fn protocol(&self) -> &'static [u8] {
        match self.version {
            0 => b"HTTP/1.0",
            _ => b"HTTP/1.1",
        }
    }
}

/// Methods lbaws knows (RFC 9110 9 and PATCH); others get 501.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The `[limits]` a head is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: u64,
}

/// Parse a complete head from `buf`; `Ok(None)` while incomplete, `Err` with
/// the status that refuses it. The request is boxed (in the worker's
/// arena): it is passed down every call that answers it, and stack a worker
/// touches is stack it copies.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Box<Request>>, u16> {
    let skip = empty_lines(buf);
    let rest = &buf[skip..];
    let Some(lf) = memchr::memchr(b'\n', rest) else {
        // Refused as soon as the bytes cannot begin a request line (a TLS
        // handshake, say), rather than when the head's time runs out.
        return if rest == b"\r" || line_prefix_ok(rest) {
            Ok(None)
        } else {
            Err(400)
        };
    };
    let minor = request_line(&rest[..=lf])?;
    // httparse speaks 1.0 and 1.1 only: a later 1.x is parsed as 1.1 (its
    // version digit is at a known place: the line ends "HTTP/1.x\r\n").
    let patched: Vec<u8>;
    let src = if minor >= 2 {
        let mut copy = rest.to_vec();
        copy[lf - 2] = b'1';
        patched = copy;
        &patched[..]
    } else {
        rest
    };
    // Uninitialised slots: only those of headers present are ever written,
    // so a worker does not dirty pages for a hundred empty ones.
    let mut slots = Vec::with_capacity(limits.max_headers);
    let slots = &mut slots.spare_capacity_mut()[..limits.max_headers];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(src, slots) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    if skip + len > limits.max_header_bytes {
        return Err(431);
    }
    // httparse accepts a bare LF as a line end; RFC 9112 lets us refuse it,
    // and a bare CR is never valid.
    let head = &src[..len];
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\n' if i == 0 || head[i - 1] != b'\r' => return Err(400),
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err(400),
            _ => {}
        }
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let version = u8::from(minor >= 1);
    if target.len() > limits.max_uri_bytes {
        return Err(414);
    }
    // Control characters other than HTAB (obs-fold never gets this far:
    // httparse refuses it in requests).
    if req.headers.iter().any(|h| {
        h.value
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    }) {
        return Err(400);
    }
    if !KNOWN_METHODS.contains(&method) {
        return Err(501);
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let host_header = host(&headers, version)?;
    let framing = framing(&headers, version, limits)?;
    let t = target::split(method, target).ok_or(400u16)?;
    let path = target::normalize_path(t.path).ok_or(400u16)?;
    let connection = tokens_of(&headers, "connection");
    let keep_alive = if version == 1 {
        !connection.iter().any(|t| t == "close")
    } else {
        connection.iter().any(|t| t == "keep-alive")
    };
    let expect_continue = match value(&headers, "expect") {
        None => false,
        // RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored.
        Some(v) if v.eq_ignore_ascii_case(b"100-continue") => version == 1,
        Some(_) => return Err(417),
    };
    Ok(Some(Box::new(Request {
        method: method.to_string(),
        target: target.to_string(),
        path,
        query: t.query.map(str::to_string),
        version,
        host: t.host.or(host_header),
        headers,
        framing,
        keep_alive,
        expect_continue,
        head_len: skip + len,
    })))
}

/// Bytes of empty lines (CRLF only) before the request line.
fn empty_lines(buf: &[u8]) -> usize {
    let mut skip = 0;
    while buf[skip..].starts_with(b"\r\n") {
        skip += 2;
    }
    skip
}

/// Whether `buf`, refused or incomplete, begins a HEAD request: its answer
/// then carries no body (RFC 9110 9.3.2), even a refusal.
pub fn begins_head_request(buf: &[u8]) -> bool {
    buf[empty_lines(buf)..].starts_with(b"HEAD ")
}

/// Check a request line (with its line end); returns the minor version.
fn request_line(line: &[u8]) -> Result<u8, u16> {
    let line = line.strip_suffix(b"\r\n").ok_or(400u16)?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(400);
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(400);
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major == b'1' {
                Ok(minor - b'0')
            } else {
                Err(505)
            }
        }
        _ => Err(400),
    }
}

/// Whether `part`, with no LF yet, can still become a valid request line.
fn line_prefix_ok(part: &[u8]) -> bool {
    const VERSION: &[u8] = b"HTTP/d.d\r";
    let mut field = 0; // 0 method, 1 target, 2 version
    let mut start = 0;
    for (i, &b) in part.iter().enumerate() {
        let ok = match field {
            0 if b == b' ' && i > start => {
                (field, start) = (1, i + 1);
                true
            }
            0 => is_tchar(b),
            1 if b == b' ' && i > start => {
                (field, start) = (2, i + 1);
                true
            }
            1 => (0x21..0x7f).contains(&b),
            _ => match VERSION.get(i - start) {
                Some(b'd') => b.is_ascii_digit(),
                Some(&c) => b == c,
                None => false,
            },
        };
        if !ok {
            return false;
        }
    }
    true
}

fn count(headers: &[(String, Vec<u8>)], name: &str) -> usize {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .count()
}

fn value<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Host: exactly one in HTTP/1.1, at most one in 1.0, and well-formed.
fn host(headers: &[(String, Vec<u8>)], version: u8) -> Result<Option<String>, u16> {
    let hosts = count(headers, "host");
    if (version == 1 && hosts != 1) || hosts > 1 {
        return Err(400);
    }
    match value(headers, "host") {
        Some(h) => Ok(Some(target::valid_host(h).ok_or(400u16)?)),
        None => Ok(None),
    }
}

/// The body's framing (RFC 9112 6.1-6.3).
fn framing(headers: &[(String, Vec<u8>)], version: u8, limits: &Limits) -> Result<Framing, u16> {
    let has_te = count(headers, "transfer-encoding") > 0;
    let has_cl = count(headers, "content-length") > 0;
    if has_te && has_cl {
        return Err(400); // request smuggling territory: refuse and close
    }
    if has_te {
        if version == 0 {
            return Err(400);
        }
        let te = tokens_of(headers, "transfer-encoding");
        return match te.last().map(String::as_str) {
            Some("chunked") if te.len() == 1 => Ok(Framing::Chunked),
            Some("chunked") => Err(501), // e.g. gzip, chunked: a coding we do not decode
            _ => Err(400),               // chunked is not final: the length cannot be known
        };
    }
    let mut len: Option<u64> = None;
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(400);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(400u16)?;
            if len.is_some_and(|l| l != n) {
                return Err(400); // conflicting lengths
            }
            len = Some(n);
        }
    }
    match len {
        Some(0) | None => Ok(Framing::None),
        Some(n) if n > limits.max_body_bytes => Err(413),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// The comma-separated values of every `name` header, trimmed, lower-cased,
/// empty ones dropped.
fn tokens_of(headers: &[(String, Vec<u8>)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_headers: 100,
        max_header_bytes: 8192,
        max_uri_bytes: 4096,
        max_body_bytes: 1 << 20,
    };

    fn status(raw: &[u8]) -> u16 {
        match parse(raw, &LIMITS) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(s) => s,
        }
    }

    fn req(raw: &[u8]) -> Box<Request> {
        parse(raw, &LIMITS).unwrap().unwrap()
    }

    #[test]
    fn strict_heads() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n"), 0);
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400, "no Host");
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status(b"GET / HTTP/1.1\nHost: a\n\n"), 400, "bare LF");
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"),
            400,
            "bare CR"
        );
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
            400
        );
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"), 400);
        assert_eq!(status(b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
        assert_eq!(status(b"GET /../ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status(b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn request_lines() {
        // Only CRLF empty lines may precede it.
        assert_eq!(status(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status(b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        // Three parts, single spaces: otherwise 400, never 505.
        for bad in [
            &b"GE T / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.x\r\nHost: a\r\n\r\n",
            b"GET /\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(status(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n"), 505);
        // A later HTTP/1.x is served as 1.1.
        let r = req(b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n");
        assert_eq!((r.version, r.path.as_str(), r.head_len), (1, "/x", 28));
        assert_eq!(status(b"GET / HTTP/1.9\r\n\r\n"), 400, "1.1 rules: Host");
    }

    #[test]
    fn framing_rules() {
        let s = |h: &str| status(format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n").as_bytes());
        assert_eq!(s("Content-Length: 1\r\nTransfer-Encoding: chunked"), 400);
        assert_eq!(s("Transfer-Encoding: gzip"), 400);
        assert_eq!(s("Transfer-Encoding: gzip, chunked"), 501);
        assert_eq!(s("Content-Length: 1, 2"), 400);
        assert_eq!(s("Content-Length: 3, 3"), 200);
        assert_eq!(s("Content-Length: -1"), 400);
        assert_eq!(s("Content-Length: 99999999999"), 413);
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn hosts_and_expectations() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: [a.b]\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), 200);
        assert_eq!(status(b"GET http://[x]/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        let e = |v: &[u8]| {
            let mut raw = v.to_vec();
            raw.extend_from_slice(b"Expect: 100-continue\r\nContent-Length: 1\r\n\r\n");
            req(&raw).expect_continue
        };
        assert!(e(b"POST / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!e(b"POST / HTTP/1.0\r\n"), "ignored from 1.0");
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"),
            417
        );
    }

    #[test]
    fn absolute_form_and_keep_alive() {
        let r = req(b"GET http://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            (r.path.as_str(), r.query.as_deref(), r.host.as_deref()),
            ("/p", Some("q=1"), Some("example.com:8080"))
        );
        assert!(r.keep_alive);
        assert!(req(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn a_line_that_cannot_become_a_request_is_refused_before_its_end() {
        for partial in [
            &b"GET"[..],
            b"GET /a",
            b"GET / HTT",
            b"GET / HTTP/1.1\r",
            b"\r",
            b"\r\nGE",
        ] {
            assert_eq!(status(partial), 0, "{:?}", String::from_utf8_lossy(partial));
        }
        for bad in [
            &[0x16u8, 0x03, 0x01, 0x00, 0xa5][..],
            b"GET  ",
            b"GET / HTTP/1.1x",
            b"GET / FTP",
            b"G\x00",
            b"\r\r",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn head_requests_are_known_before_they_parse() {
        assert!(begins_head_request(b"HEAD / HTTP/1.1\r\n"));
        assert!(begins_head_request(b"\r\nHEAD /x"));
        assert!(!begins_head_request(b"GET / HTTP/1.1\r\n"));
        assert!(!begins_head_request(b"HEADER / HTTP/1.1\r\n"));
    }
}
