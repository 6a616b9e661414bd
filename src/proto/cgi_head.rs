//! The header a CGI script writes before its body (RFC 3875 6.2-6.3): header
//! fields, one a line (LF or CRLF), ended by a blank line.
//!
//! [`parse`] takes the raw bytes the script has written so far and returns
//! the parsed head with where its body starts, "not complete yet", or why the
//! header is refused. It depends on `std` (and `proto`'s token rule) only,
//! never panics and bounds its work, whatever the bytes (a fuzz target calls
//! it on arbitrary input): it
//! looks at no more than [`MAX_HEAD`] bytes, refuses more than [`MAX_FIELDS`]
//! fields, and refuses a line as soon as that line is complete, so a caller
//! that calls it again each time a line ends does a bounded amount of work in
//! all.
//!
//! The rules it enforces, each a refusal (the server answers 502):
//!
//! - a field is `name: value`; the name a token, the value without control
//!   characters (a bare CR, NUL, DEL...) but HTAB; no obs-fold; UTF-8;
//! - `Status` is three digits, optionally followed by a reason phrase (which
//!   the server does not pass on), and a *final* status, 200 to 599: a script
//!   cannot send an interim response (1xx), which the client would take as
//!   the forerunner of a final response that never comes, leaving the
//!   connection out of step (a pipelined request after it would hang);
//! - `Content-Length` is digits only and fits in 64 bits;
//! - `Status`, `Content-Type`, `Location` and `Content-Length` appear at most
//!   once (which of two would be meant is not for the server to guess).
//!
//! Fields that frame the message or manage the connection belong to the
//! server and are dropped (`Connection`, `Keep-Alive`, `Transfer-Encoding`,
//! `TE`, `Trailer`, `Upgrade`, `Proxy-Connection`), as are `Date` and
//! `Server`, which the server writes itself.

use super::is_tchar;
use std::fmt;

/// The longest header accepted, blank line included.
pub const MAX_HEAD: usize = 64 << 10;
/// The most header fields accepted.
pub const MAX_FIELDS: usize = 100;

/// Fields the server writes itself or that would break its framing.
const SERVER_OWNED: [&str; 9] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "date",
    "server",
];

/// A parsed CGI response header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgiHead {
    /// `Status:`, a final status (200-599).
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub content_length: Option<u64>,
    /// The other fields, in the script's order and spelling, the
    /// server-owned ones left out.
    pub other: Vec<(String, String)>,
}

/// Why a header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No blank line within [`MAX_HEAD`] bytes.
    TooLarge,
    /// More than [`MAX_FIELDS`] fields.
    TooManyFields,
    /// Line `n` (1-based) is not UTF-8.
    NotUtf8(usize),
    /// Line `n` is not `name: value` with a token name.
    BadField(usize),
    /// Line `n` has a control character in its value.
    BadValue(usize),
    /// `Status:` is not three digits of a final status.
    BadStatus,
    /// `Status: 1xx`: an interim response, not a final one.
    Interim(u16),
    /// `Content-Length:` is not a 64-bit decimal number.
    BadContentLength,
    /// One of the fields that may appear once appears again.
    Duplicate(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLarge => write!(f, "response header larger than {MAX_HEAD} bytes"),
            Refusal::TooManyFields => write!(f, "more than {MAX_FIELDS} response header fields"),
            Refusal::NotUtf8(n) => write!(f, "malformed response header: line {n} is not UTF-8"),
            Refusal::BadField(n) => {
                write!(
                    f,
                    "malformed response header: line {n} is not a header field"
                )
            }
            Refusal::BadValue(n) => write!(
                f,
                "malformed response header: control character in line {n}"
            ),
            Refusal::BadStatus => write!(f, "malformed response header: bad Status"),
            Refusal::Interim(code) => {
                write!(f, "Status {code} is an interim response, not a final one")
            }
            Refusal::BadContentLength => {
                write!(f, "malformed response header: bad Content-Length")
            }
            Refusal::Duplicate(name) => {
                write!(f, "malformed response header: {name} more than once")
            }
        }
    }
}

/// Parse the start of a script's output. `Ok(Some((head, body_start)))`:
/// the header is complete and the body starts at `buf[body_start..]`;
/// `Ok(None)`: not complete yet (read more, and call again once a line has
/// ended or [`MAX_HEAD`] bytes have come); `Err`: refused.
pub fn parse(buf: &[u8]) -> Result<Option<(CgiHead, usize)>, Refusal> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut head = CgiHead::default();
    let mut start = 0;
    let mut fields = 0;
    let mut number = 0;
    while let Some(len) = window[start..].iter().position(|&b| b == b'\n') {
        let end = start + len;
        number += 1;
        let line = &window[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(Some((head, end + 1)));
        }
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(Refusal::TooManyFields);
        }
        field(&mut head, line, number)?;
        start = end + 1;
    }
    if buf.len() >= MAX_HEAD {
        return Err(Refusal::TooLarge);
    }
    Ok(None)
}

/// One `name: value` line into `head`.
fn field(head: &mut CgiHead, line: &[u8], number: usize) -> Result<(), Refusal> {
    let text = std::str::from_utf8(line).map_err(|_| Refusal::NotUtf8(number))?;
    let (name, value) = text.split_once(':').ok_or(Refusal::BadField(number))?;
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(Refusal::BadField(number));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Refusal::BadValue(number));
    }
    let once = |slot: bool, name: &'static str| {
        if slot {
            Err(Refusal::Duplicate(name))
        } else {
            Ok(())
        }
    };
    if name.eq_ignore_ascii_case("status") {
        once(head.status.is_some(), "Status")?;
        head.status = Some(status(value)?);
    } else if name.eq_ignore_ascii_case("content-type") {
        once(head.content_type.is_some(), "Content-Type")?;
        head.content_type = Some(value.to_string());
    } else if name.eq_ignore_ascii_case("location") {
        once(head.location.is_some(), "Location")?;
        head.location = Some(value.to_string());
    } else if name.eq_ignore_ascii_case("content-length") {
        once(head.content_length.is_some(), "Content-Length")?;
        head.content_length = Some(content_length(value)?);
    } else if !SERVER_OWNED.iter().any(|s| name.eq_ignore_ascii_case(s)) {
        head.other.push((name.to_string(), value.to_string()));
    }
    Ok(())
}

/// `Status: 404 Not Found`: the code, which must be a final one.
fn status(value: &str) -> Result<u16, Refusal> {
    let code = value.split([' ', '\t']).next().unwrap_or("");
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::BadStatus);
    }
    let n: u16 = code.parse().map_err(|_| Refusal::BadStatus)?;
    match n {
        100..=199 => Err(Refusal::Interim(n)),
        200..=599 => Ok(n),
        _ => Err(Refusal::BadStatus),
    }
}

fn content_length(value: &str) -> Result<u64, Refusal> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::BadContentLength);
    }
    value.parse().map_err(|_| Refusal::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (CgiHead, usize) {
        parse(raw).unwrap().expect("a complete head")
    }

    #[test]
    fn fields_status_and_where_the_body_starts() {
        let raw = b"Status: 404 Nope\r\nContent-Type: text/plain\r\nX-A:  b \r\n\r\nbody";
        let (h, body) = complete(raw);
        assert_eq!(h.status, Some(404));
        assert_eq!(h.content_type.as_deref(), Some("text/plain"));
        assert_eq!(h.other, vec![("X-A".to_string(), "b".to_string())]);
        assert_eq!(&raw[body..], b"body");
        // LF line ends, a Location, a length.
        let raw = b"Location: /x\nContent-Length: 12\n\nrest";
        let (h, body) = complete(raw);
        assert_eq!(
            (h.location.as_deref(), h.content_length),
            (Some("/x"), Some(12))
        );
        assert_eq!(&raw[body..], b"rest");
        // A status without a reason phrase; an empty head.
        assert_eq!(complete(b"Status: 200\n\n").0.status, Some(200));
        assert_eq!(complete(b"\r\nbody"), (CgiHead::default(), 2));
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        for raw in [
            &b""[..],
            b"Content-Type: text/plain",
            b"A: b\r\n",
            b"A: b\n\r",
        ] {
            assert_eq!(parse(raw), Ok(None), "{raw:?}");
        }
    }

    #[test]
    fn interim_statuses_are_refused() {
        for code in [100, 101, 103, 199] {
            let raw = format!("Status: {code} Continue\r\n\r\n");
            assert_eq!(parse(raw.as_bytes()), Err(Refusal::Interim(code)));
        }
        // Refused as soon as the line is complete, before the blank line.
        assert_eq!(parse(b"Status: 100\n"), Err(Refusal::Interim(100)));
    }

    #[test]
    fn bad_statuses_lengths_and_fields() {
        let cases: &[(&[u8], Refusal)] = &[
            (b"Status: abc\n\n", Refusal::BadStatus),
            (b"Status: 20\n\n", Refusal::BadStatus),
            (b"Status: 2000\n\n", Refusal::BadStatus),
            (b"Status: +99\n\n", Refusal::BadStatus),
            (b"Status: 600 Beyond\n\n", Refusal::BadStatus),
            (b"Status: 099\n\n", Refusal::BadStatus),
            (b"Status:\n\n", Refusal::BadStatus),
            (b"Content-Length: +5\n\n", Refusal::BadContentLength),
            (b"Content-Length: -1\n\n", Refusal::BadContentLength),
            (b"Content-Length: 1 2\n\n", Refusal::BadContentLength),
            (b"Content-Length: \n\n", Refusal::BadContentLength),
            (
                b"Content-Length: 99999999999999999999\n\n",
                Refusal::BadContentLength,
            ),
            (b"Content-Type text/plain\n\n", Refusal::BadField(1)),
            (b"A: b\nBad Name: x\n\n", Refusal::BadField(2)),
            (b": x\n\n", Refusal::BadField(1)),
            (b"A: b\n folded\n\n", Refusal::BadField(2)),
            (b"A: b\rc\n\n", Refusal::BadValue(1)),
            (b"A: b\x00\n\n", Refusal::BadValue(1)),
            (b"A: b\x7f\n\n", Refusal::BadValue(1)),
            (b"A: \xff\n\n", Refusal::NotUtf8(1)),
            (
                b"Status: 200\nStatus: 404\n\n",
                Refusal::Duplicate("Status"),
            ),
            (
                b"Content-Length: 1\ncontent-length: 1\n\n",
                Refusal::Duplicate("Content-Length"),
            ),
            (
                b"Location: /a\nLocation: /b\n\n",
                Refusal::Duplicate("Location"),
            ),
            (
                b"Content-Type: a/b\nContent-Type: c/d\n\n",
                Refusal::Duplicate("Content-Type"),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw), Err(*want), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn server_owned_fields_are_dropped() {
        let (h, _) = complete(
            b"Content-Type: a/b\nConnection: close\nTransfer-Encoding: chunked\nKeep-Alive: 5\n\
              TE: x\nTrailer: y\nUpgrade: z\nProxy-Connection: k\nDate: d\nServer: s\nX-Kept: 1\n\n",
        );
        assert_eq!(h.other, vec![("X-Kept".to_string(), "1".to_string())]);
    }

    #[test]
    fn work_is_bounded() {
        // No blank line within MAX_HEAD bytes: refused, however much more came.
        let mut big = b"X-A: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&big), Err(Refusal::TooLarge));
        big.truncate(MAX_HEAD - 1);
        assert_eq!(parse(&big), Ok(None));
        // A blank line past MAX_HEAD does not count.
        let mut late = b"X-A: ".to_vec();
        late.resize(MAX_HEAD, b'a');
        late.extend_from_slice(b"\n\n");
        assert_eq!(parse(&late), Err(Refusal::TooLarge));
        // Too many fields: refused as soon as the one too many has ended.
        let many = "X: y\n".repeat(MAX_FIELDS + 1);
        assert_eq!(parse(many.as_bytes()), Err(Refusal::TooManyFields));
        assert_eq!(
            parse("X: y\n".repeat(MAX_FIELDS).as_bytes()),
            Ok(None),
            "exactly MAX_FIELDS so far is fine"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic sweep in place of the fuzzer: every prefix of
        // a few tricky inputs, and pseudo-random bytes.
        let seeds: [&[u8]; 4] = [
            b"Status: 204\r\nContent-Length: 5\r\n\r\nhello",
            b"\r\r\n\n\n:",
            b"A:\xc3\x28\n\n",
            b"Location:\t/x\t\n\r\n",
        ];
        for s in seeds {
            for i in 0..=s.len() {
                let _ = parse(&s[..i]);
            }
        }
        let mut x: u32 = 0x1234_5678;
        let alphabet = b"ab:\r\n \t\x00\xff1S";
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf.push(alphabet[x as usize % alphabet.len()]);
            if buf.len() > 300 {
                buf.clear();
            }
            let _ = parse(&buf);
        }
    }
}
