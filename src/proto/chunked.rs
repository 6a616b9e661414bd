//! The chunked transfer coding (RFC 9112 7.1), decoded a byte at a time by a
//! state machine, so that what it accepts never depends on how the body was
//! split across reads.
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-val  = token / quoted-string
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! Held to the letter: whitespace only before a `;` or around `=` (never
//! before or after a bare size: `" 5"` and `"0 "` are refused), extensions
//! checked against their grammar (no control bytes, no NUL, no byte above
//! 0x7E outside a quoted string), CRLF only. A size line (with extensions)
//! may be [`MAX_LINE`] bytes and the trailers [`MAX_TRAILERS`], counted the
//! same however the bytes arrive. Extensions and trailers are read and
//! dropped.

use super::is_tchar;

/// Longest chunk-size line, extensions included, without its CRLF.
pub const MAX_LINE: usize = 4096;
/// Most bytes of trailer field lines.
pub const MAX_TRAILERS: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not chunked framing: 400.
    Bad,
    /// The decoded body would exceed the limit: 413.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a size (`digits`: at least one seen).
    Size {
        digits: bool,
    },
    /// Whitespace after a size or an extension: only more, or `;`.
    BeforeSemi,
    /// After `;`: whitespace, then an extension's name.
    AfterSemi,
    ExtName,
    /// Whitespace after a name: `=` or `;` must follow.
    AfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    AfterEq,
    ExtToken,
    Quoted,
    QuotedPair,
    AfterQuoted,
    /// CR of the size line seen.
    SizeLf,
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Start of a trailer field line, or the CR of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// The decoder of one chunked body.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// The size being read.
    size: u64,
    /// Bytes of the current size line.
    line: usize,
    /// Decoded bytes so far.
    total: u64,
    max: u64,
    trailers: usize,
}

impl Decoder {
    /// A decoder for a body of at most `max` decoded bytes.
    pub fn new(max: u64) -> Self {
        Decoder {
            state: State::Size { digits: false },
            size: 0,
            line: 0,
            total: 0,
            max,
            trailers: 0,
        }
    }

    /// The body has ended (its final CRLF was read).
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The sum of the chunk sizes read so far: once [`done`](Self::done),
    /// the body's length.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Decode from the start of `input`: returns how many bytes of it were
    /// used and the body data among them (a slice of `input`, possibly
    /// empty). Stops after one run of data, at the end of the body, or
    /// when `input` is used up; call again with what follows.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), Error> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data { left } => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    return Ok((i + n, &input[i..i + n]));
                }
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok((i, &[]))
    }

    /// One byte of framing.
    fn step(&mut self, b: u8) -> Result<(), Error> {
        use State::*;
        let ws = b == b' ' || b == b'\t';
        if self.in_size_line() {
            self.line += 1;
            if self.line > MAX_LINE + 2 {
                return Err(Error::Bad);
            }
        }
        if self.in_trailers() {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return Err(Error::Bad);
            }
        }
        self.state = match (self.state, b) {
            (Size { .. }, _) if b.is_ascii_hexdigit() => {
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(d))
                    .ok_or(Error::TooLarge)?;
                Size { digits: true }
            }
            (Size { digits: true }, b';') => AfterSemi,
            (Size { digits: true }, _) if ws => BeforeSemi,
            (Size { digits: true }, b'\r') => SizeLf,
            (BeforeSemi, _) if ws => BeforeSemi,
            (BeforeSemi, b';') => AfterSemi,
            (AfterSemi, _) if ws => AfterSemi,
            (AfterSemi, _) if is_tchar(b) => ExtName,
            (ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, _) if ws => AfterName,
            (ExtName | AfterName, b'=') => AfterEq,
            (ExtName | AfterName, b';') => AfterSemi,
            (ExtName, b'\r') => SizeLf,
            (AfterName, _) if ws => AfterName,
            (AfterEq, _) if ws => AfterEq,
            (AfterEq, b'"') => Quoted,
            (AfterEq | ExtToken, _) if is_tchar(b) => ExtToken,
            (ExtToken | AfterQuoted, _) if ws => BeforeSemi,
            (ExtToken | AfterQuoted, b';') => AfterSemi,
            (ExtToken | AfterQuoted, b'\r') => SizeLf,
            (Quoted, b'"') => AfterQuoted,
            (Quoted, b'\\') => QuotedPair,
            (Quoted, _) if ws || b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80 => Quoted,
            (QuotedPair, _) if ws || (0x21..=0x7e).contains(&b) || b >= 0x80 => Quoted,
            (SizeLf, b'\n') => self.size_line_done()?,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: false },
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => {
                TrailerValue
            }
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(Error::Bad),
        };
        Ok(())
    }

    /// The LF of a size line: a chunk's data follows, or the trailers.
    fn size_line_done(&mut self) -> Result<State, Error> {
        let size = std::mem::take(&mut self.size);
        self.line = 0;
        if size == 0 {
            return Ok(State::TrailerStart);
        }
        self.total = self.total.checked_add(size).ok_or(Error::TooLarge)?;
        if self.total > self.max {
            return Err(Error::TooLarge);
        }
        Ok(State::Data { left: size })
    }

    fn in_size_line(&self) -> bool {
        !matches!(
            self.state,
            State::Data { .. }
                | State::DataCr
                | State::DataLf
                | State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
                | State::Done
        )
    }

    fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart | State::TrailerName | State::TrailerValue | State::TrailerLf
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in pieces of `step` bytes: the body, or the error.
    fn decode_in(input: &[u8], step: usize, max: u64) -> Result<Vec<u8>, Error> {
        let mut d = Decoder::new(max);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let (used, data) = d.feed(&pending)?;
                body.extend_from_slice(data);
                pending.drain(..used);
                if used == 0 || pending.is_empty() || d.done() {
                    break;
                }
            }
            if d.done() {
                return Ok(body);
            }
        }
        Err(Error::Bad) // incomplete
    }

    fn decode(input: &[u8]) -> Result<Vec<u8>, Error> {
        let whole = decode_in(input, input.len().max(1), 1 << 20);
        for step in [1, 2, 3, 7] {
            assert_eq!(decode_in(input, step, 1 << 20), whole, "split by {step}");
        }
        whole
    }

    #[test]
    fn valid_bodies() {
        assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n"), Ok(b"hello".to_vec()));
        assert_eq!(
            decode(b"3\r\nabc\r\n00A\r\n0123456789\r\n000\r\n\r\n"),
            Ok(b"abc0123456789".to_vec())
        );
        assert_eq!(decode(b"0\r\n\r\n"), Ok(vec![]));
        assert_eq!(
            decode(b"1;a=b;c;d=\"q \\\" x\"\r\nz\r\n0;e\r\nT: v\r\nU:\r\n\r\n"),
            Ok(b"z".to_vec())
        );
        assert_eq!(
            decode(b"1 ; a = b\r\nz\r\n0\t;x\r\n\r\n"),
            Ok(b"z".to_vec())
        );
        assert_eq!(decode(b"1;a=\"\xff\"\r\nz\r\n0\r\n\r\n"), Ok(b"z".to_vec()));
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"0 \r\n\r\n",
            b"\t0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a b\r\nhello\r\n0\r\n\r\n",
            b"5;a\x00\r\nhello\r\n0\r\n\r\n",
            b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
            b"5;\xff\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\x00\"\r\nhello\r\n0\r\n\r\n",
            b"5;=b\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"0\r\n T: v\r\n\r\n",
            b"0\r\nT v\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nT: \x00\r\n\r\n",
        ] {
            assert_eq!(
                decode(bad),
                Err(Error::Bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits_hold_however_the_bytes_arrive() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE - 2));
        long.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(decode(&long), Ok(b"z".to_vec()), "a line of MAX_LINE");
        let mut longer = b"1;".to_vec();
        longer.extend(std::iter::repeat_n(b'a', MAX_LINE - 1));
        longer.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(decode(&longer), Err(Error::Bad), "one byte more");
        assert_eq!(
            decode_in(b"11\r\n", 4, 16),
            Err(Error::TooLarge),
            "over max"
        );
        assert_eq!(
            decode_in(b"ffffffffffffffffff\r\n", 4, 16),
            Err(Error::TooLarge)
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..(MAX_TRAILERS / 8 + 1) {
            trailers.extend_from_slice(b"T: 123\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(decode(&trailers), Err(Error::Bad));
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut d = Decoder::new(100);
        let input = b"2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (used, data) = d.feed(input).unwrap();
        assert_eq!((used, data), (5, &b"ab"[..]));
        let (used2, data) = d.feed(&input[used..]).unwrap();
        assert!(data.is_empty() && d.done());
        assert_eq!(&input[used + used2..], b"GET / HTTP/1.1\r\n");
        assert_eq!(d.total(), 2);
    }
}
