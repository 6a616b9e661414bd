//! How a connection travels between lbaws's processes: its descriptor
//! (`SCM_RIGHTS`) and a fixed-size record of what the next owner needs,
//! over `SOCK_SEQPACKET` socket pairs (one message, one connection).
//!
//! ```text
//!   supervisor <--- the link (one socket pair) ---> gate
//!     Adopt(meta)+fd  -->   a connection to hold: no complete head yet,
//!                           parked, or to close gracefully after a 503
//!     Send(source)    -->   a worker is free for this source: send its
//!                           oldest complete request
//!     Limits, Logs+fd -->   settings and the (reopened) logs
//!     SiteLog+fd      -->   the sites' own access log files, one a message
//!     Stop, Handover  -->   graceful stop; an upgrade in place
//!                     <--   Ready(meta)+fd: the answer to a Send (or, unasked,
//!                           a connection whose PROXY header it read, and
//!                           every connection at a hand-over)
//!                     <--   Notes: what happened to the connections it holds
//!                           (adopted, lost, queued, closed, nothing to send)
//!   worker --Park(pid, meta)+fd--> supervisor   idle between requests
//! ```
//!
//! Until the gate's `Adopted` note, the supervisor keeps its own copy of a
//! connection it sent (and answers it if the gate reports it `Lost`); the
//! gate sends a complete request only when the supervisor asked for it, so
//! none waits in a socket between the two without an owner and a deadline.
//! A `Meta` carries the time its connection entered its current state, so
//! its deadline travels with it.
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
    /// Answered (503): only to be closed gracefully.
    Closing = 3,
    /// Accepted on a `proxy_protocol` listener; its PROXY header has not
    /// fully arrived. `peer` is the balancer; counted under no source.
    Proxy = 4,
    /// Its PROXY header was read (by the gate): `peer` is the client it
    /// named, not yet counted under its source; the supervisor admits it as
    /// a new connection (its source's share, then a worker or the gate).
    Proxied = 5,
    /// A request whose body is still coming, handed over by the worker that
    /// read its head (a CGI route's): the gate receives the body. With it
    /// travel a file holding the head and the body's first bytes as they
    /// came, and a [`BodySpec`] saying what they are.
    Body = 6,
    /// A request whose body the gate has received whole: the file holds the
    /// head, then the decoded body ([`BodySpec`]); the next worker reads
    /// both from there, and nothing of them from the connection.
    Bodied = 7,
    /// A response whose client reads slowly, handed over by its worker: the
    /// gate sends the rest of the file (`sendfile`) from its event loop,
    /// writes the access line when it ends, then parks or closes the
    /// connection. With it travel the file, a second file with what the
    /// access line needs of the request ([`TailLog`]), and a [`BodySpec`]
    /// whose tail fields say where the response stands.
    Tail = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        [
            Kind::New,
            Kind::Parked,
            Kind::Closing,
            Kind::Proxy,
            Kind::Proxied,
            Kind::Body,
            Kind::Bodied,
            Kind::Tail,
        ]
        .into_iter()
        .find(|&k| k as u8 == b)
    }

    /// Whether files (and a `BodySpec`) travel with the connection.
    pub fn has_body(self) -> bool {
        matches!(self, Kind::Body | Kind::Bodied | Kind::Tail)
    }
}

/// What the next owner of a connection needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub peer: Peer,
    /// Requests answered on this connection so far (for
    /// `max_requests_per_connection` across workers).
    pub served: u32,
    pub kind: Kind,
    /// When the connection entered its current state (accepted, parked),
    /// in milliseconds of `CLOCK_MONOTONIC` (`scoreboard::now_ms`): the
    /// deadline of that state counts from here, wherever it is.
    pub since_ms: u64,
}

/// Bytes of an encoded [`Meta`].
pub const META_LEN: usize = 40;

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
        out[32..40].copy_from_slice(&self.since_ms.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
        let b: &[u8; META_LEN] = b.get(..META_LEN)?.try_into().ok()?;
        let kind = Kind::from_u8(b[0])?;
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
            since_ms: u64::from_le_bytes(b[32..40].try_into().ok()?),
        })
    }
}

/// What the files that travel with a `Kind::Body`, `Kind::Bodied` or
/// `Kind::Tail` connection hold.
///
/// - `Body`: `head_len` bytes of request head, then `raw_len` bytes of the
///   body as they came (`chunked`, or `length` bytes in all).
/// - `Bodied`: the head, then the decoded body, `length` bytes.
/// - `Tail`: the response's file, from `offset`, `length` bytes still to
///   send; `sent` body bytes went out already, under `status`; then the
///   connection parks (`keep_alive`) or closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodySpec {
    pub head_len: u32,
    pub raw_len: u32,
    pub chunked: bool,
    pub length: u64,
    pub offset: u64,
    pub sent: u64,
    pub status: u16,
    pub keep_alive: bool,
}

/// Bytes of an encoded [`BodySpec`].
pub const BODY_LEN: usize = 36;

impl BodySpec {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.head_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.raw_len.to_le_bytes());
        out[8] = u8::from(self.chunked);
        out[9..17].copy_from_slice(&self.length.to_le_bytes());
        out[17..25].copy_from_slice(&self.offset.to_le_bytes());
        out[25..33].copy_from_slice(&self.sent.to_le_bytes());
        out[33..35].copy_from_slice(&self.status.to_le_bytes());
        out[35] = u8::from(self.keep_alive);
    }

    pub fn decode(b: &[u8]) -> Option<BodySpec> {
        let b = b.get(..BODY_LEN)?;
        Some(BodySpec {
            head_len: u32::from_le_bytes(b[0..4].try_into().ok()?),
            raw_len: u32::from_le_bytes(b[4..8].try_into().ok()?),
            chunked: b[8] != 0,
            length: u64::from_le_bytes(b[9..17].try_into().ok()?),
            offset: u64::from_le_bytes(b[17..25].try_into().ok()?),
            sent: u64::from_le_bytes(b[25..33].try_into().ok()?),
            status: u16::from_le_bytes(b[33..35].try_into().ok()?),
            keep_alive: b[35] != 0,
        })
    }
}

/// What the access line of a response the gate finishes (`Kind::Tail`)
/// needs of its request, in the second file that travels with it: the
/// client's address, the request line's three parts, the referer, the user
/// agent, the request's host, its site's label, where the site's lines go
/// (empty: `[log] access`; `off`; or the index of the site's own file), the
/// site's scoreboard row and when the request began (`scoreboard::now_us`;
/// both in decimal), each a little-endian `u16` length and its bytes (each
/// cut to 8 KiB).
pub struct TailLog;

impl TailLog {
    pub const FIELDS: usize = 11;

    /// Encode `fields` (in the order above).
    pub fn encode(fields: [&[u8]; Self::FIELDS]) -> Vec<u8> {
        let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 2).sum());
        for f in fields {
            let f = &f[..f.len().min(8 << 10)];
            out.extend_from_slice(&(f.len() as u16).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    /// The fields back; `None` for bytes that are not an encoding.
    pub fn decode(b: &[u8]) -> Option<[&[u8]; Self::FIELDS]> {
        let mut out: [&[u8]; Self::FIELDS] = [&[]; Self::FIELDS];
        let mut at = 0;
        for f in out.iter_mut() {
            let n = u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize;
            *f = b.get(at + 2..at + 2 + n)?;
            at += 2 + n;
        }
        Some(out)
    }
}

/// Room for any message but `Notes` (the largest, `Limits`, is 97 bytes).
pub const CONN_MSG: usize = 112;

/// The gate's settings, from `[limits]` and `[server]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLimits {
    pub header_timeout: Duration,
    /// How long a parked connection may stay idle in the gate.
    pub idle_timeout: Duration,
    /// How long a complete request may wait for a worker (then 503).
    pub queue_timeout: Duration,
    pub max_header_bytes: usize,
    /// A first line longer than this without its end goes to a worker (414).
    pub max_line_bytes: usize,
    pub max_pending: usize,
    /// Send `Server: lbaws` in the gate's own answers.
    pub server_header: bool,
    /// Request bodies the gate receives: at most this long, stalling at
    /// most `body_timeout`, at `min_body_rate` bytes a second on average;
    /// kept in memory up to `body_in_memory` bytes, then in an unlinked
    /// file in the directory the supervisor sends (`Msg::TempDir`).
    pub max_body_bytes: u64,
    pub body_timeout: Duration,
    pub min_body_rate: u64,
    pub body_in_memory: u64,
    /// Responses the gate finishes: a reader below this many bytes a
    /// second on average (or stalled `body_timeout`) is closed.
    pub min_send_rate: u64,
}

/// The key of connections not counted under any source (a PROXY header not
/// read yet); also the ledger's mark of a free slot.
pub const NO_KEY: u128 = u128::MAX;
/// The source of every Unix-socket peer (they have no address): one source.
/// Never a real address's key (those are below 2^48, or have 64 zero bits).
pub const UNIX_KEY: u128 = u128::MAX - 1;

/// What the gate reports of a connection it holds (a [`Msg::Notes`] entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// It took an adopted connection: the supervisor may close its copy.
    Adopted = 1,
    /// It could not take one (its descriptor did not arrive: no room in
    /// its table): the supervisor answers it with its own copy.
    Lost = 2,
    /// A request head is complete: it waits for a worker (a `Send`).
    Queued = 3,
    /// Closed by the gate (timed out, answered, evicted, or the peer left).
    Closed = 4,
    /// Closed while it waited for a worker (`queue_timeout`: a 503).
    ClosedQueued = 5,
    /// Closed for a missing or bad PROXY header.
    ProxyRefused = 6,
    /// The answer to a `Send` for a source with nothing waiting any more.
    Empty = 7,
    /// Closed after it was taken for a `Send`, before it was sent: the
    /// `Send`'s answer too.
    Dropped = 8,
    /// A response it finished (`Kind::Tail`) ended, and the connection
    /// waits in the gate for its next request (parked).
    TailParked = 9,
}

impl Note {
    fn from_u8(b: u8) -> Option<Note> {
        [
            Note::Adopted,
            Note::Lost,
            Note::Queued,
            Note::Closed,
            Note::ClosedQueued,
            Note::ProxyRefused,
            Note::Empty,
            Note::Dropped,
            Note::TailParked,
        ]
        .into_iter()
        .find(|&n| n as u8 == b)
    }
}

/// One entry of a [`Msg::Notes`]: the connection's source key, the kind it
/// was adopted as, and what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoteEntry {
    pub key: u128,
    pub kind: Kind,
    pub note: Note,
}

/// Notes in one message, at most.
pub const NOTES_PER_MSG: usize = 128;
const NOTE_LEN: usize = 18;

/// Bytes of the logs' description in [`Msg::Logs`] (`log::spec`).
pub const LOG_SPEC_LEN: usize = crate::log::SPEC_LEN;

/// Every message, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// supervisor -> gate, with the connection's descriptor (and its
    /// request's file, for `Kind::Body`).
    Adopt { meta: Meta, body: Option<BodySpec> },
    /// supervisor -> gate: a worker is free for this source.
    Send(u128),
    /// supervisor -> gate.
    Limits(GateLimits),
    /// supervisor -> gate: the logs as they are now (at start, after
    /// SIGUSR1 and after a reload), with the access log file's descriptor
    /// when it is one.
    Logs([u8; LOG_SPEC_LEN]),
    /// supervisor -> gate, after `Logs`: the sites' own access log file
    /// `index` of `count` (`[[site]] access`), with its descriptor (none
    /// when `count` is 0: there are none).
    SiteLog { index: u8, count: u8 },
    /// supervisor -> gate, with a descriptor of `[server] temp_dir`: where
    /// request bodies too large for memory wait.
    TempDir,
    /// supervisor -> gate: close what is idle, finish the rest, then exit.
    Stop,
    /// supervisor -> gate: hand every connection back (as `Ready`, with the
    /// kind it was adopted as), close those being closed, then exit.
    Handover,
    /// gate -> supervisor, with the descriptor (and its request's file, for
    /// `Kind::Bodied`); `answer`: to a `Send`.
    Ready {
        meta: Meta,
        answer: bool,
        body: Option<BodySpec>,
    },
    /// gate -> supervisor: `n` entries, read with [`notes`].
    Notes { n: usize },
    /// worker -> supervisor, with the descriptor (and its request's file,
    /// for `Kind::Body`).
    Park {
        pid: u32,
        meta: Meta,
        body: Option<BodySpec>,
    },
}

/// Largest encoded message.
pub const MAX_MSG: usize = 1 + NOTES_PER_MSG * NOTE_LEN;

const TAG_ADOPT: u8 = 1;
const TAG_READY: u8 = 2;
const TAG_PARK: u8 = 3;
const TAG_LIMITS: u8 = 4;
const TAG_STOP: u8 = 5;
const TAG_NOTES: u8 = 6;
const TAG_HANDOVER: u8 = 7;
const TAG_SEND: u8 = 8;
const TAG_LOGS: u8 = 9;
const TAG_TEMP_DIR: u8 = 10;
const TAG_SITE_LOG: u8 = 11;

/// Encode a message into `out` (at least 64 bytes for all but `Notes`,
/// which is built with [`NoteBatch`]); returns its length.
pub fn encode(msg: &Msg, out: &mut [u8]) -> usize {
    match msg {
        Msg::Adopt { meta, body } => {
            out[0] = TAG_ADOPT;
            meta.encode(&mut out[1..]);
            1 + META_LEN + encode_body(meta, body, &mut out[1 + META_LEN..])
        }
        Msg::Ready { meta, answer, body } => {
            out[0] = TAG_READY;
            out[1] = u8::from(*answer);
            meta.encode(&mut out[2..]);
            2 + META_LEN + encode_body(meta, body, &mut out[2 + META_LEN..])
        }
        Msg::Send(key) => {
            out[0] = TAG_SEND;
            out[1..17].copy_from_slice(&key.to_le_bytes());
            17
        }
        Msg::Park { pid, meta, body } => {
            out[0] = TAG_PARK;
            out[1..5].copy_from_slice(&pid.to_le_bytes());
            meta.encode(&mut out[5..]);
            5 + META_LEN + encode_body(meta, body, &mut out[5 + META_LEN..])
        }
        Msg::Limits(l) => {
            out[0] = TAG_LIMITS;
            let fields = [
                l.header_timeout.as_millis() as u64,
                l.idle_timeout.as_millis() as u64,
                l.queue_timeout.as_millis() as u64,
                l.max_header_bytes as u64,
                l.max_line_bytes as u64,
                l.max_pending as u64,
                u64::from(l.server_header),
                l.max_body_bytes,
                l.body_timeout.as_millis() as u64,
                l.min_body_rate,
                l.body_in_memory,
                l.min_send_rate,
            ];
            for (i, f) in fields.iter().enumerate() {
                out[1 + 8 * i..9 + 8 * i].copy_from_slice(&f.to_le_bytes());
            }
            1 + 8 * fields.len()
        }
        Msg::Logs(spec) => {
            out[0] = TAG_LOGS;
            out[1..1 + LOG_SPEC_LEN].copy_from_slice(spec);
            1 + LOG_SPEC_LEN
        }
        Msg::SiteLog { index, count } => {
            out[0] = TAG_SITE_LOG;
            out[1] = *index;
            out[2] = *count;
            3
        }
        Msg::Stop => {
            out[0] = TAG_STOP;
            1
        }
        Msg::TempDir => {
            out[0] = TAG_TEMP_DIR;
            1
        }
        Msg::Handover => {
            out[0] = TAG_HANDOVER;
            1
        }
        Msg::Notes { .. } => unreachable!("built by NoteBatch"),
    }
}

/// Decode a received message; `None` for anything malformed.
pub fn decode(b: &[u8]) -> Option<Msg> {
    let u64_at =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    match *b.first()? {
        TAG_ADOPT => {
            let meta = Meta::decode(&b[1..])?;
            let body = decode_body(&meta, &b[1 + META_LEN..])?;
            Some(Msg::Adopt { meta, body })
        }
        TAG_READY => {
            let meta = Meta::decode(b.get(2..)?)?;
            let body = decode_body(&meta, &b[2 + META_LEN..])?;
            Some(Msg::Ready {
                answer: *b.get(1)? != 0,
                meta,
                body,
            })
        }
        TAG_SEND => Some(Msg::Send(u128::from_le_bytes(
            b.get(1..17)?.try_into().ok()?,
        ))),
        TAG_PARK => {
            let meta = Meta::decode(b.get(5..)?)?;
            let body = decode_body(&meta, &b[5 + META_LEN..])?;
            Some(Msg::Park {
                pid: u32::from_le_bytes(b.get(1..5)?.try_into().ok()?),
                meta,
                body,
            })
        }
        TAG_LIMITS => Some(Msg::Limits(GateLimits {
            header_timeout: Duration::from_millis(u64_at(1)?),
            idle_timeout: Duration::from_millis(u64_at(9)?),
            queue_timeout: Duration::from_millis(u64_at(17)?),
            max_header_bytes: u64_at(25)? as usize,
            max_line_bytes: u64_at(33)? as usize,
            max_pending: u64_at(41)? as usize,
            server_header: u64_at(49)? != 0,
            max_body_bytes: u64_at(57)?,
            body_timeout: Duration::from_millis(u64_at(65)?),
            min_body_rate: u64_at(73)?,
            body_in_memory: u64_at(81)?,
            min_send_rate: u64_at(89)?,
        })),
        TAG_LOGS => Some(Msg::Logs(b.get(1..1 + LOG_SPEC_LEN)?.try_into().ok()?)),
        TAG_SITE_LOG => Some(Msg::SiteLog {
            index: *b.get(1)?,
            count: *b.get(2)?,
        }),
        TAG_STOP => Some(Msg::Stop),
        TAG_TEMP_DIR => Some(Msg::TempDir),
        TAG_HANDOVER => Some(Msg::Handover),
        TAG_NOTES if (b.len() - 1).is_multiple_of(NOTE_LEN) => Some(Msg::Notes {
            n: (b.len() - 1) / NOTE_LEN,
        }),
        _ => None,
    }
}

/// A request's `BodySpec` after its `Meta`, for the kinds that carry one;
/// returns its length.
fn encode_body(meta: &Meta, body: &Option<BodySpec>, out: &mut [u8]) -> usize {
    match (meta.kind.has_body(), body) {
        (true, Some(b)) => {
            b.encode(out);
            BODY_LEN
        }
        (true, None) => {
            BodySpec::default().encode(out);
            BODY_LEN
        }
        (false, _) => 0,
    }
}

/// `Some(None)` for a kind without a body; `None`: malformed.
fn decode_body(meta: &Meta, b: &[u8]) -> Option<Option<BodySpec>> {
    match meta.kind.has_body() {
        true => Some(Some(BodySpec::decode(b)?)),
        false => Some(None),
    }
}

/// The entries of a `Notes` message (malformed ones are skipped).
pub fn notes(b: &[u8]) -> impl Iterator<Item = NoteEntry> + '_ {
    b[1..].chunks_exact(NOTE_LEN).filter_map(|c| {
        Some(NoteEntry {
            key: u128::from_le_bytes(c[..16].try_into().ok()?),
            kind: Kind::from_u8(c[16])?,
            note: Note::from_u8(c[17])?,
        })
    })
}

/// The `i`th entry of a `Notes` message of `n` entries.
pub fn note_at(b: &[u8], i: usize) -> Option<NoteEntry> {
    let at = 1 + i * NOTE_LEN;
    notes(b.get(..at + NOTE_LEN)?).last()
}

/// Notes collected by the gate, sent as one message.
pub struct NoteBatch {
    buf: [u8; MAX_MSG],
    n: usize,
}

impl Default for NoteBatch {
    fn default() -> Self {
        let mut buf = [0u8; MAX_MSG];
        buf[0] = TAG_NOTES;
        NoteBatch { buf, n: 0 }
    }
}

impl NoteBatch {
    pub fn is_full(&self) -> bool {
        self.n == NOTES_PER_MSG
    }

    pub fn len(&self) -> usize {
        self.n
    }

    /// Add one (the batch must not be full).
    pub fn push(&mut self, e: NoteEntry) {
        let at = 1 + self.n * NOTE_LEN;
        self.buf[at..at + 16].copy_from_slice(&e.key.to_le_bytes());
        self.buf[at + 16] = e.kind as u8;
        self.buf[at + 17] = e.note as u8;
        self.n += 1;
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..1 + self.n * NOTE_LEN]
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
        _ => source_key(&meta.peer),
    }
}

/// The part of a peer address that names its host, for fair admission: an
/// IPv4 address (also when it arrives IPv4-mapped on a dual-stack socket),
/// or an IPv6 /64 (one host usually owns a whole /64); [`UNIX_KEY`] for
/// every Unix-socket peer.
pub fn source_key(peer: &Peer) -> u128 {
    match peer {
        Peer::Unix => UNIX_KEY,
        Peer::Inet(a) => match a.ip().to_canonical() {
            // ::ffff:a.b.c.d: the low 64 bits are never zero, unlike the
            // keys of IPv6 prefixes below.
            IpAddr::V4(v4) => 0xffff_0000_0000 | u32::from(v4) as u128,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) << 64,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Msg) {
        let mut buf = [0u8; MAX_MSG];
        let n = encode(&m, &mut buf);
        assert!(n <= CONN_MSG, "{m:?} is {n} bytes");
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
                since_ms: 123_456_789_012,
            };
            round_trip(Msg::Adopt { meta, body: None });
            for answer in [false, true] {
                round_trip(Msg::Ready {
                    meta: Meta {
                        kind: Kind::New,
                        ..meta
                    },
                    answer,
                    body: None,
                });
            }
            round_trip(Msg::Park {
                pid: 4242,
                meta,
                body: None,
            });
            for kind in [Kind::Proxy, Kind::Proxied, Kind::Closing] {
                round_trip(Msg::Adopt {
                    meta: Meta { kind, ..meta },
                    body: None,
                });
            }
            let spec = BodySpec {
                head_len: 300,
                raw_len: 12,
                chunked: true,
                length: 1 << 40,
                offset: 77,
                sent: 1 << 33,
                status: 206,
                keep_alive: true,
            };
            for kind in [Kind::Body, Kind::Bodied, Kind::Tail] {
                let meta = Meta { kind, ..meta };
                let body = Some(spec);
                round_trip(Msg::Adopt { meta, body });
                round_trip(Msg::Park { pid: 1, meta, body });
                let answer = true;
                round_trip(Msg::Ready { meta, answer, body });
                let mut buf = [0u8; MAX_MSG];
                assert!(encode(&Msg::Park { pid: 1, meta, body }, &mut buf) <= CONN_MSG);
            }
        }
        round_trip(Msg::Stop);
        round_trip(Msg::Handover);
        round_trip(Msg::Send(0xffff_7f00_0001));
        round_trip(Msg::Send(UNIX_KEY));
        round_trip(Msg::Logs([2, 1, 0, 3]));
        round_trip(Msg::Limits(GateLimits {
            header_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_millis(4_900),
            queue_timeout: Duration::from_millis(7_000),
            max_header_bytes: 16384,
            max_line_bytes: 8224,
            max_pending: 19_000,
            server_header: true,
            max_body_bytes: 10 << 20,
            body_timeout: Duration::from_millis(30_000),
            min_body_rate: 500,
            body_in_memory: 64 << 10,
            min_send_rate: 500,
        }));
        round_trip(Msg::TempDir);
        round_trip(Msg::SiteLog {
            index: 3,
            count: 64,
        });
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[TAG_ADOPT, 9]), None, "short");
        assert_eq!(decode(&[TAG_SEND, 9]), None, "short");
        assert_eq!(decode(&[99]), None);
    }

    #[test]
    fn tail_logs_round_trip() {
        let long = vec![b'x'; 10_000];
        let fields: [&[u8]; TailLog::FIELDS] = [
            b"127.0.0.1",
            b"GET",
            b"/a b",
            b"HTTP/1.1",
            b"",
            &long,
            b"a.test",
            b"a.test",
            b"3",
            b"2",
            b"123456",
        ];
        let enc = TailLog::encode(fields);
        let back = TailLog::decode(&enc).unwrap();
        assert_eq!(&back[..5], &fields[..5]);
        assert_eq!(back[5].len(), 8 << 10, "cut to 8 KiB");
        assert_eq!(&back[6..], &fields[6..]);
        assert!(TailLog::decode(&enc[..enc.len() - 1]).is_none());
    }

    #[test]
    fn note_batches() {
        let mut b = NoteBatch::default();
        let entries = [
            NoteEntry {
                key: 7,
                kind: Kind::New,
                note: Note::Queued,
            },
            NoteEntry {
                key: NO_KEY,
                kind: Kind::Parked,
                note: Note::Closed,
            },
            NoteEntry {
                key: NO_KEY,
                kind: Kind::Proxy,
                note: Note::ProxyRefused,
            },
            NoteEntry {
                key: UNIX_KEY,
                kind: Kind::Proxied,
                note: Note::Lost,
            },
            NoteEntry {
                key: 9,
                kind: Kind::Closing,
                note: Note::Empty,
            },
        ];
        for e in entries {
            b.push(e);
        }
        assert_eq!(decode(b.bytes()), Some(Msg::Notes { n: entries.len() }));
        let got: Vec<_> = notes(b.bytes()).collect();
        assert_eq!(got, entries);
        assert_eq!(note_at(b.bytes(), 3), Some(entries[3]));
        assert_eq!(note_at(b.bytes(), 5), None);
        while !b.is_full() {
            b.push(entries[0]);
        }
        assert!(MAX_MSG >= b.bytes().len());
    }

    #[test]
    fn source_keys() {
        let key = |s: &str| source_key(&Peer::Inet(s.parse().unwrap()));
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
        assert_eq!(source_key(&Peer::Unix), UNIX_KEY);
        for k in [key("255.255.255.255:1"), key("[ffff:ffff:ffff:ffff::1]:1")] {
            assert!(k != UNIX_KEY && k != NO_KEY);
        }
    }
}
