//! `headers = { "Strict-Transport-Security" = "max-age=63072000", ... }` on
//! a site and on a route: fields added to every response of theirs, errors
//! included (nginx's `add_header ... always`).
//!
//! Checked when the configuration is read: a field name is a token, a value
//! has no CR, LF, NUL or other control byte and no leading or trailing
//! space; framing and hop-by-hop fields, and the fields lbaws writes itself,
//! are refused, except the two it lets a configuration replace: `Server`
//! (instead of `Server: lbaws`) and `Cache-Control` (static files send none;
//! the status page's `no-store` gives way). A CGI script's field of the same
//! name as a configured one is dropped: the configuration's word wins.

use super::raw::RawTable;
use super::validate::Invalid;

/// Fields the configuration adds to responses, ready to copy into a head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// `Name: value\r\n` for each, in order.
    pub block: String,
    /// The fields as written (name, value), for `check --explain`.
    pub list: Vec<(String, String)>,
}

/// Fields no configuration may set: framing, hop-by-hop, and what lbaws
/// writes itself.
const REFUSED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "date",
    "content-type",
    "content-range",
    "content-encoding",
    "location",
    "allow",
    "etag",
    "last-modified",
    "accept-ranges",
    "vary",
    "retry-after",
    "status",
    "host",
];

/// At most this many fields on one site or route.
pub const MAX_FIELDS: usize = 64;
/// The longest field name and value.
pub const MAX_NAME: usize = 128;
pub const MAX_VALUE: usize = 4096;
/// The most bytes of fields one response may get from a site and a route.
pub const MAX_BLOCK: usize = 16 << 10;

impl Fields {
    /// Is `name` (any case) among them?
    pub fn has(&self, name: &str) -> bool {
        self.list.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// These, then `other`'s that these do not set (a route's over its site's).
    pub fn over(&self, other: &Fields) -> Fields {
        let mut out = self.clone();
        for (n, v) in &other.list {
            if !self.has(n) {
                out.push(n, v);
            }
        }
        out
    }

    fn push(&mut self, name: &str, value: &str) {
        self.block.push_str(name);
        self.block.push_str(": ");
        self.block.push_str(value);
        self.block.push_str("\r\n");
        self.list.push((name.to_string(), value.to_string()));
    }
}

/// A `headers` table, checked.
pub(super) fn fields(t: &RawTable) -> Result<Fields, Invalid> {
    if t.get_ref().len() > MAX_FIELDS {
        return Err((t.span(), format!("headers: more than {MAX_FIELDS} fields")));
    }
    let mut out = Fields::default();
    for (name, value) in t.get_ref() {
        let n = name.get_ref();
        if n.is_empty() || n.len() > MAX_NAME || !n.bytes().all(lbaws::proto::is_tchar) {
            return Err((
                name.span(),
                format!("header name {n:?} is not a field name (letters, digits and !#$%&'*+-.^_`|~, at most {MAX_NAME})"),
            ));
        }
        let lower = n.to_ascii_lowercase();
        if REFUSED.contains(&lower.as_str()) {
            return Err((
                name.span(),
                format!("header {n:?} cannot be set: lbaws writes it (framing, hop-by-hop, or its own); Server and Cache-Control may be"),
            ));
        }
        if out.has(n) {
            return Err((name.span(), format!("header {n:?} is set twice")));
        }
        let v = value.get_ref();
        if let Some(b) = v.bytes().find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err((
                value.span(),
                format!("header {n:?}: a value has no control characters (byte 0x{b:02x}: CR, LF and NUL could split the response)"),
            ));
        }
        if v.len() > MAX_VALUE {
            return Err((
                value.span(),
                format!("header {n:?}: value longer than {MAX_VALUE} bytes"),
            ));
        }
        if v.trim_matches([' ', '\t']) != v {
            return Err((
                value.span(),
                format!("header {n:?}: a value has no leading or trailing space"),
            ));
        }
        out.push(n, v);
    }
    if out.block.len() > MAX_BLOCK {
        return Err((t.span(), format!("headers: more than {MAX_BLOCK} bytes")));
    }
    Ok(out)
}
