//! The request parser: a head read incrementally under hard limits, parsed by
//! `httparse`, then held to RFC 9112's MUSTs. Anything malformed is refused
//! with its status (and the connection then closes): lbaws never guesses.
//!
//! The target is percent-decoded once, dot segments removed (RFC 3986 5.2.4)
//! and repeated slashes merged *before* routing; `%00`, an encoded `/`, and a
//! path that climbs above `/` are refused.

use super::conn::{Conn, ReadErr};
use crate::config::Limits;
use std::time::Instant;

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
    /// HTTP/1.`version`: 0 or 1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Host from the target (absolute-form) or the Host header (validated;
    /// CGI's SERVER_NAME comes from it).
    pub host: Option<String>,
    pub framing: Framing,
    /// The client allows the connection to stay open.
    pub keep_alive: bool,
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
}

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

/// Methods lbaws knows (RFC 9110 9 and PATCH); others get 501.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

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

/// Parse a complete head from `buf`; `Ok(None)` while incomplete. The
/// request is boxed (in the worker's arena): it is passed down every call
/// that answers it, and stack a worker touches is stack it copies.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Box<Request>>, Refusal> {
    let bad = Refusal::Status(400);
    // Tolerate (only) empty lines before the request line (RFC 9112 2.2).
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    // Uninitialised slots: only the headers present are ever written, so a
    // worker does not dirty pages for a hundred empty ones.
    // Uninitialised: only the slots of headers present are ever written.
    let mut slots = Vec::with_capacity(limits.max_headers);
    let slots = &mut slots.spare_capacity_mut()[..limits.max_headers];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(&buf[skip..], slots) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => skip + n,
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::Status(431)),
        Err(httparse::Error::Version) if looks_like_other_version(&buf[skip..]) => {
            return Err(Refusal::Status(505))
        }
        Err(_) => return Err(bad),
    };
    if len > limits.max_header_bytes {
        return Err(Refusal::Status(431));
    }
    // httparse accepts a bare LF as a line end; RFC 9112 lets us refuse it,
    // and a bare CR is never valid.
    let head = &buf[skip..len];
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\n' if i == 0 || head[i - 1] != b'\r' => return Err(bad),
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err(bad),
            _ => {}
        }
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let version = req.version.unwrap_or(1);
    if target.len() > limits.max_uri_bytes {
        return Err(Refusal::Status(414));
    }
    for h in req.headers.iter() {
        // Control characters other than HTAB (obs-fold never gets this far:
        // httparse refuses it in requests).
        if h.value
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(bad);
        }
    }
    if !KNOWN_METHODS.contains(&method) {
        return Err(Refusal::Status(501));
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let count = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };

    // Host: exactly one in HTTP/1.1, at most one in 1.0, and well-formed.
    let hosts = count("host");
    if (version == 1 && hosts != 1) || hosts > 1 {
        return Err(bad);
    }
    let host_header = match value("host") {
        Some(h) => Some(valid_host(h).ok_or(Refusal::Status(400))?),
        None => None,
    };

    // Body framing.
    let te = tokens_of(&headers, "transfer-encoding");
    let has_te = count("transfer-encoding") > 0;
    let has_cl = count("content-length") > 0;
    if has_te && has_cl {
        return Err(bad); // request smuggling territory: refuse and close
    }
    let framing = if has_te {
        if version == 0 {
            return Err(bad);
        }
        match te.last().map(String::as_str) {
            Some("chunked") if te.len() == 1 => Framing::Chunked,
            Some("chunked") => return Err(Refusal::Status(501)), // e.g. gzip, chunked: a coding we do not decode
            _ => return Err(bad), // chunked is not final: the length cannot be known
        }
    } else if has_cl {
        let mut len: Option<u64> = None;
        for (_, v) in headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            for part in v.split(|&b| b == b',') {
                let part = part.trim_ascii();
                if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                    return Err(bad);
                }
                let n: u64 = std::str::from_utf8(part)
                    .unwrap()
                    .parse()
                    .map_err(|_| Refusal::Status(400))?;
                if len.is_some_and(|l| l != n) {
                    return Err(bad); // conflicting lengths
                }
                len = Some(n);
            }
        }
        match len {
            Some(0) | None => Framing::None,
            Some(n) if n > limits.max_body_bytes => return Err(Refusal::Status(413)),
            Some(n) => Framing::Length(n),
        }
    } else {
        Framing::None
    };

    // Target: origin-form, absolute-form, or "*" for OPTIONS.
    let (raw_path, query, target_host) =
        split_target(method, target).ok_or(Refusal::Status(400))?;
    let path = normalize_path(raw_path)?;

    let connection = tokens_of(&headers, "connection");
    let keep_alive = if version == 1 {
        !connection.iter().any(|t| t == "close")
    } else {
        connection.iter().any(|t| t == "keep-alive")
    };
    let expect_continue = match value("expect") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(b"100-continue") => true,
        Some(_) => return Err(Refusal::Status(417)),
    };
    Ok(Some(Box::new(Request {
        method: method.to_string(),
        target: target.to_string(),
        path,
        query: query.map(str::to_string),
        version,
        host: target_host.or(host_header),
        headers,
        framing,
        keep_alive,
        expect_continue,
        head_len: len,
    })))
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

/// A Host value: reg-name, IPv4 or [IPv6], optional port; returned lower-cased.
fn valid_host(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?;
    if s.is_empty() || s.len() > 255 {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        if !h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
            return None;
        }
    }
    if !s.starts_with('[')
        && (host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)))
    {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

/// Split a target into (path, query, host-from-absolute-form).
fn split_target<'a>(
    method: &str,
    target: &'a str,
) -> Option<(&'a str, Option<&'a str>, Option<String>)> {
    if target.contains('#') {
        return None;
    }
    let (rest, host) = if target.starts_with('/') {
        (target, None)
    } else if target == "*" {
        return (method == "OPTIONS").then_some(("*", None, None));
    } else {
        let lower = target
            .get(..8)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let after = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return None;
        };
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let host = valid_host(&after.as_bytes()[..end])?;
        let rest = &after[end..];
        if rest.is_empty() || rest.starts_with('?') {
            // "http://h" or "http://h?q": the path is "/"
            return Some(("/", rest.strip_prefix('?'), Some(host)));
        }
        (rest, Some(host))
    };
    match rest.split_once('?') {
        Some((p, q)) => Some((p, Some(q), host)),
        None => Some((rest, None, host)),
    }
}

/// Percent-decode once, refuse `%00` and an encoded `/`, remove dot segments,
/// merge repeated slashes, refuse climbing above the root.
pub fn normalize_path(raw: &str) -> Result<String, Refusal> {
    let bad = || Refusal::Status(400);
    if raw == "*" {
        return Ok("*".into());
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).map_err(|_| bad())?, 16)
                .map_err(|_| bad())?;
            if v == 0 || v == b'/' {
                return Err(bad());
            }
            decoded.push(v);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = decoded.ends_with('/');
    for seg in decoded.split('/') {
        match seg {
            "" => {}
            "." => trailing = true,
            ".." => {
                out.pop().ok_or_else(bad)?;
                trailing = true;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    if decoded.ends_with('/') {
        trailing = true;
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if out.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
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

    fn limits() -> Limits {
        crate::config::parse("", "t").unwrap().limits
    }

    fn status(raw: &[u8]) -> u16 {
        match parse(raw, &limits()) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(Refusal::Status(s)) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn normalizes_paths() {
        let n = |p: &str| normalize_path(p).map_err(|_| ());
        assert_eq!(n("/a/./b/../c"), Ok("/a/c".into()));
        assert_eq!(n("/a/b/.."), Ok("/a/".into()));
        assert_eq!(n("//a///b/"), Ok("/a/b/".into()));
        assert_eq!(n("/%61/%2e%2E/x"), Ok("/x".into()));
        assert_eq!(
            n("/%252e%252e/"),
            Ok("/%2e%2e/".into()),
            "decoded once only"
        );
        assert_eq!(n("/"), Ok("/".into()));
        assert!(n("/../etc/passwd").is_err());
        assert!(n("/a/%2e%2e/%2e%2e/etc").is_err());
        assert!(n("/a%2fb").is_err());
        assert!(n("/a%00b").is_err());
        assert!(n("/a%zz").is_err());
        assert!(n("/a%2").is_err());
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
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            400,
            "space before colon"
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
            400,
            "obs-fold"
        );
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status(b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n"),
            200
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n"),
            413
        );
        assert_eq!(status(b"GET /../ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status(b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn absolute_form_and_keep_alive() {
        let r = parse(
            b"GET http://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            &limits(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.path.as_str(), r.query.as_deref(), r.host.as_deref()),
            ("/p", Some("q=1"), Some("example.com:8080"))
        );
        assert!(r.keep_alive);
        let r = parse(
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            &limits(),
        )
        .unwrap()
        .unwrap();
        assert!(r.keep_alive);
        let r = parse(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            &limits(),
        )
        .unwrap()
        .unwrap();
        assert!(!r.keep_alive);
    }
}
