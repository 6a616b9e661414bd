//! Upgrading in place: what a running supervisor hands to the image it
//! re-executes, and how that image takes it back. The process keeps its pid
//! (systemd's MainPID, a pid file, its children), so the hand-over is
//! through `execve` itself: the descriptors stay open across it (close-on-exec
//! cleared on exactly these), and this record, in a memfd named by
//! [`ENV`], says what each one is.
//!
//! ```text
//!   the old image (upgrade/mod.rs)               the new image (upgrade/resume.rs)
//!   SIGUSR2 -> RELOADING=1
//!   run `NEW check --upgrade-format N`
//!   the gate hands its connections back
//!   State -> memfd, execve(NEW) --------------->  State <- memfd
//!                                                 listeners, pipes, scoreboard,
//!                                                 workers adopted (reaped later)
//!                                                 a new gate takes the connections
//!                                                 READY=1, STATUS "lbaws VERSION ..."
//! ```
//!
//! The record is versioned ([`FORMAT`]); the old image asks the new binary,
//! in its check, whether it reads that version, before anything changes.
//! Everything that can fail comes before the exec: after it, the new image
//! only ever logs and carries on.

use crate::handoff::{BodySpec, Meta, BODY_LEN, META_LEN};
use crate::listen::Peer;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

/// The version of this record. A binary that cannot read a version refuses
/// `check --upgrade-format N`, which refuses the upgrade. It also covers the
/// scoreboard's layout, which the new image maps as the old one left it,
/// and the messages on the park channel, which carried workers go on using:
/// 2 is the scoreboard with the status page's slots and counters (a binary
/// of format 1, lbaws 0.2.0, is replaced by a restart, not in place); 3
/// adds fair admission's counters, the time in each `Meta`, the slot's
/// owed access line, the sites' rows and the hand-offs of bodies and tails
/// (0.4.0).
pub const FORMAT: u32 = 3;
/// The environment variable naming the record's descriptor.
pub const ENV: &str = "LBAWS_UPGRADE_FD";
const MAGIC: &[u8; 8] = b"LBAWSUP\0";
/// Sanity bounds for decoding (a record is written by lbaws itself).
const MAX_ITEMS: u32 = 1 << 22;

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedListener {
    pub fd: RawFd,
    /// From systemd (never closed by lbaws).
    pub inherited: bool,
    pub name: Option<String>,
}

/// A worker still serving its connection: the new image reaps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarriedWorker {
    pub pid: i32,
    pub peer: Peer,
    /// How long it had been running, in milliseconds.
    pub age_ms: u64,
    /// Its connection's source key (`handoff::NO_KEY` once parked).
    pub key: u128,
    pub slot: u32,
}

/// A connection the gate held (or a worker just parked): the new gate takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarriedConn {
    pub fd: RawFd,
    pub meta: Meta,
    /// The files that travel with it (`Kind::Body`, `Kind::Bodied`: its
    /// request's; `Kind::Tail`: the response's and its log's; -1: none),
    /// and what they hold.
    pub file: RawFd,
    pub file2: RawFd,
    pub spec: BodySpec,
}

/// Everything the new image takes over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// The version that wrote it, for the log.
    pub from_version: String,
    /// Started with `--daemon` (logs to syslog, a pid file to remove).
    pub daemon: bool,
    /// Workers ended (served), connections parked, access-log lines lost.
    pub counters: [u64; 3],
    pub stop_reader: RawFd,
    /// -1: none (not possible while serving, kept for completeness).
    pub stop_writer: RawFd,
    pub park_rx: RawFd,
    pub park_tx: RawFd,
    pub scoreboard: RawFd,
    pub next_slot: u32,
    pub free_slots: Vec<u32>,
    pub listeners: Vec<CarriedListener>,
    pub workers: Vec<CarriedWorker>,
    pub conns: Vec<CarriedConn>,
}

impl State {
    /// Every descriptor the record names (to keep open across the exec).
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v = vec![
            self.stop_reader,
            self.park_rx,
            self.park_tx,
            self.scoreboard,
        ];
        if self.stop_writer >= 0 {
            v.push(self.stop_writer);
        }
        v.extend(self.listeners.iter().map(|l| l.fd));
        v.extend(self.conns.iter().map(|c| c.fd));
        v.extend(
            self.conns
                .iter()
                .flat_map(|c| [c.file, c.file2])
                .filter(|&f| f >= 0),
        );
        v
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(
            128 + self.listeners.len() * 64
                + self.workers.len() * (META_LEN + 40)
                + self.conns.len() * (META_LEN + 12 + BODY_LEN),
        );
        w.extend_from_slice(MAGIC);
        put_u32(&mut w, FORMAT);
        put_str(&mut w, &self.from_version);
        w.push(u8::from(self.daemon));
        for c in self.counters {
            put_u64(&mut w, c);
        }
        for fd in [
            self.stop_reader,
            self.stop_writer,
            self.park_rx,
            self.park_tx,
            self.scoreboard,
        ] {
            put_u32(&mut w, fd as u32);
        }
        put_u32(&mut w, self.next_slot);
        put_u32(&mut w, self.free_slots.len() as u32);
        for s in &self.free_slots {
            put_u32(&mut w, *s);
        }
        put_u32(&mut w, self.listeners.len() as u32);
        for l in &self.listeners {
            put_u32(&mut w, l.fd as u32);
            w.push(u8::from(l.inherited));
            match &l.name {
                Some(n) => {
                    w.push(1);
                    put_str(&mut w, n);
                }
                None => w.push(0),
            }
        }
        put_u32(&mut w, self.workers.len() as u32);
        for wk in &self.workers {
            put_u32(&mut w, wk.pid as u32);
            put_u64(&mut w, wk.age_ms);
            w.extend_from_slice(&wk.key.to_le_bytes());
            put_u32(&mut w, wk.slot);
            put_meta(&mut w, &peer_meta(wk.peer));
        }
        put_u32(&mut w, self.conns.len() as u32);
        for c in &self.conns {
            put_u32(&mut w, c.fd as u32);
            put_meta(&mut w, &c.meta);
            put_u32(&mut w, c.file as u32);
            put_u32(&mut w, c.file2 as u32);
            let at = w.len();
            w.resize(at + BODY_LEN, 0);
            c.spec.encode(&mut w[at..]);
        }
        w
    }

    pub fn decode(b: &[u8]) -> Result<State, String> {
        let mut r = Reader { b, at: 0 };
        if r.take(8)? != MAGIC {
            return Err("not an lbaws upgrade record".into());
        }
        let format = r.u32()?;
        if format != FORMAT {
            return Err(format!(
                "upgrade record format {format}, this binary reads {FORMAT}"
            ));
        }
        let from_version = r.string()?;
        let daemon = r.u8()? != 0;
        let mut counters = [0u64; 3];
        for c in &mut counters {
            *c = r.u64()?;
        }
        let [stop_reader, stop_writer, park_rx, park_tx, scoreboard] =
            [r.fd()?, r.fd()?, r.fd()?, r.fd()?, r.fd()?];
        let next_slot = r.u32()?;
        let n = r.count()?;
        let free_slots = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
        let n = r.count()?;
        let mut listeners = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let fd = r.fd()?;
            let inherited = r.u8()? != 0;
            let name = match r.u8()? {
                0 => None,
                _ => Some(r.string()?),
            };
            listeners.push(CarriedListener {
                fd,
                inherited,
                name,
            });
        }
        let n = r.count()?;
        let mut workers = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let pid = r.u32()? as i32;
            let age_ms = r.u64()?;
            let key = u128::from_le_bytes(r.take(16)?.try_into().expect("16 bytes"));
            let slot = r.u32()?;
            let peer = r.meta()?.peer;
            workers.push(CarriedWorker {
                pid,
                peer,
                age_ms,
                key,
                slot,
            });
        }
        let n = r.count()?;
        let mut conns = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let fd = r.fd()?;
            let meta = r.meta()?;
            let file = r.fd()?;
            let file2 = r.fd()?;
            let spec = BodySpec::decode(r.take(BODY_LEN)?).ok_or("a bad connection record")?;
            conns.push(CarriedConn {
                fd,
                meta,
                file,
                file2,
                spec,
            });
        }
        if r.at != b.len() {
            return Err("trailing bytes in the upgrade record".into());
        }
        Ok(State {
            from_version,
            daemon,
            counters,
            stop_reader,
            stop_writer,
            park_rx,
            park_tx,
            scoreboard,
            next_slot,
            free_slots,
            listeners,
            workers,
            conns,
        })
    }

    /// The record in a memfd that survives the exec (not close-on-exec).
    pub fn to_memfd(&self) -> Result<OwnedFd, nix::errno::Errno> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"lbaws-upgrade", MFdFlags::empty())?;
        let bytes = self.encode();
        let mut at = 0;
        while at < bytes.len() {
            at += nix::unistd::write(fd.as_fd(), &bytes[at..])?;
        }
        nix::unistd::lseek(fd.as_fd(), 0, nix::unistd::Whence::SeekSet)?;
        Ok(fd)
    }
}

/// In a freshly started image: the record, if this start is an upgrade in
/// place (the variable is removed from the environment either way, and the
/// record's descriptor closed).
pub fn take() -> Option<Result<State, String>> {
    let v = std::env::var(ENV).ok()?;
    // SAFETY: single-threaded start-up.
    unsafe { std::env::remove_var(ENV) };
    let Ok(fd) = v.parse::<RawFd>() else {
        return Some(Err(format!("{ENV}={v:?} is not a descriptor")));
    };
    // SAFETY: the descriptor was left open for this image by the one before.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut file, &mut bytes) {
        return Some(Err(format!("reading the upgrade record: {e}")));
    }
    Some(State::decode(&bytes))
}

/// A worker's peer, in the connection record's encoding.
fn peer_meta(peer: Peer) -> Meta {
    Meta {
        peer,
        served: 0,
        kind: crate::handoff::Kind::New,
        since_ms: 0,
    }
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u32(w, s.len() as u32);
    w.extend_from_slice(s.as_bytes());
}

fn put_meta(w: &mut Vec<u8>, m: &Meta) {
    let at = w.len();
    w.resize(at + META_LEN, 0);
    m.encode(&mut w[at..]);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or("the upgrade record is cut short")?;
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn fd(&mut self) -> Result<RawFd, String> {
        Ok(self.u32()? as i32)
    }

    fn count(&mut self) -> Result<u32, String> {
        let n = self.u32()?;
        if n > MAX_ITEMS {
            return Err(format!("the upgrade record lists {n} items"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| "a name in the upgrade record is not UTF-8".into())
    }

    fn meta(&mut self) -> Result<Meta, String> {
        Meta::decode(self.take(META_LEN)?).ok_or_else(|| "a bad connection record".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::Kind;

    fn sample() -> State {
        State {
            from_version: "0.2.0".into(),
            daemon: true,
            counters: [1, 2, 3],
            stop_reader: 5,
            stop_writer: 6,
            park_rx: 7,
            park_tx: 8,
            scoreboard: 9,
            next_slot: 12,
            free_slots: vec![3, 1],
            listeners: vec![
                CarriedListener {
                    fd: 3,
                    inherited: true,
                    name: Some("http".into()),
                },
                CarriedListener {
                    fd: 4,
                    inherited: false,
                    name: None,
                },
            ],
            workers: vec![CarriedWorker {
                pid: 4242,
                peer: Peer::Inet("192.0.2.1:5555".parse().unwrap()),
                age_ms: 1500,
                key: 77,
                slot: 2,
            }],
            conns: vec![CarriedConn {
                fd: 10,
                meta: Meta {
                    peer: Peer::Inet("[2001:db8::1]:80".parse().unwrap()),
                    served: 3,
                    kind: Kind::Parked,
                    since_ms: 99,
                },
                file: 11,
                file2: -1,
                spec: BodySpec {
                    head_len: 40,
                    raw_len: 3,
                    chunked: true,
                    length: 77,
                    ..Default::default()
                },
            }],
        }
    }

    #[test]
    fn records_round_trip() {
        let s = sample();
        assert_eq!(State::decode(&s.encode()), Ok(s.clone()));
        assert_eq!(s.fds(), vec![5, 7, 8, 9, 6, 3, 4, 10, 11]);
        let empty = State::default();
        assert_eq!(State::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn bad_records_are_refused() {
        let b = sample().encode();
        for cut in [0, 7, 12, b.len() - 1] {
            assert!(State::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = b.clone();
        other[8] = 99; // another format
        assert!(State::decode(&other).unwrap_err().contains("format 99"));
        let mut longer = b;
        longer.push(0);
        assert!(State::decode(&longer).is_err());
    }
}
