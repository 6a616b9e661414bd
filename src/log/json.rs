//! JSON access lines (`[log] access_format = "json"`): one object a line.
//!
//! The escaper is written here rather than taken from serde_json: the
//! values are raw request bytes, not strings (invalid UTF-8 must become
//! U+FFFD, which serde_json would need a lossy copy for), and the line has
//! a budget: the request's own bytes in it (target, host, referer, user
//! agent) are cut at `[limits] max_header_bytes` in all, so a line is
//! bounded whatever the head held. Escaping follows RFC 8259: `"` and `\`
//! escaped, control characters (and DEL) as `\u00XX`, everything else as
//! UTF-8; the output is always valid JSON.

use std::fmt::Write as _;

/// A line being built, with what is left of its budget for request bytes.
pub struct Line {
    pub out: String,
    budget: usize,
    first: bool,
}

impl Line {
    pub fn new(budget: usize) -> Line {
        let mut out = String::with_capacity(256);
        out.push('{');
        Line {
            out,
            budget,
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    /// `"k":"text"` for text of lbaws's own (not counted against the budget).
    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push('"');
        escape(&mut self.out, v.as_bytes(), usize::MAX);
        self.out.push('"');
    }

    /// `"k":"..."` for request bytes (counted against the budget; cut with
    /// `...` when it runs out), or `null`.
    pub fn bytes(&mut self, k: &str, v: Option<&[u8]>) {
        self.key(k);
        let Some(v) = v else {
            self.out.push_str("null");
            return;
        };
        self.out.push('"');
        let used = escape(&mut self.out, v, self.budget);
        if used < v.len() {
            self.out.push_str("...");
        }
        self.budget = self.budget.saturating_sub(used);
        self.out.push('"');
    }

    pub fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    pub fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }

    pub fn null(&mut self, k: &str) {
        self.key(k);
        self.out.push_str("null");
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Append `bytes` as the inside of a JSON string, taking at most `max` of
/// them (never splitting a character); how many were taken.
pub fn escape(out: &mut String, bytes: &[u8], max: usize) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // The length of the UTF-8 sequence at i, if it is a valid one.
        let (len, ch) = if b < 0x80 {
            (1, Some(b as char))
        } else {
            let n = match b {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => 1,
            };
            match bytes
                .get(i..i + n)
                .and_then(|s| std::str::from_utf8(s).ok())
            {
                Some(s) => (n, s.chars().next()),
                None => (1, None),
            }
        };
        if i + len > max {
            break;
        }
        match ch {
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some(c) if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            Some(c) => out.push(c),
            None => out.push('\u{fffd}'),
        }
        i += len;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8]) -> String {
        let mut s = String::new();
        escape(&mut s, b, usize::MAX);
        s
    }

    #[test]
    fn escapes_per_rfc_8259() {
        assert_eq!(esc(b"plain /path?x=1"), "plain /path?x=1");
        assert_eq!(esc(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(
            esc(b"\x00\x1f\n\r\t\x7f"),
            "\\u0000\\u001f\\u000a\\u000d\\u0009\\u007f"
        );
        assert_eq!(esc("é✓😀".as_bytes()), "é✓😀");
        // Invalid UTF-8: each bad byte is U+FFFD; what follows is kept.
        assert_eq!(esc(b"a\xffb\xc3"), "a\u{fffd}b\u{fffd}");
        assert_eq!(esc(b"\xed\xa0\x80x"), "\u{fffd}\u{fffd}\u{fffd}x");
    }

    #[test]
    fn a_budget_cuts_whole_characters() {
        let mut l = Line::new(5);
        l.bytes("a", Some(b"abc"));
        l.bytes("b", Some("é€x".as_bytes()));
        l.bytes("c", Some(b"zzz"));
        l.bytes("d", None);
        l.num("n", 7);
        l.bool("t", true);
        assert_eq!(
            l.finish(),
            "{\"a\":\"abc\",\"b\":\"é...\",\"c\":\"...\",\"d\":null,\"n\":7,\"t\":true}"
        );
    }
}
