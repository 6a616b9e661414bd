//! Response tails sent by the gate, so that a slow reader costs no
//! process: a worker whose client stops taking bytes in the middle of a
//! file (a `sendfile` that blocked for a whole `SEND_TICK`) hands the
//! connection back with the file, where it stands, and what the access line
//! needs (`Kind::Tail`). The gate sends the rest from its event loop
//! (`EPOLLOUT`, `sendfile` on the socket made non-blocking for the while),
//! under the same pace a worker keeps (`body_timeout` without progress,
//! `min_send_rate` on average: then the connection is closed), writes the
//! access line once the response really ends (with the bytes that went out,
//! ` cut` if it did not end), then parks the connection (keep-alive) or
//! closes it gracefully.

use super::*;
use crate::handoff::TailLog;
use crate::http::conn::{Pace, Progress, Slow};

/// The most one `sendfile` is asked to send (as a worker's).
const CHUNK: u64 = 512 << 10;

pub(super) struct Tail {
    file: OwnedFd,
    /// The access line's request parts (`TailLog`), kept to hand back.
    log: OwnedFd,
    /// Where the response stands: `offset`, `length` still to send, `sent`.
    pub(super) spec: BodySpec,
    progress: Progress,
}

impl Tail {
    /// Its files and spec, to hand back at an upgrade.
    pub(super) fn parts(&self) -> (&OwnedFd, &OwnedFd, BodySpec) {
        (&self.file, &self.log, self.spec)
    }
}

impl Gate {
    /// A response the gate finishes: from now on its socket is written
    /// from here.
    pub(super) fn start_tail(&mut self, slot: u32, file: OwnedFd, log: OwnedFd, spec: BodySpec) {
        let pace = Pace {
            stall: self.limits.body_timeout,
            rate: self.limits.min_send_rate,
        };
        let fd = raw(self.held(slot));
        if crate::sys::set_nonblocking(fd, true).is_err() {
            return self.close(slot);
        }
        self.watch(slot, EpollFlags::EPOLLOUT);
        let h = self.held_mut(slot);
        h.state = State::Tail;
        h.tail = Some(Box::new(Tail {
            file,
            log,
            spec,
            progress: Progress::start(pace, Instant::now()),
        }));
        self.push(slot);
    }

    /// Send what the socket takes now.
    pub(super) fn push(&mut self, slot: u32) {
        let fd = raw(self.held(slot));
        let Some(t) = self.held_mut(slot).tail.as_mut() else {
            return;
        };
        let end = loop {
            if t.spec.length == 0 {
                break Some(false);
            }
            let mut offset = t.spec.offset as i64;
            let want = t.spec.length.min(CHUNK) as usize;
            match crate::sys::sendfile(fd, &t.file, &mut offset, want) {
                Ok(0) => break Some(true), // the file shrank under us
                Ok(n) => {
                    t.spec.offset += n as u64;
                    t.spec.length -= n as u64;
                    t.spec.sent += n as u64;
                    t.progress.moved(n, Instant::now());
                    crate::scoreboard::progress();
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break None,
                Err(_) => break Some(true), // the client went away
            }
        };
        match end {
            None => {
                let deadline = t.progress.deadline();
                self.set_deadline(slot, deadline);
            }
            Some(cut) => self.finish_tail(slot, cut),
        }
    }

    /// The response's deadline passed: too slow a reader (closed, its line
    /// written), unless it took bytes no event reported yet.
    pub(super) fn tail_late(&mut self, slot: u32, now: Instant) {
        self.push(slot);
        let late = match self.slots[slot as usize].as_ref() {
            Some(Held {
                state: State::Tail,
                tail: Some(t),
                ..
            }) => t.progress.verdict(now),
            _ => None,
        };
        let Some(why) = late else { return };
        let peer = self.held(slot).meta.peer;
        match why {
            Slow::Stalled => crate::info!(
                "{peer}: response stalled for {:?} (body_timeout): closing",
                self.limits.body_timeout
            ),
            Slow::BelowRate(r) => crate::info!(
                "{peer}: reading the response at {r} B/s, below min_send_rate {}: closing",
                self.limits.min_send_rate
            ),
        }
        self.finish_tail(slot, true);
    }

    /// The response ended (`cut`: short): its access line, then the
    /// connection parks (keep-alive), closes gracefully, or (cut) closes.
    fn finish_tail(&mut self, slot: u32, cut: bool) {
        let Some(t) = self.held_mut(slot).tail.take() else {
            return;
        };
        let peer = self.held(slot).meta.peer;
        log_tail(peer, &t, cut);
        let fd = raw(self.held(slot));
        if cut || crate::sys::set_nonblocking(fd, false).is_err() {
            return self.close(slot);
        }
        if !t.spec.keep_alive {
            self.watch(slot, EpollFlags::empty());
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
            self.held_mut(slot).state = State::Lingering;
            self.set_deadline(slot, Instant::now() + LINGER);
            self.room
                .entered(slot, self.gens[slot as usize], room::Class::Lingering);
            return self.drain(slot);
        }
        // Parked where it is: it waits here for its next request.
        self.watch(slot, EpollFlags::empty());
        let h = self.held_mut(slot);
        h.meta.kind = Kind::Parked;
        h.meta.since_ms = crate::scoreboard::now_ms();
        h.state = State::Waiting;
        h.seen = 0;
        self.set_deadline(slot, Instant::now() + self.limits.idle_timeout);
        self.room
            .entered(slot, self.gens[slot as usize], self.class_of(slot));
        self.out
            .note(self.held(slot).key, Kind::Tail, Note::TailParked);
        self.look(slot, EpollFlags::empty());
    }

    /// Watch the connection for reading, and `more` (`EPOLLOUT` while it
    /// sends).
    fn watch(&mut self, slot: u32, more: EpollFlags) {
        let token = (self.gens[slot as usize] as u64) << 32 | slot as u64;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET | more;
        let h = self.slots[slot as usize].as_ref().expect("live");
        let _ = self.epoll.modify(&h.fd, &mut EpollEvent::new(flags, token));
    }
}

/// The access line of a response the gate finished, in the configured
/// format, where its site's lines go, and its count (in its site's row,
/// with its duration since the request began in the worker).
fn log_tail(peer: crate::listen::Peer, t: &Tail, cut: bool) {
    let mut bytes = vec![0u8; 128 << 10];
    let n = nix::sys::uio::pread(&t.log, &mut bytes, 0).unwrap_or(0);
    let Some([client, method, target, version, referer, agent, host, label, dest, row, began]) =
        TailLog::decode(&bytes[..n])
    else {
        crate::scoreboard::tail_done(0, t.spec.status, t.spec.sent, 0);
        crate::error!("{peer}: the access line of a response the gate finished is unreadable");
        return;
    };
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let took_us = crate::scoreboard::tail_done(
        number(row).unwrap_or(0) as u32,
        t.spec.status,
        t.spec.sent,
        number(began).unwrap_or(0),
    );
    use crate::config::SiteLog;
    let access = match dest {
        b"" => SiteLog::Main,
        b"off" => SiteLog::Off,
        i => number(i).map_or(SiteLog::Main, |i| SiteLog::File(i as usize)),
    };
    let Some(dest) = crate::http::access::dest(Some(access)) else {
        return;
    };
    let entry = crate::http::access::Entry {
        client: &String::from_utf8_lossy(client),
        site: std::str::from_utf8(label).ok(),
        host: (!host.is_empty()).then_some(host),
        request: Some([method, target, version]),
        referer: (!referer.is_empty()).then_some(referer),
        user_agent: (!agent.is_empty()).then_some(agent),
        status: t.spec.status,
        body_bytes: t.spec.sent,
        took_us,
        cut,
    };
    crate::log::access_to(dest, &entry.line());
}
