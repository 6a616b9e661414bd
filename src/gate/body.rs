//! Request bodies received by the gate, so that a slow body costs no
//! process (nginx's `proxy_request_buffering`, for CGI routes).
//!
//! A worker that reads a head for a route that needs the body (CGI) and
//! finds the body incomplete hands the connection back (`Kind::Body`) with
//! a file: the head, then the body's first bytes as it read them. The gate
//! takes those first bytes back out of the file, decodes them and then
//! what comes off the socket (`Content-Length`, or chunked through the same
//! decoder a worker uses), and writes the body behind the head: in memory
//! up to `cgi_body_in_memory`, then in an unlinked file in `temp_dir` (the
//! worker's spool). It reads exactly the body and nothing after it, so a
//! pipelined request stays on the socket for the next worker.
//!
//! Deadlines are the worker's: `body_timeout` without a byte, or below
//! `min_body_rate` on average, is a 408; more than `max_body_bytes` is a
//! 413, bad chunked framing a 400, a file that cannot be written a 500.
//! Once the body is whole the request waits for a worker like any other
//! (`Kind::Bodied`: the next worker reads head and body from the file).

use super::*;
use crate::handoff::BodySpec;
use crate::http::cgi::spool::{Dir, Spool};
use crate::http::conn::{Pace, Progress};
use lbaws::proto::chunked::{self, Decoder};

/// A request the gate holds the body of.
pub(super) enum Req {
    /// Its body is coming.
    Receiving(Box<Rx>),
    /// Whole: the file holds the head, then the body.
    Complete { file: OwnedFd, spec: BodySpec },
}

pub(super) struct Rx {
    spool: Spool<'static>,
    head_len: u32,
    /// Chunked: the decoder; else `left` bytes are still to come.
    decoder: Option<Decoder>,
    left: u64,
    progress: Progress,
}

/// Where a body stands after a read.
enum Step {
    /// Nothing more to read now.
    More,
    Done,
    /// The client left (or reset) before the end.
    Gone,
    Refuse(u16),
}

impl Gate {
    /// A request whose body is coming, from the worker that read its head:
    /// its first bytes back out of `file`, then what is on the socket.
    pub(super) fn start_body(&mut self, slot: u32, file: OwnedFd, spec: BodySpec) {
        let rx = match self.receiver(file, spec) {
            Ok(rx) => rx,
            Err(status) => return self.refuse_body(slot, status),
        };
        let h = self.held_mut(slot);
        h.state = State::Body;
        h.req = Some(Req::Receiving(Box::new(rx)));
        self.receive(slot, EpollFlags::empty());
    }

    /// The receiver of a body whose first `spec.raw_len` bytes, as they
    /// came, follow the head in `file`.
    fn receiver(&self, file: OwnedFd, spec: BodySpec) -> Result<Rx, u16> {
        let l = &self.limits;
        if !spec.chunked && spec.length > l.max_body_bytes {
            return Err(413);
        }
        let mut first = vec![0u8; spec.raw_len as usize];
        let head = spec.head_len as i64;
        let taken = nix::sys::uio::pread(&file, &mut first, head)
            .and_then(|n| {
                nix::unistd::ftruncate(&file, head)?;
                nix::unistd::lseek(&file, head, nix::unistd::Whence::SeekSet)?;
                Ok(n)
            })
            .map_err(|e| {
                crate::error!("gate: a request body's file: {e}");
                500u16
            })?;
        let dir = self.temp_dir.clone().map(Dir::Fd);
        let pace = Pace {
            stall: l.body_timeout,
            rate: l.min_body_rate,
        };
        let mut rx = Rx {
            // The head counts nowhere against the body's room in memory.
            spool: Spool::resume(file, head as u64, l.body_in_memory + head as u64, dir),
            head_len: spec.head_len,
            decoder: spec.chunked.then(|| Decoder::new(l.max_body_bytes)),
            left: if spec.chunked { 0 } else { spec.length },
            progress: Progress::start(pace, Instant::now()),
        };
        let used = rx.take(&first[..taken])?;
        if used < taken {
            // The worker hands a body over only while it is incomplete.
            crate::error!("gate: a handed-over body ended before its first bytes did");
            return Err(400);
        }
        Ok(rx)
    }

    /// Bytes (or an end) on a connection whose body is coming.
    pub(super) fn receive(&mut self, slot: u32, ev: EpollFlags) {
        let fd = raw(self.held(slot));
        let Some(Req::Receiving(rx)) = self.slots[slot as usize]
            .as_mut()
            .and_then(|h| h.req.as_mut())
        else {
            return;
        };
        let step = loop {
            match rx.read(fd, &mut self.peek) {
                Ok(true) => continue,
                Ok(false) if rx.done() => break Step::Done,
                Ok(false) if hung_up(ev) => break Step::Gone,
                Ok(false) => break Step::More,
                Err(Some(status)) => break Step::Refuse(status),
                Err(None) => break Step::Gone,
            }
        };
        let deadline = rx.progress.deadline();
        match step {
            Step::More => self.set_deadline(slot, deadline),
            Step::Done => self.body_done(slot),
            Step::Gone => self.close(slot),
            Step::Refuse(status) => self.refuse_body(slot, status),
        }
    }

    /// The body's deadline passed: too slow (408), unless bytes came that
    /// no event reported yet.
    pub(super) fn body_late(&mut self, slot: u32, now: Instant) {
        self.receive(slot, EpollFlags::empty());
        let late = match self.slots[slot as usize].as_ref() {
            Some(Held {
                state: State::Body,
                req: Some(Req::Receiving(rx)),
                ..
            }) => rx.progress.verdict(now),
            _ => None, // answered or done meanwhile
        };
        if let Some(why) = late {
            let pace = Pace {
                stall: self.limits.body_timeout,
                rate: self.limits.min_body_rate,
            };
            crate::http::body::log_slow(self.held(slot).meta.peer, why, pace);
            self.refuse_body(slot, 408);
        }
    }

    /// The body is whole: the request waits for a worker.
    fn body_done(&mut self, slot: u32) {
        let h = self.held_mut(slot);
        let Some(Req::Receiving(rx)) = h.req.take() else {
            return;
        };
        let head_len = rx.head_len;
        match rx.spool.finish() {
            Ok((file, len)) => {
                let spec = BodySpec {
                    head_len,
                    raw_len: 0,
                    chunked: false,
                    length: len - head_len as u64,
                    ..Default::default()
                };
                h.req = Some(Req::Complete { file, spec });
                h.meta.kind = Kind::Bodied;
                h.state = State::Waiting;
                self.queue(slot);
            }
            Err(e) => {
                crate::error!("gate: a request body's file: {e}");
                self.refuse_body(slot, 500);
            }
        }
    }

    /// An upgrade in place while a body comes: a `Content-Length` body goes
    /// back with what has come of it (the next gate goes on from there); a
    /// chunked one cannot (the decoder's state would not travel), and is
    /// answered 503 (the client may send it again).
    pub(super) fn hand_back_body(&mut self, slot: u32) {
        let h = self.held_mut(slot);
        let Some(Req::Receiving(rx)) = h.req.take() else {
            return;
        };
        if rx.decoder.is_some() {
            return self.refuse_body(slot, 503);
        }
        let (head_len, left) = (rx.head_len, rx.left);
        match rx.spool.finish() {
            Ok((file, len)) => {
                let have = len - head_len as u64;
                let spec = BodySpec {
                    head_len,
                    raw_len: have as u32,
                    chunked: false,
                    length: have + left,
                    ..Default::default()
                };
                self.held_mut(slot).req = Some(Req::Complete { file, spec });
                self.send_back(slot);
            }
            Err(_) => self.refuse_body(slot, 503),
        }
    }

    /// Answer a request whose body could not be received, and close.
    fn refuse_body(&mut self, slot: u32, status: u16) {
        if let Some(h) = self.slots[slot as usize].as_mut() {
            h.req = None;
        }
        self.answer(slot, status);
    }
}

impl Rx {
    fn done(&self) -> bool {
        match &self.decoder {
            Some(d) => d.done(),
            None => self.left == 0,
        }
    }

    /// Take body bytes as they came (the first ones, from the worker):
    /// returns how many belonged to the body.
    fn take(&mut self, bytes: &[u8]) -> Result<usize, u16> {
        let used = match &mut self.decoder {
            Some(dec) => {
                let mut used = 0;
                while used < bytes.len() && !dec.done() {
                    let (n, data) = dec.feed(&bytes[used..]).map_err(|e| match e {
                        chunked::Error::Bad => 400u16,
                        chunked::Error::TooLarge => 413,
                    })?;
                    if !data.is_empty() && !self.spool.write(data) {
                        return Err(500);
                    }
                    used += n;
                }
                used
            }
            None => {
                let n = (bytes.len() as u64).min(self.left) as usize;
                if !self.spool.write(&bytes[..n]) {
                    return Err(500);
                }
                self.left -= n as u64;
                n
            }
        };
        self.progress.moved(used, Instant::now());
        Ok(used)
    }

    /// One read off the socket, exactly within the body (a request after
    /// it stays there). `Ok(true)`: read something, try again; `Ok(false)`:
    /// nothing now, or the end; `Err(Some(status))`: refused;
    /// `Err(None)`: the client left.
    fn read(&mut self, fd: i32, scratch: &mut [MaybeUninit<u8>]) -> Result<bool, Option<u16>> {
        if self.done() {
            return Ok(false);
        }
        match self.decoder.is_some() {
            // Chunked: look, decode what belongs to the body, take that.
            true => match crate::sys::peek(fd, scratch) {
                Ok([]) => Err(None),
                Ok(bytes) => {
                    let used = self.take(bytes).map_err(Some)?;
                    match crate::sys::discard(fd, &mut scratch[..used]) {
                        Ok(got) if got == used => {
                            crate::scoreboard::bytes_received(got);
                            Ok(true)
                        }
                        _ => Err(None),
                    }
                }
                Err(Errno::EAGAIN) => Ok(false),
                Err(_) => Err(None),
            },
            false => {
                let want = (scratch.len() as u64).min(self.left) as usize;
                match crate::sys::recv_now(fd, &mut scratch[..want]) {
                    Ok([]) => Err(None),
                    Ok(bytes) => {
                        crate::scoreboard::bytes_received(bytes.len());
                        self.take(bytes).map_err(Some)?;
                        Ok(true)
                    }
                    Err(Errno::EAGAIN) => Ok(false),
                    Err(_) => Err(None),
                }
            }
        }
    }
}
