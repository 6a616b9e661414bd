//! Upgrading in place: what a running supervisor hands to the image it
//! re-executes, and how that image takes it back. The process keeps its pid
//! (systemd's MainPID, a pid file, its children), so the hand-over is
//! through `execve` itself: the descriptors stay open across it (close-on-exec
//! cleared on exactly these), and this record, in a memfd named by
//! [`ENV`], says what each one is.
//!
//! ```text
//!   the old image (upgrade/mod.rs)               the new image (upgrade/resume.rs)
//!   SIGUSR2 -> RELOADING=1, NEW opened, the
//!   configuration file read
//!   NEW run with the exec's argv and env and
//!   a record of purpose Check ---------------->  parse, sandbox, filter: "passed"
//!   the gate hands its connections back
//!   State -> memfd, execveat(NEW) ------------->  State <- memfd
//!                                                 listeners, pipes, scoreboard,
//!                                                 workers adopted (reaped later)
//!                                                 a new gate takes the connections
//!                                                 READY=1, STATUS "lbaws VERSION ..."
//! ```
//!
//! The record is versioned ([`FORMAT`]). The upgrade's check is a record
//! too ([`Purpose::Check`], naming no descriptor): the new binary, run with
//! the arguments and the environment it will be executed with, reads it and
//! does what taking over would do but hold the descriptors, so that what it
//! refuses, it refuses before anything changes. A binary that reads another
//! format refuses it (this one says "cannot take over from this lbaws", as
//! `check --upgrade-format N` does; 0.2.0 and 0.3.0 exit 71 with "upgrade
//! record format 3, this binary reads N"). The record carries the
//! configuration's text that the check read, so that the new image runs
//! what was checked whatever happens to the file; the image before (its
//! binary open, its configuration's text), for the new image to fall back
//! to if it cannot take over after all; and the seccomp filters the process
//! runs under, so that none is attached twice.

use super::wire::{Reader, Writer};
use crate::handoff::{BodySpec, Meta, BODY_LEN, META_LEN};
use crate::listen::Peer;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The version of this record. A binary that cannot read a version refuses
/// `check --upgrade-format N`, which refuses the upgrade. It also covers the
/// scoreboard's layout, which the new image maps as the old one left it,
/// and the messages on the park channel, which carried workers go on using:
/// 2 is the scoreboard with the status page's slots and counters (a binary
/// of format 1, lbaws 0.2.0, is replaced by a restart, not in place); 3
/// adds fair admission's counters, the time in each `Meta`, the slot's
/// owed access line, the sites' rows, the hand-offs of bodies and tails,
/// the check as a record, the configuration's text, the image to fall back
/// to and the filters attached (0.4.0).
pub const FORMAT: u32 = 3;
/// The environment variable naming the record's descriptor.
pub const ENV: &str = "LBAWS_UPGRADE_FD";
/// What the check says when it would take over (the old image looks for
/// it: a program that is no lbaws and exits 0 is refused too).
pub const PASSED: &str = "upgrade check passed";
/// What a binary says of a record in a format it does not read (postinst
/// restarts the service then, rather than upgrade in place).
pub const OTHER: &str = "cannot take over from this lbaws";
const MAGIC: &[u8; 8] = b"LBAWSUP\0";

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

/// What a record is for (the byte after its format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// The image executed takes over.
    #[default]
    TakeOver,
    /// The upgrade's check: say whether this binary would take over (and
    /// exit), holding nothing; the record names no descriptor.
    Check,
}

/// The configuration an image runs: its file (`None`: the built-in one)
/// and the text read from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Carried {
    pub path: Option<PathBuf>,
    pub text: String,
}

/// The image before an upgrade, for the new one to fall back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// Its executable, open (`O_PATH`), even if the file was replaced.
    pub exe: RawFd,
    /// The text of the configuration it ran (from `Carried::path`).
    pub text: String,
}

/// Everything the new image takes over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub purpose: Purpose,
    /// The version that wrote it, for the log.
    pub from_version: String,
    /// The path upgrades run (what the first image was started from).
    pub exe: PathBuf,
    /// The descriptor the new binary was executed from (`execveat`), open
    /// in the new image when that was a script (-1: none).
    pub exe_fd: RawFd,
    /// The configuration to run: the text the check read.
    pub config: Carried,
    /// The image to fall back to (`None`: this is the fallback, or there
    /// was no way back).
    pub previous: Option<Previous>,
    /// Set by an image that fell back: why the upgrade failed.
    pub fell_back: Option<String>,
    /// The seccomp filters the process runs under (`sandbox::attached`).
    pub filters: Vec<u64>,
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

impl Carried {
    /// The configuration, as `config::load` would read it from the file.
    pub fn parse(&self) -> Result<crate::config::Config, crate::config::ConfigError> {
        let name = match &self.path {
            Some(p) => p.display().to_string(),
            None => crate::config::BUILTIN_NAME.to_string(),
        };
        crate::config::parse(&self.text, &name)
    }
}

impl State {
    /// Every descriptor the record names (to keep open across the exec;
    /// `exe_fd` apart).
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
        v.extend(self.previous.as_ref().map(|p| p.exe).filter(|&f| f >= 0));
        v
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(
            256 + self.config.text.len()
                + self.previous.as_ref().map_or(0, |p| p.text.len())
                + self.listeners.len() * 64
                + self.workers.len() * (META_LEN + 40)
                + self.conns.len() * (META_LEN + 12 + BODY_LEN),
        ));
        w.0.extend_from_slice(MAGIC);
        w.u32(FORMAT);
        self.encode_image(&mut w);
        self.encode_carried(&mut w);
        w.0
    }

    /// What the image is and runs.
    fn encode_image(&self, w: &mut Writer) {
        w.u8(match self.purpose {
            Purpose::TakeOver => 0,
            Purpose::Check => 1,
        });
        w.str(&self.from_version);
        w.path(&self.exe);
        w.fd(self.exe_fd);
        w.opt(self.config.path.as_ref(), |w, p| w.path(p));
        w.str(&self.config.text);
        w.opt(self.previous.as_ref(), |w, p| {
            w.fd(p.exe);
            w.str(&p.text);
        });
        w.opt(self.fell_back.as_ref(), |w, why| w.str(why));
        w.count(self.filters.len());
        for f in &self.filters {
            w.u64(*f);
        }
        w.flag(self.daemon);
        for c in self.counters {
            w.u64(c);
        }
    }

    /// What it takes over: descriptors, workers, connections.
    fn encode_carried(&self, w: &mut Writer) {
        for fd in [
            self.stop_reader,
            self.stop_writer,
            self.park_rx,
            self.park_tx,
            self.scoreboard,
        ] {
            w.fd(fd);
        }
        w.u32(self.next_slot);
        w.count(self.free_slots.len());
        for s in &self.free_slots {
            w.u32(*s);
        }
        w.count(self.listeners.len());
        for l in &self.listeners {
            w.fd(l.fd);
            w.flag(l.inherited);
            w.opt(l.name.as_ref(), |w, n| w.str(n));
        }
        w.count(self.workers.len());
        for wk in &self.workers {
            w.u32(wk.pid as u32);
            w.u64(wk.age_ms);
            w.u128(wk.key);
            w.u32(wk.slot);
            w.meta(&peer_meta(wk.peer));
        }
        w.count(self.conns.len());
        for c in &self.conns {
            w.fd(c.fd);
            w.meta(&c.meta);
            w.fd(c.file);
            w.fd(c.file2);
            let mut spec = [0u8; BODY_LEN];
            c.spec.encode(&mut spec);
            w.0.extend_from_slice(&spec);
        }
    }

    pub fn decode(b: &[u8]) -> Result<State, String> {
        let mut r = Reader { b, at: 0 };
        if r.take(8)? != MAGIC {
            return Err("not an lbaws upgrade record".into());
        }
        let format = r.u32()?;
        if format != FORMAT {
            return Err(format!(
                "{OTHER}: it hands over format {format}, this binary reads {FORMAT}"
            ));
        }
        let mut s = State::default();
        s.decode_image(&mut r)?;
        s.decode_carried(&mut r)?;
        if r.at != b.len() {
            return Err("trailing bytes in the upgrade record".into());
        }
        Ok(s)
    }

    fn decode_image(&mut self, r: &mut Reader) -> Result<(), String> {
        self.purpose = match r.u8()? {
            0 => Purpose::TakeOver,
            1 => Purpose::Check,
            n => return Err(format!("an upgrade record for purpose {n}")),
        };
        self.from_version = r.string()?;
        self.exe = r.path()?;
        self.exe_fd = r.fd()?;
        self.config = Carried {
            path: r.opt(Reader::path)?,
            text: r.string()?,
        };
        self.previous = r.opt(|r| {
            Ok(Previous {
                exe: r.fd()?,
                text: r.string()?,
            })
        })?;
        self.fell_back = r.opt(Reader::string)?;
        self.filters = r.list(Reader::u64)?;
        self.daemon = r.flag()?;
        for c in &mut self.counters {
            *c = r.u64()?;
        }
        Ok(())
    }

    fn decode_carried(&mut self, r: &mut Reader) -> Result<(), String> {
        [
            self.stop_reader,
            self.stop_writer,
            self.park_rx,
            self.park_tx,
            self.scoreboard,
        ] = [r.fd()?, r.fd()?, r.fd()?, r.fd()?, r.fd()?];
        self.next_slot = r.u32()?;
        self.free_slots = r.list(Reader::u32)?;
        self.listeners = r.list(|r| {
            Ok(CarriedListener {
                fd: r.fd()?,
                inherited: r.flag()?,
                name: r.opt(Reader::string)?,
            })
        })?;
        self.workers = r.list(|r| {
            Ok(CarriedWorker {
                pid: r.u32()? as i32,
                age_ms: r.u64()?,
                key: r.u128()?,
                slot: r.u32()?,
                peer: r.meta()?.peer,
            })
        })?;
        self.conns = r.list(|r| {
            Ok(CarriedConn {
                fd: r.fd()?,
                meta: r.meta()?,
                file: r.fd()?,
                file2: r.fd()?,
                spec: BodySpec::decode(r.take(BODY_LEN)?).ok_or("a bad connection record")?,
            })
        })?;
        Ok(())
    }

    /// The record in a memfd (close-on-exec: cleared right before the
    /// exec that hands it over).
    pub fn to_memfd(&self) -> Result<OwnedFd, nix::errno::Errno> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"lbaws-upgrade", MFdFlags::MFD_CLOEXEC)?;
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
/// place or its check (the variable is removed from the environment either
/// way, and the record's descriptor closed).
pub fn take() -> Option<Result<State, String>> {
    let v = std::env::var(ENV).ok()?;
    // SAFETY: single-threaded start-up.
    crate::sys::remove_env(ENV);
    let Ok(fd) = v.parse::<RawFd>() else {
        return Some(Err(format!("{ENV}={v:?} is not a descriptor")));
    };
    // SAFETY: the descriptor was left open for this image by the one before,
    // and nothing else here holds it (the variable names it, once).
    let fd = match crate::sys::adopt_fd(fd) {
        Ok(fd) => fd,
        Err(e) => {
            let e = std::io::Error::from(e);
            return Some(Err(format!("reading the upgrade record: {e}")));
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::Kind;

    fn sample() -> State {
        State {
            purpose: Purpose::TakeOver,
            from_version: "0.2.0".into(),
            exe: "/usr/sbin/lbaws".into(),
            exe_fd: 13,
            config: Carried {
                path: Some("/etc/lbaws/config.toml".into()),
                text: "[server]\nmax_connections = 8\n".into(),
            },
            previous: Some(Previous {
                exe: 12,
                text: "# the one before\n".into(),
            }),
            fell_back: Some("why".into()),
            filters: vec![u64::MAX, 7],
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
        assert_eq!(s.fds(), vec![5, 7, 8, 9, 6, 3, 4, 10, 11, 12]);
        let empty = State::default();
        assert_eq!(State::decode(&empty.encode()), Ok(empty));
        let check = State {
            purpose: Purpose::Check,
            config: Carried::default(),
            previous: None,
            fell_back: None,
            ..s
        };
        assert_eq!(State::decode(&check.encode()), Ok(check));
    }

    #[test]
    fn bad_records_are_refused() {
        let b = sample().encode();
        for cut in [0, 7, 12, b.len() - 1] {
            assert!(State::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = b.clone();
        other[8] = 99; // another format
        let e = State::decode(&other).unwrap_err();
        assert!(e.contains("cannot take over from this lbaws"), "{e}");
        assert!(e.contains("format 99"), "{e}");
        let mut purpose = b.clone();
        purpose[12] = 7;
        assert!(State::decode(&purpose).is_err());
        let mut longer = b;
        longer.push(0);
        assert!(State::decode(&longer).is_err());
    }
}
