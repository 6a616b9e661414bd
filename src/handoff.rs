//! How a connection travels between lbaws's processes: its descriptor
//! (`SCM_RIGHTS`) and a fixed-size record of what the next owner needs,
//! over `SOCK_SEQPACKET` socket pairs (one message, one connection).
//!
//! ```text
//!   supervisor --Adopt(meta)+fd--> gate        a connection without a complete head yet,
//!                                              a parked one, or one to close after a 503
//!   gate --Ready(meta)+fd--> supervisor        its head is complete: fork a worker
//!   gate --Closed(keys)--> supervisor          connections the gate closed (accounting)
//!   worker --Park(pid, meta)+fd--> supervisor  idle between requests: take it back
//!   supervisor --Limits / Stop--> gate         configuration, graceful stop
//!   supervisor --Handover--> gate              an upgrade in place: send every
//!                                              connection back (Ready), then exit
//! ```
//!
//! Only bytes and descriptors cross: no pointers, no allocation to decode.

use crate::listen::Peer;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

/// What a connection is, on its way between two processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Accepted; its first request head is not complete yet.
    New = 1,
    /// Back from a worker, idle between requests.
    Parked = 2,
    /// Answered by the supervisor (503): only to be closed gracefully.
    Closing = 3,
    /// Accepted on a `proxy_protocol` listener; its PROXY header has not
    /// fully arrived. `peer` is the balancer; counted under no source.
    Proxy = 4,
    /// Its PROXY header was read (by the gate): `peer` is the client it
    /// named, not yet counted under its source; the supervisor admits it as
    /// a new connection (per-source limit, then a worker or the gate).
    Proxied = 5,
}

/// What the next owner of a connection needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub peer: Peer,
    /// Requests answered on this connection so far (for
    /// `max_requests_per_connection` across workers).
    pub served: u32,
    pub kind: Kind,
}

/// Bytes of an encoded [`Meta`].
pub const META_LEN: usize = 32;

impl Meta {
    /// Into `out[..META_LEN]`.
    pub fn encode(&self, out: &mut [u8]) {
        out[..META_LEN].fill(0);
        out[0] = self.kind as u8;
        out[1..5].copy_from_slice(&self.served.to_le_bytes());
        match self.peer {
            Peer::Unix => out[5] = 0,
            Peer::Inet(SocketAddr::V4(a)) => {
                out[5] = 4;
                out[6..8].copy_from_slice(&a.port().to_le_bytes());
                out[8..12].copy_from_slice(&a.ip().octets());
            }
            Peer::Inet(SocketAddr::V6(a)) => {
                out[5] = 6;
                out[6..8].copy_from_slice(&a.port().to_le_bytes());
                out[8..24].copy_from_slice(&a.ip().octets());
                out[24..28].copy_from_slice(&a.flowinfo().to_le_bytes());
                out[28..32].copy_from_slice(&a.scope_id().to_le_bytes());
            }
        }
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
        let b: &[u8; META_LEN] = b.get(..META_LEN)?.try_into().ok()?;
        let kind = match b[0] {
            1 => Kind::New,
            2 => Kind::Parked,
            3 => Kind::Closing,
            4 => Kind::Proxy,
            5 => Kind::Proxied,
            _ => return None,
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let port = u16::from_le_bytes([b[6], b[7]]);
        let peer = match b[5] {
            0 => Peer::Unix,
            4 => Peer::Inet(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[8], b[9], b[10], b[11]),
                port,
            ))),
            6 => {
                let ip: [u8; 16] = b[8..24].try_into().ok()?;
                Peer::Inet(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    u32_at(24),
                    u32_at(28),
                )))
            }
            _ => return None,
        };
        Some(Meta {
            peer,
            served: u32_at(1),
            kind,
        })
    }
}

/// The gate's settings, from `[limits]` and `[server]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLimits {
    pub header_timeout: Duration,
    /// How long a parked connection may stay idle in the gate.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// A first line longer than this without its end goes to a worker (414).
    pub max_line_bytes: usize,
    pub max_pending: usize,
}

/// The source-address key the gate hands back when it closes a connection
/// (see `listen::Peer::source_key`); `NO_KEY` for a Unix peer.
pub const NO_KEY: u128 = u128::MAX;

/// Closed connections reported in one message, at most.
pub const CLOSED_PER_MSG: usize = 128;

/// Every message, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// supervisor -> gate, with the connection's descriptor.
    Adopt(Meta),
    /// gate -> supervisor, with the descriptor: its head is complete.
    Ready(Meta),
    /// worker -> supervisor, with the descriptor.
    Park { pid: u32, meta: Meta },
    /// supervisor -> gate.
    Limits(GateLimits),
    /// supervisor -> gate: close what is idle, finish the rest, then exit.
    Stop,
    /// supervisor -> gate: hand every connection back (as `Ready`, with the
    /// kind it was adopted as), close those being closed, then exit.
    Handover,
    /// gate -> supervisor: `n` connections closed; their keys and kinds are
    /// read with [`closed_entries`].
    Closed { n: usize },
}

/// Largest encoded message.
pub const MAX_MSG: usize = 1 + CLOSED_PER_MSG * CLOSED_ENTRY;
const CLOSED_ENTRY: usize = 17;

const TAG_ADOPT: u8 = 1;
const TAG_READY: u8 = 2;
const TAG_PARK: u8 = 3;
const TAG_LIMITS: u8 = 4;
const TAG_STOP: u8 = 5;
const TAG_CLOSED: u8 = 6;
const TAG_HANDOVER: u8 = 7;

/// Encode a message into `out` (at least [`MAX_MSG`] bytes); returns its
/// length. `Closed` is built with [`ClosedBatch`] instead.
pub fn encode(msg: &Msg, out: &mut [u8]) -> usize {
    match msg {
        Msg::Adopt(m) | Msg::Ready(m) => {
            out[0] = if matches!(msg, Msg::Adopt(_)) {
                TAG_ADOPT
            } else {
                TAG_READY
            };
            m.encode(&mut out[1..]);
            1 + META_LEN
        }
        Msg::Park { pid, meta } => {
            out[0] = TAG_PARK;
            out[1..5].copy_from_slice(&pid.to_le_bytes());
            meta.encode(&mut out[5..]);
            5 + META_LEN
        }
        Msg::Limits(l) => {
            out[0] = TAG_LIMITS;
            let fields = [
                l.header_timeout.as_millis() as u64,
                l.idle_timeout.as_millis() as u64,
                l.max_header_bytes as u64,
                l.max_line_bytes as u64,
                l.max_pending as u64,
            ];
            for (i, f) in fields.iter().enumerate() {
                out[1 + 8 * i..9 + 8 * i].copy_from_slice(&f.to_le_bytes());
            }
            1 + 8 * fields.len()
        }
        Msg::Stop => {
            out[0] = TAG_STOP;
            1
        }
        Msg::Handover => {
            out[0] = TAG_HANDOVER;
            1
        }
        Msg::Closed { .. } => unreachable!("built by ClosedBatch"),
    }
}

/// Decode a received message; `None` for anything malformed.
pub fn decode(b: &[u8]) -> Option<Msg> {
    let u64_at =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    match *b.first()? {
        TAG_ADOPT => Some(Msg::Adopt(Meta::decode(&b[1..])?)),
        TAG_READY => Some(Msg::Ready(Meta::decode(&b[1..])?)),
        TAG_PARK => Some(Msg::Park {
            pid: u32::from_le_bytes(b.get(1..5)?.try_into().ok()?),
            meta: Meta::decode(&b[5..])?,
        }),
        TAG_LIMITS => Some(Msg::Limits(GateLimits {
            header_timeout: Duration::from_millis(u64_at(1)?),
            idle_timeout: Duration::from_millis(u64_at(9)?),
            max_header_bytes: u64_at(17)? as usize,
            max_line_bytes: u64_at(25)? as usize,
            max_pending: u64_at(33)? as usize,
        })),
        TAG_STOP => Some(Msg::Stop),
        TAG_HANDOVER => Some(Msg::Handover),
        TAG_CLOSED if (b.len() - 1).is_multiple_of(CLOSED_ENTRY) => Some(Msg::Closed {
            n: (b.len() - 1) / CLOSED_ENTRY,
        }),
        _ => None,
    }
}

/// In a `Closed` entry's kind byte: closed for a missing or bad PROXY header.
const REFUSED: u8 = 0x80;

/// The entries of a `Closed` message: (source key, kind it was adopted as,
/// whether it was refused for its PROXY header).
pub fn closed_entries(b: &[u8]) -> impl Iterator<Item = (u128, Kind, bool)> + '_ {
    b[1..].chunks_exact(CLOSED_ENTRY).map(|c| {
        let key = u128::from_le_bytes(c[..16].try_into().expect("16 bytes"));
        let k = c[16] & !REFUSED;
        let kind = [Kind::Parked, Kind::Closing, Kind::Proxy, Kind::Proxied]
            .into_iter()
            .find(|&kind| kind as u8 == k)
            .unwrap_or(Kind::New);
        (key, kind, c[16] & REFUSED != 0)
    })
}

/// Closed connections collected by the gate, sent as one message.
pub struct ClosedBatch {
    buf: [u8; MAX_MSG],
    n: usize,
}

impl Default for ClosedBatch {
    fn default() -> Self {
        let mut buf = [0u8; MAX_MSG];
        buf[0] = TAG_CLOSED;
        ClosedBatch { buf, n: 0 }
    }
}

impl ClosedBatch {
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn is_full(&self) -> bool {
        self.n == CLOSED_PER_MSG
    }

    /// Add one (the batch must not be full); `refused`: for its PROXY header.
    pub fn push(&mut self, key: u128, kind: Kind, refused: bool) {
        let at = 1 + self.n * CLOSED_ENTRY;
        self.buf[at..at + 16].copy_from_slice(&key.to_le_bytes());
        self.buf[at + 16] = kind as u8 | if refused { REFUSED } else { 0 };
        self.n += 1;
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..1 + self.n * CLOSED_ENTRY]
    }

    pub fn clear(&mut self) {
        self.n = 0;
    }
}

/// The source key a connection is counted under while it travels as `meta`:
/// none before its PROXY header is read, nor until the supervisor admits it
/// under the client's address (`Kind::Proxy`, `Kind::Proxied`).
pub fn meta_key(meta: &Meta) -> u128 {
    match meta.kind {
        Kind::Proxy | Kind::Proxied => NO_KEY,
        _ => source_key(&meta.peer).unwrap_or(NO_KEY),
    }
}

/// The part of a peer address that names its host, for per-source limits:
/// an IPv4 address (also when it arrives IPv4-mapped on a dual-stack
/// socket), or an IPv6 /64 (one host usually owns a whole /64). `None` for
/// a Unix peer, which has no address to limit.
pub fn source_key(peer: &Peer) -> Option<u128> {
    match peer {
        Peer::Unix => None,
        Peer::Inet(a) => Some(match a.ip().to_canonical() {
            // ::ffff:a.b.c.d: the low 64 bits are never zero, unlike the
            // keys of IPv6 prefixes below.
            IpAddr::V4(v4) => 0xffff_0000_0000 | u32::from(v4) as u128,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) << 64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Msg) {
        let mut buf = [0u8; MAX_MSG];
        let n = encode(&m, &mut buf);
        assert_eq!(decode(&buf[..n]), Some(m));
    }

    #[test]
    fn messages_round_trip() {
        let v6: SocketAddr = "[2001:db8::1%3]:443".parse().unwrap();
        for peer in [
            Peer::Unix,
            Peer::Inet("192.0.2.7:8080".parse().unwrap()),
            Peer::Inet(v6),
        ] {
            let meta = Meta {
                peer,
                served: 4_000_000_000,
                kind: Kind::Parked,
            };
            round_trip(Msg::Adopt(meta));
            round_trip(Msg::Ready(Meta {
                kind: Kind::New,
                ..meta
            }));
            round_trip(Msg::Park { pid: 4242, meta });
            for kind in [Kind::Proxy, Kind::Proxied, Kind::Closing] {
                round_trip(Msg::Adopt(Meta { kind, ..meta }));
            }
        }
        round_trip(Msg::Stop);
        round_trip(Msg::Handover);
        round_trip(Msg::Limits(GateLimits {
            header_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_millis(4_900),
            max_header_bytes: 16384,
            max_line_bytes: 8224,
            max_pending: 19_000,
        }));
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[TAG_ADOPT, 9]), None, "short");
        assert_eq!(decode(&[99]), None);
    }

    #[test]
    fn closed_batches() {
        let mut b = ClosedBatch::default();
        b.push(7, Kind::New, false);
        b.push(NO_KEY, Kind::Parked, false);
        b.push(NO_KEY, Kind::Proxy, true);
        b.push(NO_KEY, Kind::Proxied, false);
        assert_eq!(decode(b.bytes()), Some(Msg::Closed { n: 4 }));
        let got: Vec<_> = closed_entries(b.bytes()).collect();
        assert_eq!(
            got,
            vec![
                (7, Kind::New, false),
                (NO_KEY, Kind::Parked, false),
                (NO_KEY, Kind::Proxy, true),
                (NO_KEY, Kind::Proxied, false)
            ]
        );
        assert!(MAX_MSG >= b.bytes().len());
    }

    #[test]
    fn source_keys() {
        let key = |s: &str| source_key(&Peer::Inet(s.parse().unwrap())).unwrap();
        assert_eq!(
            key("127.0.0.2:1"),
            key("127.0.0.2:2"),
            "the port is not the host"
        );
        assert_ne!(key("127.0.0.2:1"), key("127.0.0.3:1"));
        assert_eq!(
            key("[::ffff:127.0.0.2]:5"),
            key("127.0.0.2:1"),
            "IPv4-mapped"
        );
        assert_eq!(
            key("[2001:db8:0:1::1]:1"),
            key("[2001:db8:0:1:ffff::2]:1"),
            "one /64"
        );
        assert_ne!(key("[2001:db8:0:1::1]:1"), key("[2001:db8:0:2::1]:1"));
        assert_ne!(key("[::1]:1"), key("0.0.0.0:1"));
        assert_eq!(source_key(&Peer::Unix), None);
    }
}
