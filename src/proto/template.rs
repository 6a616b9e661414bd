//! Redirect targets that keep the request: `to = "https://{host}{uri}"`.
//!
//! Placeholders: `{host}` (the host the request named, without its port),
//! `{uri}` (path and query as received), `{path}` (the decoded, normalised
//! path), `{query}` (the query as received, without `?`; empty if none) and
//! `{scheme}`. Anything else in braces is refused when the configuration is
//! read. What is substituted is made URI-safe: a byte that may not stand in
//! a URI is percent-encoded (so is a `%` that begins no `%XX`), and the
//! whole result is checked again to hold only visible ASCII, so no request
//! can put a CR, LF or space into a `Location` field.

/// A placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Host,
    Uri,
    Path,
    Query,
    Scheme,
}

impl Var {
    const ALL: [(&'static str, Var); 5] = [
        ("host", Var::Host),
        ("uri", Var::Uri),
        ("path", Var::Path),
        ("query", Var::Query),
        ("scheme", Var::Scheme),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A parsed redirect target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// What a request gives the placeholders.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The host without its port (an IPv6 literal keeps its brackets).
    pub host: &'a str,
    /// The request target as received (origin-form: path and query).
    pub target: &'a str,
    /// The decoded path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub scheme: &'a str,
}

/// The longest target a configuration may write.
pub const MAX_TEMPLATE: usize = 4096;

impl Template {
    /// Parse `to`: visible ASCII, placeholders in braces.
    pub fn parse(to: &str) -> Result<Template, String> {
        if to.is_empty() {
            return Err("redirect target is empty".into());
        }
        if to.len() > MAX_TEMPLATE {
            return Err(format!("redirect target longer than {MAX_TEMPLATE} bytes"));
        }
        if let Some(b) = to.bytes().find(|&b| !(0x21..=0x7e).contains(&b)) {
            return Err(format!(
                "redirect target has a space, a control or a non-ASCII character (byte 0x{b:02x}): percent-encode it"
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = to;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    pieces.push(Piece::Lit(rest.to_string()));
                    break;
                }
                Some(i) => {
                    if i > 0 {
                        pieces.push(Piece::Lit(rest[..i].to_string()));
                    }
                    let after = &rest[i..];
                    let close = match (after.starts_with('{'), after.find('}')) {
                        (true, Some(c)) => c,
                        _ => {
                            return Err(format!(
                                "redirect target {to:?}: unmatched brace (placeholders: {})",
                                names()
                            ))
                        }
                    };
                    let name = &after[1..close];
                    let var = Var::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| {
                            format!(
                                "redirect target {to:?}: unknown placeholder {{{name}}} (known: {})",
                                names()
                            )
                        })?;
                    pieces.push(Piece::Var(var));
                    rest = &after[close + 1..];
                }
            }
        }
        Ok(Template { pieces })
    }

    /// No placeholder: the same target for every request.
    pub fn fixed(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// Whether `{host}` is used (a request without a host needs a stand-in).
    pub fn uses_host(&self) -> bool {
        self.pieces.contains(&Piece::Var(Var::Host))
    }

    /// The target for a request; `None` if the result would not be a safe
    /// field value (which the encoding below should make impossible). It may
    /// be empty (`to = "{query}"` and no query): the caller refuses that.
    pub fn expand(&self, v: &Vars<'_>) -> Option<String> {
        let mut out = String::with_capacity(64);
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(Var::Host) => uri_safe(&mut out, v.host, false),
                Piece::Var(Var::Uri) => {
                    let (slash, rest) = origin_form(v.target);
                    out.push_str(slash);
                    uri_safe(&mut out, rest, false)
                }
                Piece::Var(Var::Path) => uri_safe(&mut out, v.path, true),
                Piece::Var(Var::Query) => uri_safe(&mut out, v.query.unwrap_or(""), false),
                Piece::Var(Var::Scheme) => uri_safe(&mut out, v.scheme, false),
            }
        }
        let safe = out.bytes().all(|b| (0x21..=0x7e).contains(&b));
        safe.then_some(out)
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => f.write_str(s)?,
                Piece::Var(v) => {
                    let name = Var::ALL.iter().find(|(_, x)| x == v).map_or("?", |p| p.0);
                    write!(f, "{{{name}}}")?
                }
            }
        }
        Ok(())
    }
}

fn names() -> String {
    Var::ALL
        .iter()
        .map(|(n, _)| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An absolute-form target's path and query (`http://h/p?q` is `/p?q`;
/// `http://h?q` is `/` and `?q`): a `/` to put first, and the rest.
fn origin_form(target: &str) -> (&'static str, &str) {
    if target.starts_with('/') || target == "*" {
        return ("", target);
    }
    let Some((_, after)) = target.split_once("://") else {
        return ("", target);
    };
    match after.find(['/', '?']) {
        Some(i) if after.as_bytes()[i] == b'/' => ("", &after[i..]),
        Some(i) => ("/", &after[i..]),
        None => ("/", ""),
    }
}

/// Append `s`, percent-encoding what may not stand in a URI. `decoded`: `s`
/// is a decoded path, so `%` is a character too (and `?`, `#` are data).
fn uri_safe(out: &mut String, s: &str, decoded: bool) {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let keep = match c {
            b'%' if !decoded => {
                b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
            }
            b'?' | b'#' if decoded => false,
            b'#' => false,
            c => c.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=".contains(&c),
        };
        if keep {
            out.push(c as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(c >> 4) as usize] as char);
            out.push(HEX[(c & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(host: &'a str, target: &'a str, path: &'a str, query: Option<&'a str>) -> Vars<'a> {
        Vars {
            host,
            target,
            path,
            query,
            scheme: "http",
        }
    }

    #[test]
    fn parse_and_expand() {
        let t = Template::parse("https://{host}{uri}").unwrap();
        assert_eq!(t.to_string(), "https://{host}{uri}");
        assert!(t.uses_host() && t.fixed().is_none());
        let v = vars("example.org", "/a%20b?x=1&y", "/a b", Some("x=1&y"));
        assert_eq!(t.expand(&v).unwrap(), "https://example.org/a%20b?x=1&y");
        let t = Template::parse("https://new.example/{path}?{query}#top").unwrap();
        assert_eq!(
            t.expand(&v).unwrap(),
            "https://new.example//a%20b?x=1&y#top"
        );
        let t = Template::parse("{scheme}://[{host}]").unwrap();
        assert_eq!(t.expand(&v).unwrap(), "http://[example.org]");
        assert_eq!(
            Template::parse("https://fixed/").unwrap().fixed(),
            Some("https://fixed/")
        );
    }

    #[test]
    fn ipv6_and_absolute_form() {
        let t = Template::parse("https://{host}{uri}").unwrap();
        let v = vars("[::1]", "http://[::1]:8080/p?q=1", "/p", Some("q=1"));
        assert_eq!(t.expand(&v).unwrap(), "https://[::1]/p?q=1");
        let v = vars("h", "http://h?q", "/", Some("q"));
        assert_eq!(t.expand(&v).unwrap(), "https://h/?q");
        let v = vars("h", "http://h", "/", None);
        assert_eq!(t.expand(&v).unwrap(), "https://h/");
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "https://{host",
            "https://host}",
            "https://{nope}",
            "https://{}",
            "https://x/ y",
            "https://x/\r\nSet-Cookie: a",
            "https://x/é",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Whatever the request brings, the result is visible ASCII: no CR, LF,
    /// space or other byte that could end or split the Location field.
    #[test]
    fn hostile_values_are_encoded() {
        let t = Template::parse("https://{host}{uri}/{path}?{query}").unwrap();
        let nasty = "a\r\nSet-Cookie: x=1 \"<>\\^`{|}\u{7f}é%zz%4G%41#";
        let v = vars(nasty, nasty, nasty, Some(nasty));
        let out = t.expand(&v).unwrap();
        assert!(out.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{out}");
        assert!(out.contains("%0D%0A") && out.contains("%25zz") && out.contains("%41"));
        // A '%' of the decoded path is data.
        let t = Template::parse("/{path}").unwrap();
        assert_eq!(
            t.expand(&vars("h", "/", "/100%?#", None)).unwrap(),
            "//100%25%3F%23"
        );
    }
}
