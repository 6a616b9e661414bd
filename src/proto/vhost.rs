//! Name-based virtual hosts: which site a request's host names.
//!
//! A site's `names` are exact names (`example.org`, `192.0.2.1`, `[::1]`)
//! and leading-label wildcards (`*.example.net`: one label, any, before
//! `example.net`, as a certificate's wildcard; not `example.net` itself,
//! nor `a.b.example.net`). Names are compared without regard to case; a
//! trailing dot and the port of the request's host are ignored, and IPv6
//! literals compare as addresses (`[0::1]` is `[::1]`).
//!
//! An exact name wins over a wildcard. Lookups allocate nothing: the names
//! are kept sorted (by length, then bytes) and searched with a comparison
//! that folds case as it goes.

use std::cmp::Ordering;
use std::net::Ipv6Addr;

/// The longest DNS name (RFC 1035), without a trailing dot.
pub const MAX_NAME: usize = 253;

/// A site name from the configuration, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// A DNS name or an IPv4 address, lower-case, without a trailing dot.
    Exact(String),
    /// An IPv6 literal, `[...]` in the configuration.
    V6(Ipv6Addr),
    /// `*.SUFFIX`: the suffix, lower-case.
    Wildcard(String),
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::V6(a) => write!(f, "[{a}]"),
            Pattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// How a host found its site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Exact,
    Wildcard,
}

/// Check a configured name: `example.org`, `*.example.net`, `192.0.2.1`,
/// `[2001:db8::1]`; no port, no scheme, no path.
pub fn pattern(name: &str) -> Result<Pattern, String> {
    if let Some(inner) = name.strip_prefix('[') {
        let Some(addr) = inner.strip_suffix(']') else {
            return Err(format!("site name {name:?}: an IPv6 literal ends with ']'"));
        };
        return addr
            .parse::<Ipv6Addr>()
            .map(Pattern::V6)
            .map_err(|_| format!("site name {name:?}: not an IPv6 address between the brackets"));
    }
    let lower = name.to_ascii_lowercase();
    let (wild, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    dns_name(rest).map_err(|why| format!("site name {name:?}: {why}"))?;
    Ok(if wild {
        Pattern::Wildcard(rest.to_string())
    } else {
        Pattern::Exact(rest.to_string())
    })
}

/// Labels of letters, digits, `-` and `_` (which some internal names use),
/// 1-63 bytes each, at most [`MAX_NAME`] in all.
fn dns_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > MAX_NAME {
        return Err("longer than 253 bytes");
    }
    if s.contains('*') {
        return Err("a wildcard is only '*.' before the rest of a name");
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters");
        }
        let ok = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err("a name has letters, digits, '-', '_' and dots only (no port, no scheme)");
        }
    }
    Ok(())
}

/// The names of all sites, each to its site's index.
#[derive(Debug, Clone, Default)]
pub struct Names {
    exact: Vec<(Box<str>, u32)>,
    wild: Vec<(Box<str>, u32)>,
    v6: Vec<(Ipv6Addr, u32)>,
}

impl Names {
    /// Add a name of `site`; `Err(other)`: site `other` has it already.
    pub fn insert(&mut self, p: &Pattern, site: u32) -> Result<(), u32> {
        let (list, key) = match p {
            Pattern::V6(a) => {
                if let Some((_, other)) = self.v6.iter().find(|(b, _)| b == a) {
                    return Err(*other);
                }
                self.v6.push((*a, site));
                return Ok(());
            }
            Pattern::Exact(n) => (&mut self.exact, n),
            Pattern::Wildcard(s) => (&mut self.wild, s),
        };
        match list.binary_search_by(|(k, _)| fold_cmp(k, key)) {
            Ok(i) => Err(list[i].1),
            Err(i) => {
                list.insert(i, (key.as_str().into(), site));
                Ok(())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wild.is_empty() && self.v6.is_empty()
    }

    /// The site a request's host (`name[:port]`, `[v6][:port]`, as the
    /// parser let it through) names, if any.
    pub fn lookup(&self, host: &str) -> Option<(u32, Found)> {
        if let Some(rest) = host.strip_prefix('[') {
            let addr: Ipv6Addr = rest.split_once(']')?.0.parse().ok()?;
            let (_, site) = self.v6.iter().find(|(a, _)| *a == addr)?;
            return Some((*site, Found::Exact));
        }
        let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return None;
        }
        if let Ok(i) = self.exact.binary_search_by(|(k, _)| fold_cmp(k, name)) {
            return Some((self.exact[i].1, Found::Exact));
        }
        let (first, suffix) = name.split_once('.')?;
        if first.is_empty() || self.wild.is_empty() {
            return None;
        }
        let i = self
            .wild
            .binary_search_by(|(k, _)| fold_cmp(k, suffix))
            .ok()?;
        Some((self.wild[i].1, Found::Wildcard))
    }
}

/// `a` (lower-case already) against `b` (any case), as if both were
/// lower-case: shorter first (most comparisons end there), then by bytes.
fn fold_cmp(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.bytes().cmp(b.bytes().map(|c| c.to_ascii_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[(&str, u32)]) -> Names {
        let mut n = Names::default();
        for (name, site) in list {
            n.insert(&pattern(name).unwrap(), *site).unwrap();
        }
        n
    }

    #[test]
    fn patterns() {
        assert_eq!(
            pattern("Example.ORG.").unwrap(),
            Pattern::Exact("example.org".into())
        );
        assert_eq!(
            pattern("*.Example.net").unwrap(),
            Pattern::Wildcard("example.net".into())
        );
        assert_eq!(pattern("[0::1]").unwrap(), Pattern::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(pattern("192.0.2.1").unwrap().to_string(), "192.0.2.1");
        for bad in [
            "",
            ".",
            "a..b",
            "example.org:80",
            "http://example.org",
            "*",
            "*.",
            "a.*.b",
            "*example.org",
            "ex ample.org",
            "[::1",
            "[nope]",
            "exämple.org",
            &"a".repeat(64),
            &format!("{}.x", "a.".repeat(130)),
        ] {
            assert!(pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lookups() {
        let n = names(&[
            ("example.org", 0),
            ("www.example.org", 0),
            ("*.example.net", 1),
            ("api.example.net", 2),
            ("[::1]", 3),
            ("127.0.0.1", 4),
        ]);
        let at = |h: &str| n.lookup(h);
        assert_eq!(at("example.org"), Some((0, Found::Exact)));
        assert_eq!(at("EXAMPLE.org."), Some((0, Found::Exact)));
        assert_eq!(at("www.example.org:8080"), Some((0, Found::Exact)));
        assert_eq!(at("a.example.net"), Some((1, Found::Wildcard)));
        assert_eq!(at("A.Example.NET:80"), Some((1, Found::Wildcard)));
        assert_eq!(at("api.example.net"), Some((2, Found::Exact)));
        assert_eq!(at("example.net"), None);
        assert_eq!(at("a.b.example.net"), None);
        assert_eq!(at(".example.net"), None);
        assert_eq!(at("[::1]:8080"), Some((3, Found::Exact)));
        assert_eq!(at("[0:0::1]"), Some((3, Found::Exact)));
        assert_eq!(at("[::2]"), None);
        assert_eq!(at("127.0.0.1:80"), Some((4, Found::Exact)));
        assert_eq!(at("other.org"), None);
        assert_eq!(at(""), None);
        assert_eq!(at(":80"), None);
    }

    #[test]
    fn a_name_belongs_to_one_site() {
        let mut n = names(&[("example.org", 0), ("*.example.org", 0), ("[::1]", 0)]);
        assert_eq!(n.insert(&pattern("EXAMPLE.org").unwrap(), 1), Err(0));
        assert_eq!(n.insert(&pattern("*.example.org.").unwrap(), 1), Err(0));
        assert_eq!(n.insert(&pattern("[0::1]").unwrap(), 1), Err(0));
        assert_eq!(n.insert(&pattern("www.example.org").unwrap(), 1), Ok(()));
    }

    /// Whatever the host, a lookup answers and never panics; what it finds
    /// is a site that has a name matching the host.
    #[test]
    fn arbitrary_hosts() {
        let n = names(&[("a.b", 0), ("*.b", 1), ("[::1]", 2)]);
        let alphabet = ["a", "b", ".", ":", "[", "]", "1", "*", "A", "é", ""];
        for x in alphabet {
            for y in alphabet {
                for z in alphabet {
                    for w in alphabet {
                        let host = format!("{x}{y}{z}{w}");
                        if let Some((site, _)) = n.lookup(&host) {
                            let h = host.to_ascii_lowercase();
                            let h = h.rsplit_once(':').map_or(h.as_str(), |p| p.0);
                            let h = h.strip_suffix('.').unwrap_or(h);
                            match site {
                                0 => assert_eq!(h, "a.b", "{host:?}"),
                                1 => assert!(h.ends_with(".b") && h.len() > 2, "{host:?}"),
                                _ => assert!(host.starts_with('['), "{host:?}"),
                            }
                        }
                    }
                }
            }
        }
    }
}
