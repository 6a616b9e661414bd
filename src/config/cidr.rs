//! Address ranges in CIDR notation (`"127.0.0.1/32"`, `"::1/128"`,
//! `"10.0.0.0/8"`, `"fd00::/8"`; a bare address is its own /32 or /128),
//! for a route's `allow`. IPv4 ranges are kept as IPv4-mapped IPv6 ones, so
//! one comparison serves both families (an IPv4 client on a dual-stack
//! listener arrives as `::ffff:a.b.c.d`, which an IPv4 range matches).
//!
//! A small reusable parser: anything else in the configuration that takes
//! address ranges can use [`Cidr::parse`] and [`Cidr::contains`].

use std::net::{IpAddr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network, as IPv6 bits (IPv4 mapped).
    net: u128,
    /// Prefix length in IPv6 bits (an IPv4 /n is 96 + n).
    len: u8,
}

impl Cidr {
    /// `"ADDRESS/LEN"` or `"ADDRESS"`; bits set below the prefix are an
    /// error (`10.0.0.1/8` is probably a typo for `10.0.0.0/8` or `/32`).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let bad =
            || format!("bad address range {s:?}: expected e.g. \"127.0.0.1/32\" or \"::1/128\"");
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let (bits, max, offset) = match ip {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().to_bits(), 32u8, 96u8),
            IpAddr::V6(v6) => (v6.to_bits(), 128u8, 0u8),
        };
        let len = match len {
            None => max,
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("bad address range {s:?}: prefix length above {max}"))?,
            Some(_) => return Err(bad()),
        };
        let len = len + offset;
        let net = bits & mask(len);
        if net != bits {
            return Err(format!(
                "bad address range {s:?}: the address has bits set beyond the /{} prefix",
                len - offset
            ));
        }
        Ok(Cidr { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        bits & mask(self.len) == self.net
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v6 = Ipv6Addr::from_bits(self.net);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        n => u128::MAX << (128 - n as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_addresses_in_both_families() {
        let lo = Cidr::parse("127.0.0.1/32").unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        assert!(!lo.contains(ip("127.0.0.2")));
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        let v6 = Cidr::parse("::1/128").unwrap();
        assert!(v6.contains(ip("::1")));
        assert!(!v6.contains(ip("127.0.0.1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        assert!(!Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("2001:db8::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("192.0.2.1")));
        assert_eq!(
            Cidr::parse("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            Cidr::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for bad in [
            "",
            "127.0.0.1/",
            "127.0.0.1/33",
            "::1/129",
            "10.0.0.1/8",
            "x/8",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "fe80::1%eth0/128",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
