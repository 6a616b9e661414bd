//! The request target and the host: what a request names, checked against
//! RFC 9112 3.2 and RFC 3986 before anything routes on it.
//!
//! - A target is origin-form (`/path?query`), absolute-form
//!   (`http://host/path`) or `*` (OPTIONS only); authority-form (CONNECT)
//!   is refused, since lbaws is no proxy.
//! - A host is `uri-host [ ":" port ]`: a reg-name (unreserved, sub-delims,
//!   well-formed `%XX`), an IPv4 address, or an IP-literal in brackets that
//!   holds a valid IPv6 address or IPvFuture, followed by nothing or
//!   `:port`. The same rule holds in the Host field and in an absolute-form
//!   target, so what reaches routing and CGI's SERVER_NAME is always a host.
//! - The path is percent-decoded once, dot segments removed (RFC 3986
//!   5.2.4) and repeated slashes merged; `%00`, an encoded `/`, invalid
//!   UTF-8 and a path that climbs above `/` are refused.

use std::net::Ipv6Addr;

/// Longest host accepted (a DNS name is at most 253 bytes, plus a port).
const MAX_HOST: usize = 255;

/// A Host value (or the authority of an absolute-form target), lower-cased;
/// `None` when it is not `uri-host [ ":" port ]`.
pub fn valid_host(v: &[u8]) -> Option<String> {
    if v.is_empty() || v.len() > MAX_HOST || !v.is_ascii() {
        return None;
    }
    let s = std::str::from_utf8(v).ok()?;
    let port = if let Some(rest) = s.strip_prefix('[') {
        let (literal, after) = rest.split_once(']')?;
        if !ip_literal(literal) {
            return None;
        }
        match after {
            "" => None,
            a => Some(a.strip_prefix(':')?),
        }
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if !reg_name(host) {
            return None;
        }
        port
    };
    if port.is_some_and(|p| p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

/// The inside of `[...]`: an IPv6 address, or `v` HEXDIG+ `.` then
/// unreserved / sub-delims / `:` (IPvFuture). No zone identifier.
fn ip_literal(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix(['v', 'V']) {
        let Some((ver, addr)) = rest.split_once('.') else {
            return false;
        };
        return !ver.is_empty()
            && ver.bytes().all(|b| b.is_ascii_hexdigit())
            && !addr.is_empty()
            && addr
                .bytes()
                .all(|b| unreserved(b) || sub_delim(b) || b == b':');
    }
    s.parse::<Ipv6Addr>().is_ok()
}

/// A reg-name (which covers IPv4 addresses): unreserved, sub-delims and
/// well-formed percent-encodings; not empty.
fn reg_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else if unreserved(b[i]) || sub_delim(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// A target split: its path (still encoded), query, and the host an
/// absolute-form target carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub host: Option<String>,
}

/// Split a request target; `None` when it is none of the forms lbaws takes.
pub fn split<'a>(method: &str, target: &'a str) -> Option<Target<'a>> {
    if target.contains('#') {
        return None;
    }
    let (rest, host) = if target.starts_with('/') {
        (target, None)
    } else if target == "*" {
        return (method == "OPTIONS").then_some(Target {
            path: "*",
            query: None,
            host: None,
        });
    } else {
        let scheme_len = if starts_with_ignore_case(target, "http://") {
            7
        } else if starts_with_ignore_case(target, "https://") {
            8
        } else {
            return None;
        };
        let after = &target[scheme_len..];
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let host = valid_host(&after.as_bytes()[..end])?;
        let rest = &after[end..];
        if rest.is_empty() || rest.starts_with('?') {
            // "http://h" or "http://h?q": the path is "/".
            return Some(Target {
                path: "/",
                query: rest.strip_prefix('?'),
                host: Some(host),
            });
        }
        (rest, Some(host))
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    Some(Target { path, query, host })
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Percent-decode once, refuse `%00` and an encoded `/`, remove dot segments,
/// merge repeated slashes, refuse climbing above the root. `None`: refused
/// (400).
pub fn normalize_path(raw: &str) -> Option<String> {
    if raw == "*" {
        return Some("*".into());
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if !hex.iter().all(u8::is_ascii_hexdigit) || v == 0 || v == b'/' {
                return None;
            }
            decoded.push(v);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).ok()?;
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = decoded.ends_with('/');
    for seg in decoded.split('/') {
        match seg {
            "" => {}
            "." => trailing = true,
            ".." => {
                out.pop()?;
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
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let ok = |h: &str| valid_host(h.as_bytes());
        assert_eq!(ok("Example.COM"), Some("example.com".into()));
        assert_eq!(ok("a:8080").as_deref(), Some("a:8080"));
        assert_eq!(ok("a:").as_deref(), Some("a:"), "empty port: RFC 3986");
        assert_eq!(ok("127.0.0.1:80").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(ok("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(ok("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(ok("[::ffff:1.2.3.4]").as_deref(), Some("[::ffff:1.2.3.4]"));
        assert_eq!(ok("[v1.x:y]").as_deref(), Some("[v1.x:y]"), "IPvFuture");
        assert_eq!(ok("a%41b").as_deref(), Some("a%41b"));
        for bad in [
            "",
            "[]",
            "[a.b]",
            "[1.2.3.4]",
            "[::1]x",
            "[::1]:80:80",
            "[::1]]",
            "[:::]",
            "[fe80::1%eth0]",
            "[v1.]",
            "[v.x]",
            "::1",
            "a:b:80",
            "a:123456",
            "a:8x",
            "a b",
            "a/b",
            "a@b",
            "a%4",
            "a%zz",
            "é",
            ":80",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
        assert_eq!(ok("[::1]:").as_deref(), Some("[::1]:"));
    }

    #[test]
    fn targets() {
        let t = split("GET", "http://Example.com:8080/p?q=1").unwrap();
        assert_eq!(
            (t.path, t.query, t.host.as_deref()),
            ("/p", Some("q=1"), Some("example.com:8080"))
        );
        assert_eq!(split("GET", "HTTP://a").unwrap().path, "/");
        assert!(split("GET", "http://[::1]x/").is_none());
        assert!(split("GET", "http://u@a/").is_none());
        assert!(split("GET", "ftp://a/").is_none());
        assert!(split("GET", "a:80").is_none(), "authority-form");
        assert!(split("GET", "*").is_none());
        assert_eq!(split("OPTIONS", "*").unwrap().path, "*");
        assert!(split("GET", "/a#f").is_none());
    }

    #[test]
    fn normalizes_paths() {
        let n = normalize_path;
        assert_eq!(n("/a/./b/../c").as_deref(), Some("/a/c"));
        assert_eq!(n("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(n("//a///b/").as_deref(), Some("/a/b/"));
        assert_eq!(n("/%61/%2e%2E/x").as_deref(), Some("/x"));
        assert_eq!(
            n("/%252e%252e/").as_deref(),
            Some("/%2e%2e/"),
            "decoded once"
        );
        assert_eq!(n("/").as_deref(), Some("/"));
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/%2e%2e/etc",
            "/a%2fb",
            "/a%00b",
            "/a%zz",
            "/a%2",
            "/a%+1",
            "/%ff",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }
}
