//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1
//! and 2): what a load balancer sends first on a connection it relays, to
//! name the client it relays for.
//!
//! [`parse`] looks at the first bytes of a connection and says whether they
//! hold a whole header (and how long it is, and whose address it carries),
//! not yet, or never. It is strict: a listener that expects the header
//! refuses a connection without one, since anything else would let a client
//! choose the address it is logged and limited under.
//!
//! - Version 1: `PROXY TCP4|TCP6 src dst sport dport\r\n`, or
//!   `PROXY UNKNOWN...\r\n`, at most 107 bytes with its CRLF.
//! - Version 2: a 12-byte signature, a version/command byte, a family byte,
//!   a 16-bit length, then the addresses and TLVs (read past, within the
//!   length). The whole header is refused above [`MAX_V2`] bytes.
//!
//! `LOCAL` (v2: the balancer's own health check), `UNKNOWN` (v1), and v2
//! families without an internet address (`AF_UNSPEC`, `AF_UNIX`) give no
//! source: the connection's own peer (the balancer) stands.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A whole v2 header for a connection of the sender's own: `LOCAL`, no
/// address (what a balancer's health check sends; `lbaws status` too).
pub const V2_LOCAL: [u8; 16] = *b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
/// The longest v1 header, CRLF included (the specification's bound).
pub const MAX_V1: usize = 107;
/// The longest v2 header accepted, fixed part, addresses and TLVs together.
/// The addresses take at most 216 bytes (`AF_UNIX`); the rest is room for
/// TLVs (a TLS balancer's client-certificate details fit in a few hundred).
pub const MAX_V2: usize = 4096;
/// No header is longer than this: a buffer this large holds any [`parse`]
/// accepts.
pub const MAX_HEADER: usize = MAX_V2;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header that may still become valid: wait for more.
    Incomplete,
    /// A whole header of `consumed` bytes. `source` is the client it names,
    /// or `None` where it names none (v2 `LOCAL`, v1 `UNKNOWN`, a family
    /// without an internet address): the connection's peer stands then.
    Done {
        consumed: usize,
        source: Option<SocketAddr>,
    },
}

/// Why bytes can never be a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Look at `buf`, everything received so far from the start of the
/// connection. Never reads beyond [`MAX_HEADER`] bytes.
pub fn parse(buf: &[u8]) -> Result<Parsed, Invalid> {
    const V1: &[u8] = b"PROXY ";
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(Parsed::Incomplete)
        } else {
            v2(buf)
        };
    }
    let n = buf.len().min(V1.len());
    if buf[..n] == V1[..n] {
        return if n < V1.len() {
            Ok(Parsed::Incomplete)
        } else {
            v1(buf)
        };
    }
    Err(Invalid("no PROXY header"))
}

// ---------------------------------------------------------------------------
// Version 1

fn v1(buf: &[u8]) -> Result<Parsed, Invalid> {
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if window.len() == MAX_V1 {
            return Err(Invalid("v1: no CRLF within 107 bytes"));
        }
        // Only printable characters may come before the CRLF.
        if window
            .iter()
            .any(|&b| !b.is_ascii_graphic() && b != b' ' && b != b'\r')
        {
            return Err(Invalid("v1: a byte that is not text"));
        }
        if window.len() >= 2 && window[..window.len() - 1].contains(&b'\r') {
            return Err(Invalid("v1: CR without LF"));
        }
        return Ok(Parsed::Incomplete);
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(Invalid("v1: LF without CR"));
    }
    let line = &window[6..lf - 1];
    let consumed = lf + 1;
    if line.iter().any(|&b| !b.is_ascii_graphic() && b != b' ') {
        return Err(Invalid("v1: a byte that is not text"));
    }
    if line.starts_with(b"UNKNOWN") {
        // "the receiver must ignore anything presented before the CRLF"
        // (as long as it is text, like the rest of a v1 header).
        return Ok(Parsed::Done {
            consumed,
            source: None,
        });
    }
    let line = std::str::from_utf8(line).map_err(|_| Invalid("v1: not text"))?;
    let mut words = line.split(' ');
    let proto = words.next().unwrap_or("");
    let (src, dst, sport, dport) = match (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) {
        (Some(a), Some(b), Some(c), Some(d), None) => (a, b, c, d),
        _ => return Err(Invalid("v1: expected four fields after the protocol")),
    };
    let src = match proto {
        "TCP4" => {
            v4(dst)?;
            IpAddr::V4(v4(src)?)
        }
        "TCP6" => {
            v6(dst)?;
            IpAddr::V6(v6(src)?)
        }
        _ => return Err(Invalid("v1: protocol not TCP4, TCP6 or UNKNOWN")),
    };
    port(dport)?;
    Ok(Parsed::Done {
        consumed,
        source: Some(SocketAddr::new(src, port(sport)?)),
    })
}

fn v4(s: &str) -> Result<Ipv4Addr, Invalid> {
    s.parse().map_err(|_| Invalid("v1: bad IPv4 address"))
}

fn v6(s: &str) -> Result<Ipv6Addr, Invalid> {
    s.parse().map_err(|_| Invalid("v1: bad IPv6 address"))
}

/// A port: 1-5 decimal digits, no sign, no leading zero, at most 65535.
fn port(s: &str) -> Result<u16, Invalid> {
    let bad = Invalid("v1: bad port");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

// ---------------------------------------------------------------------------
// Version 2

const LOCAL: u8 = 0x0;
const PROXY: u8 = 0x1;
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const UNSPEC: u8 = 0x0;
const STREAM: u8 = 0x1;

fn v2(buf: &[u8]) -> Result<Parsed, Invalid> {
    if let Some(&ver_cmd) = buf.get(12) {
        if ver_cmd >> 4 != 2 {
            return Err(Invalid("v2: version is not 2"));
        }
        if !matches!(ver_cmd & 0xf, LOCAL | PROXY) {
            return Err(Invalid("v2: unknown command"));
        }
    }
    if let Some(&fam) = buf.get(13) {
        if fam >> 4 > AF_UNIX {
            return Err(Invalid("v2: unknown address family"));
        }
        if !matches!(fam & 0xf, UNSPEC | STREAM) && buf[12] & 0xf == PROXY {
            return Err(Invalid("v2: not a stream"));
        }
    }
    let Some(len) = buf.get(14..16) else {
        return Ok(Parsed::Incomplete);
    };
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let consumed = 16 + len;
    if consumed > MAX_V2 {
        return Err(Invalid("v2: header too long"));
    }
    let Some(block) = buf.get(16..consumed) else {
        return Ok(Parsed::Incomplete);
    };
    let (cmd, fam) = (buf[12] & 0xf, buf[13] >> 4);
    let addr_len = match fam {
        AF_INET => 12,
        AF_INET6 => 36,
        AF_UNIX => 216,
        _ => 0,
    };
    if cmd == LOCAL {
        // "the receiver must ... use the real connection endpoints and
        // discard the protocol block including the family".
        return Ok(Parsed::Done {
            consumed,
            source: None,
        });
    }
    if block.len() < addr_len {
        return Err(Invalid("v2: length shorter than the addresses"));
    }
    tlvs(&block[addr_len..])?;
    let source = match fam {
        AF_INET => {
            let ip: [u8; 4] = block[0..4].try_into().expect("4 bytes");
            let port = u16::from_be_bytes([block[8], block[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip.into()), port))
        }
        AF_INET6 => {
            let ip: [u8; 16] = block[0..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([block[32], block[33]]);
            Some(SocketAddr::new(IpAddr::V6(ip.into()), port))
        }
        // AF_UNSPEC, AF_UNIX: no internet address to name the client by.
        AF_UNSPEC | AF_UNIX => None,
        _ => unreachable!("checked above"),
    };
    Ok(Parsed::Done { consumed, source })
}

/// The TLVs after the addresses: each a type byte, a 16-bit length and that
/// many bytes, ending exactly at the end of the header. Their contents are
/// not used.
fn tlvs(mut rest: &[u8]) -> Result<(), Invalid> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(Invalid("v2: truncated TLV"));
        }
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        rest = rest
            .get(3 + len..)
            .ok_or(Invalid("v2: TLV longer than the header"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (usize, Option<SocketAddr>) {
        match parse(buf) {
            Ok(Parsed::Done { consumed, source }) => (consumed, source),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn invalid(buf: &[u8]) -> &'static str {
        match parse(buf) {
            Err(Invalid(why)) => why,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// A v2 header: command, family byte, address block, TLVs.
    fn v2h(cmd: u8, fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    fn inet4() -> Vec<u8> {
        [[192, 0, 2, 7], [10, 0, 0, 1]]
            .concat()
            .into_iter()
            .chain(40000u16.to_be_bytes())
            .chain(80u16.to_be_bytes())
            .collect()
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(done(h), (40, sa("192.0.2.7:40000")));
        let h = b"PROXY TCP6 2001:db8::7 ::1 65535 0\r\n";
        assert_eq!(done(h), (h.len(), sa("[2001:db8::7]:65535")));
    }

    #[test]
    fn v1_unknown() {
        assert_eq!(done(b"PROXY UNKNOWN\r\n"), (15, None));
        let h = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nGET";
        assert_eq!(done(h), (h.len() - 3, None));
    }

    #[test]
    fn v1_incomplete() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 80\r\n";
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn v1_refusals() {
        assert_eq!(invalid(b"GET / HTTP/1.1\r\n"), "no PROXY header");
        assert_eq!(invalid(b"PROXX"), "no PROXY header");
        assert_eq!(invalid(b"proxy TCP4"), "no PROXY header");
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(MAX_V1, b'a');
        assert_eq!(invalid(&long), "v1: no CRLF within 107 bytes");
        let mut fits = b"PROXY UNKNOWN ".to_vec();
        fits.resize(MAX_V1 - 2, b'a');
        fits.extend_from_slice(b"\r\n");
        assert_eq!(done(&fits), (MAX_V1, None), "exactly 107 bytes");
        for (h, why) in [
            (
                &b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 80\n"[..],
                "v1: LF without CR",
            ),
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 40000\r\n",
                "v1: expected four fields after the protocol",
            ),
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2 3\r\n",
                "v1: expected four fields after the protocol",
            ),
            (
                b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
                "v1: expected four fields after the protocol",
            ),
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 80\r\n",
                "v1: bad port",
            ),
            (b"PROXY TCP4 192.0.2.7 10.0.0.1 080 80\r\n", "v1: bad port"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.1 +80 80\r\n", "v1: bad port"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.1 80 -1\r\n", "v1: bad port"),
            (
                b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
                "v1: bad IPv4 address",
            ),
            (
                b"PROXY TCP4 192.0.2.07 10.0.0.1 1 2\r\n",
                "v1: bad IPv4 address",
            ),
            (b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n", "v1: bad IPv6 address"),
            (
                b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
                "v1: protocol not TCP4, TCP6 or UNKNOWN",
            ),
            (
                b"PROXY TCP4 192.0.2.7\t10.0.0.1 1 2\r\n",
                "v1: a byte that is not text",
            ),
            (b"PROXY TCP4 192.0.2.7\0", "v1: a byte that is not text"),
            (b"PROXY TCP4 1\rX", "v1: CR without LF"),
            (b"PROXY UNKNOWN\0\r\n", "v1: a byte that is not text"),
        ] {
            assert_eq!(invalid(h), why, "{:?}", String::from_utf8_lossy(h));
        }
    }

    #[test]
    fn v2_inet_and_inet6() {
        let mut h = v2h(PROXY, 0x11, &inet4(), &[]);
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(done(&h), (28, sa("192.0.2.7:40000")));
        let mut a6 = Vec::new();
        a6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        a6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        a6.extend_from_slice(&443u16.to_be_bytes());
        a6.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            done(&v2h(PROXY, 0x21, &a6, &[])),
            (52, sa("[2001:db8::7]:443"))
        );
    }

    #[test]
    fn v2_tlvs_are_read_past() {
        // An ALPN TLV, a NOOP TLV with an empty value.
        let tlvs = [&[0x01, 0, 2][..], b"h2", &[0x04, 0, 0]].concat();
        let h = v2h(PROXY, 0x11, &inet4(), &tlvs);
        assert_eq!(done(&h), (h.len(), sa("192.0.2.7:40000")));
        let h = v2h(PROXY, 0x11, &inet4(), &[0x01, 0, 5, b'h']);
        assert_eq!(invalid(&h), "v2: TLV longer than the header");
        let h = v2h(PROXY, 0x11, &inet4(), &[0x01, 0]);
        assert_eq!(invalid(&h), "v2: truncated TLV");
    }

    #[test]
    fn v2_local_and_addressless() {
        let h = v2h(LOCAL, 0x00, &[], &[]);
        assert_eq!(done(&h), (16, None), "a health check");
        assert_eq!(h, V2_LOCAL);
        let h = v2h(LOCAL, 0x11, &inet4(), &[]);
        assert_eq!(done(&h), (28, None), "LOCAL ignores its addresses");
        let h = v2h(LOCAL, 0x11, &[1, 2], &[]);
        assert_eq!(done(&h), (18, None), "even short ones");
        let h = v2h(PROXY, 0x00, &[], &[]);
        assert_eq!(done(&h), (16, None), "AF_UNSPEC");
        let h = v2h(PROXY, 0x31, &[b'/'; 216], &[]);
        assert_eq!(done(&h), (232, None), "AF_UNIX");
    }

    #[test]
    fn v2_incomplete() {
        let h = v2h(PROXY, 0x11, &inet4(), &[0x04, 0, 1, 0]);
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
        assert_eq!(
            parse(&h),
            Ok(Parsed::Done {
                consumed: h.len(),
                source: sa("192.0.2.7:40000")
            })
        );
    }

    #[test]
    fn v2_refusals() {
        let mut bad_sig = v2h(PROXY, 0x11, &inet4(), &[]);
        bad_sig[11] = b'X';
        assert_eq!(invalid(&bad_sig), "no PROXY header");
        let mut h = v2h(PROXY, 0x11, &inet4(), &[]);
        h[12] = 0x11;
        assert_eq!(invalid(&h), "v2: version is not 2");
        assert_eq!(invalid(&h[..13]), "v2: version is not 2", "seen early");
        h[12] = 0x22;
        assert_eq!(invalid(&h), "v2: unknown command");
        let h = v2h(PROXY, 0x41, &inet4(), &[]);
        assert_eq!(invalid(&h), "v2: unknown address family");
        let h = v2h(PROXY, 0x12, &inet4(), &[]);
        assert_eq!(invalid(&h), "v2: not a stream", "UDP");
        let h = v2h(PROXY, 0x11, &inet4()[..11], &[]);
        assert_eq!(invalid(&h), "v2: length shorter than the addresses");
        let h = v2h(PROXY, 0x21, &inet4(), &[]);
        assert_eq!(invalid(&h), "v2: length shorter than the addresses");
        let mut h = v2h(PROXY, 0x11, &inet4(), &[]);
        h[14..16].copy_from_slice(&((MAX_V2 - 15) as u16).to_be_bytes());
        assert_eq!(
            invalid(&h[..16]),
            "v2: header too long",
            "refused before it arrives"
        );
        let big = v2h(
            PROXY,
            0x11,
            &inet4(),
            &[&[0x04, 0x0f, 0xe1][..], &[0; 0xfe1]].concat(),
        );
        assert_eq!(big.len(), MAX_V2);
        assert_eq!(done(&big).0, MAX_V2, "the longest accepted");
    }
}
