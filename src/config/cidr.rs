//! Address ranges for `[[listen]] proxy_from`: `10.0.0.0/8`, `2001:db8::/32`,
//! or one address (`192.0.2.10`, a /32 or /128).

use std::net::IpAddr;

/// The most entries one `proxy_from` may list.
pub const MAX_CIDRS: usize = 256;

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `ADDR` or `ADDR/BITS`, with no host bits set beyond the prefix (so
    /// that a typo like `10.0.0.1/8` is refused rather than read as
    /// `10.0.0.0/8`).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!("bad address range {s:?}: expected e.g. \"10.0.0.0/8\" or \"2001:db8::/32\"")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(p) if p <= max && (b == "0" || !b.starts_with('0')) => p,
                _ => return Err(format!("bad prefix length in {s:?}: 0 to {max}")),
            },
        };
        let c = Cidr { addr, prefix };
        if c.network() != bits_of(addr) {
            return Err(format!("{s:?} has bits set beyond its /{prefix} prefix"));
        }
        Ok(c)
    }

    fn network(&self) -> u128 {
        bits_of(self.addr) & self.mask()
    }

    fn mask(&self) -> u128 {
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let ones = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix as u32)
        };
        if width == 32 {
            (ones >> 96) & 0xffff_ffff
        } else {
            ones
        }
    }

    /// Whether `ip` is in the range; an IPv4-mapped IPv6 address (from a
    /// dual-stack socket) is taken as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && bits_of(ip) & self.mask() == self.network()
    }
}

fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::a00:1")), "IPv6 is not IPv4");
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("fe80::1")));
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn refusals() {
        for s in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/08",
            "10/8",
            "x",
            "",
            "10.0.0.0/-1",
            "2001:db8::1/32",
        ] {
            assert!(Cidr::parse(s).is_err(), "{s}");
        }
    }
}
