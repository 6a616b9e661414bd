//! The worker's side of one connection: a read buffer with deadlines, writes
//! that never raise SIGPIPE, `sendfile`, and the graceful close.
//!
//! Every wait has a deadline, so a slow or silent client costs a worker at
//! most the configured timeout:
//! - reads wait in `poll` with the time left;
//! - writes block in the kernel for at most `listen::SEND_TICK` at a time
//!   (the socket's `SO_SNDTIMEO`) and then check the response's [`Progress`]:
//!   no byte taken for `body_timeout`, or an average below `min_send_rate`,
//!   ends the connection (logged);
//! - the wait for the next keep-alive request is one blocking `recv` of at
//!   most `park_after` (`SO_RCVTIMEO`), after which the connection is parked.
//!
//! While idle between requests without a park channel the worker also
//! watches the supervisor's *stop pipe*: the supervisor closes its end when
//! it begins a graceful stop, the read end then reports a hang-up, and idle
//! keep-alive workers close at once instead of holding the stop up. No
//! signal handler is involved (invariant 1).

use crate::listen::Peer;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, shutdown, MsgFlags, Shutdown};
use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// What a client must keep up: some byte at least every `stall`, and `rate`
/// bytes a second on average (0: no minimum).
///
/// The average is kept as a credit of time, `stall` long at the start: each
/// byte earns `1/rate` s of it, up to `stall` ahead of now, and the client is
/// too slow when the credit runs out. So a client that keeps the rate on
/// average over any window of `stall` never runs out, a burst cannot buy
/// more than `stall` of silence, and one that trickles below the rate is
/// ended after about `stall` (Apache's `mod_reqtimeout` `MinRate` works
/// alike).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub stall: Duration,
    pub rate: u64,
}

/// Why a client was too slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slow {
    /// Nothing moved for `stall`.
    Stalled,
    /// Moving, but below the minimum rate (bytes per second observed).
    BelowRate(u64),
}

/// A transfer's progress against its [`Pace`].
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pace: Pace,
    started: Instant,
    last: Instant,
    credit_until: Instant,
    bytes: u64,
}

impl Progress {
    pub fn start(pace: Pace, now: Instant) -> Progress {
        Progress {
            pace,
            started: now,
            last: now,
            credit_until: now + pace.stall,
            bytes: 0,
        }
    }

    pub fn moved(&mut self, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        self.last = now;
        self.bytes += n as u64;
        if self.pace.rate > 0 {
            let earned = Duration::from_secs_f64(n as f64 / self.pace.rate as f64);
            self.credit_until = (self.credit_until + earned).min(now + self.pace.stall);
        }
    }

    /// When the client is too slow unless more moves before.
    pub fn deadline(&self) -> Instant {
        let stall = self.last + self.pace.stall;
        if self.pace.rate > 0 {
            stall.min(self.credit_until)
        } else {
            stall
        }
    }

    /// `None` while the client keeps its pace.
    pub fn verdict(&self, now: Instant) -> Option<Slow> {
        if now < self.deadline() {
            return None;
        }
        if now >= self.last + self.pace.stall {
            return Some(Slow::Stalled);
        }
        let secs = now.duration_since(self.started).as_secs_f64().max(0.001);
        Some(Slow::BelowRate((self.bytes as f64 / secs) as u64))
    }
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ReadErr {
    /// The peer closed or reset the connection.
    Closed,
    Timeout,
    /// The supervisor is stopping (only reported while idle).
    Stopping,
    Io(Errno),
}

pub struct Conn<'a> {
    fd: &'a OwnedFd,
    peer: Peer,
    stop: Option<BorrowedFd<'a>>,
    /// The response being sent, against `[limits] body_timeout` and
    /// `min_send_rate` (see [`Conn::start_response`]).
    send_pace: Pace,
    sending: Cell<Progress>,
    /// The `SO_RCVTIMEO` set on the socket for idle waits, if any.
    idle_timeout: Option<Duration>,
    /// Bytes written on the connection so far.
    written: Cell<u64>,
    /// The current response's status, and where in `written` its body
    /// begins (see [`Conn::mark_head`]).
    head: Cell<Option<(u16, u64)>>,
    /// The current response was cut (its source died or stalled): it ends
    /// short, and the connection closes without a graceful close.
    cut: Cell<bool>,
    buf: Vec<u8>,
    /// Unconsumed data is `buf[start..end]`.
    start: usize,
    end: usize,
    /// The stop pipe has hung up: finish the current request, then close.
    pub stopping: bool,
    /// The gate may finish a file response whose client reads slowly (the
    /// worker has a park channel): `sendfile` then stops after a send that
    /// blocked a whole `SEND_TICK` and leaves the rest in `tail`.
    pub tail_ok: Cell<bool>,
    /// What `sendfile` left for the gate: the file, where to go on, and how
    /// much is left.
    tail: std::cell::RefCell<Option<(OwnedFd, i64, u64)>>,
}

/// The most one `sendfile` call is asked to send.
const SENDFILE_CHUNK: u64 = 512 << 10;

/// The read buffer's first size; it grows (up to the head limit) as needed.
const READ_CHUNK: usize = 2048;

impl<'a> Conn<'a> {
    pub fn new(
        fd: &'a OwnedFd,
        peer: Peer,
        stop: Option<BorrowedFd<'a>>,
        send_pace: Pace,
    ) -> Conn<'a> {
        Conn {
            fd,
            peer,
            stop,
            send_pace,
            sending: Cell::new(Progress::start(send_pace, Instant::now())),
            idle_timeout: None,
            written: Cell::new(0),
            head: Cell::new(None),
            cut: Cell::new(false),
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            end: 0,
            stopping: false,
            tail_ok: Cell::new(false),
            tail: std::cell::RefCell::new(None),
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.buf.clear();
        }
    }

    /// Wait until the connection is readable (or has buffered data). While
    /// idle, a stop of the supervisor ends the wait.
    pub fn wait_readable(&mut self, deadline: Instant, idle: bool) -> Result<(), ReadErr> {
        if self.start < self.end {
            return Ok(());
        }
        self.poll_in(deadline, idle)
    }

    /// Wait for the socket itself to become readable.
    fn poll_in(&mut self, deadline: Instant, idle: bool) -> Result<(), ReadErr> {
        loop {
            let ms = millis_until(deadline).ok_or(ReadErr::Timeout)?;
            let mut fds = [
                PollFd::new(self.fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.stop.unwrap_or(self.fd.as_fd()), PollFlags::POLLIN),
            ];
            let n = if self.stop.is_some() && !self.stopping {
                2
            } else {
                1
            };
            match poll(&mut fds[..n], ms) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ReadErr::Io(e)),
            }
            if n == 2 && fds[1].revents().is_some_and(|r| !r.is_empty()) {
                self.stopping = true;
                if idle
                    && !fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLIN))
                {
                    return Err(ReadErr::Stopping);
                }
            }
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                return Ok(());
            }
        }
    }

    /// Read more bytes (appending to the buffer, which may grow to `max`).
    /// Returns how many arrived; `Err(Closed)` on EOF.
    ///
    /// The buffer is never zero-filled: received bytes are the only ones
    /// written, so a worker dirties (copies) only the pages data lands in.
    pub fn fill(&mut self, deadline: Instant, max: usize) -> Result<usize, ReadErr> {
        if self.end == self.buf.capacity() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.buf.truncate(self.end);
                self.start = 0;
            } else if self.buf.capacity() < max {
                let want = (self.buf.capacity() * 2).min(max.max(READ_CHUNK));
                self.buf.reserve_exact(want - self.buf.len());
            }
        }
        if self.buf.capacity() == self.end {
            return Ok(0); // full: the caller's limit decides
        }
        loop {
            // Try first: the data is usually there already, and a poll saved
            // is a system call saved on every request.
            match self.recv_nowait()? {
                0 => self.poll_in(deadline, false)?,
                n => return Ok(n),
            }
        }
    }

    /// Wait for the next request for at most `t` in one blocking `recv`
    /// (the socket's `SO_RCVTIMEO`, set on first use); zero does not wait.
    /// `Err(Timeout)` when nothing came.
    pub fn recv_idle(&mut self, t: Duration) -> Result<usize, ReadErr> {
        let flags = if t.is_zero() {
            libc::MSG_DONTWAIT
        } else {
            if self.idle_timeout != Some(t) {
                crate::sys::set_timeout(self.fd.as_fd(), false, t).map_err(ReadErr::Io)?;
                self.idle_timeout = Some(t);
            }
            0
        };
        if self.buf.capacity() == self.end {
            self.buf.reserve(READ_CHUNK);
        }
        match self.recv_once(flags)? {
            0 => Err(ReadErr::Timeout),
            n => Ok(n),
        }
    }

    /// Bytes that came on this connection before this process had it (a
    /// request head the gate kept in a file): read first.
    pub fn preload(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Whatever has arrived, without waiting: `Ok(0)` if nothing has.
    pub fn read_available(&mut self) -> Result<usize, ReadErr> {
        if self.buf.capacity() == self.end {
            self.buf.reserve(READ_CHUNK);
        }
        self.recv_nowait()
    }

    fn recv_nowait(&mut self) -> Result<usize, ReadErr> {
        self.recv_once(libc::MSG_DONTWAIT)
    }

    /// One `recv` into the buffer's spare capacity: how many bytes came;
    /// `Ok(0)` when none did (nothing there without waiting, or the socket's
    /// `SO_RCVTIMEO` passed); `Err(Closed)` at the end of the stream.
    fn recv_once(&mut self, flags: libc::c_int) -> Result<usize, ReadErr> {
        loop {
            // `buf` holds exactly the bytes up to `end`: the new ones follow.
            match crate::sys::recv_append(self.fd.as_raw_fd(), &mut self.buf, flags) {
                Ok(0) => return Err(ReadErr::Closed),
                Ok(n) => {
                    self.end += n;
                    crate::scoreboard::progress();
                    crate::scoreboard::bytes_in(n);
                    return Ok(n);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(0),
                Err(Errno::ECONNRESET) => return Err(ReadErr::Closed),
                Err(e) => return Err(ReadErr::Io(e)),
            }
        }
    }

    /// A response begins: its sending is timed from now (an idle keep-alive
    /// wait before it does not count against the client).
    pub fn start_response(&self) {
        crate::scoreboard::progress();
        self.sending
            .set(Progress::start(self.send_pace, Instant::now()));
        self.head.set(None);
        self.cut.set(false);
    }

    /// The current response is cut: it must not look complete (see
    /// `worker.rs`, which logs it so and closes without a graceful close).
    pub fn cut(&self) {
        self.cut.set(true);
    }

    pub fn is_cut(&self) -> bool {
        self.cut.get()
    }

    /// The connection's descriptor (for socket options).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A response head of `len` bytes with `status` is about to be written:
    /// what is written after it is the body (for the access log of a
    /// response the client did not wait for).
    pub fn mark_head(&self, status: u16, len: usize) {
        self.head
            .set(Some((status, self.written.get() + len as u64)));
        crate::scoreboard::response_head(status, len);
    }

    /// The status and body bytes of a response cut short, if its head was
    /// on its way.
    pub fn cut_short(&self) -> Option<(u16, u64)> {
        let (status, body_from) = self.head.get()?;
        Some((status, self.written.get().saturating_sub(body_from)))
    }

    /// After a send returned (some bytes taken, or `SO_SNDTIMEO` passed with
    /// none): account for it, and end the response if the client is too slow.
    fn sent(&self, n: usize) -> Result<(), Errno> {
        if n > 0 {
            crate::scoreboard::progress();
        }
        let now = Instant::now();
        let mut p = self.sending.get();
        p.moved(n, now);
        self.sending.set(p);
        match p.verdict(now) {
            None => Ok(()),
            Some(Slow::Stalled) => {
                crate::info!(
                    "{}: response stalled for {:?} (body_timeout): closing",
                    self.peer,
                    self.send_pace.stall
                );
                Err(Errno::ETIMEDOUT)
            }
            Some(Slow::BelowRate(r)) => {
                crate::info!(
                    "{}: reading the response at {r} B/s, below min_send_rate {}: closing",
                    self.peer,
                    self.send_pace.rate
                );
                Err(Errno::ETIMEDOUT)
            }
        }
    }

    /// Write all of `data`; `more` tells the kernel a body follows at once
    /// (`MSG_MORE`), so head and body leave in full packets.
    pub fn write_all(&self, mut data: &[u8], more: bool) -> Result<(), Errno> {
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if more {
            flags |= MsgFlags::from_bits_retain(libc::MSG_MORE);
        }
        while !data.is_empty() {
            match send(self.fd.as_raw_fd(), data, flags) {
                Ok(n) => {
                    self.written.set(self.written.get() + n as u64);
                    crate::scoreboard::bytes_out(n);
                    data = &data[n..];
                    if !data.is_empty() {
                        self.sent(n)?;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => self.sent(0)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Send `len` bytes of `file` from `offset` with sendfile(2): the file's
    /// pages go to the socket without passing through the worker's memory.
    /// Send `len` bytes of `file` from `offset`. With `tail_ok`, a client
    /// that takes less than a piece in a `SEND_TICK` (the send blocked that
    /// long) leaves the rest to the gate: `Err(EINPROGRESS)`, and
    /// [`take_tail`](Self::take_tail) has it.
    pub fn sendfile(&self, file: &OwnedFd, mut offset: i64, mut len: u64) -> Result<(), Errno> {
        while len > 0 {
            // In pieces, so that a client reading slowly but steadily comes
            // back here to be measured (a blocked send only returns by itself
            // when nothing at all moved for a SEND_TICK).
            let chunk = len.min(SENDFILE_CHUNK) as usize;
            let slow = match nix::sys::sendfile::sendfile64(self.fd, file, Some(&mut offset), chunk)
            {
                Ok(0) => return Err(Errno::EIO), // the file shrank under us
                Ok(n) => {
                    self.written.set(self.written.get() + n as u64);
                    crate::scoreboard::bytes_out(n);
                    len -= n as u64;
                    if len > 0 {
                        self.sent(n)?;
                    }
                    n < chunk
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    self.sent(0)?;
                    true
                }
                Err(e) => return Err(e),
            };
            if slow && len > 0 && self.tail_ok.get() {
                if let Ok(f) = file.try_clone() {
                    *self.tail.borrow_mut() = Some((f, offset, len));
                    return Err(Errno::EINPROGRESS);
                }
            }
        }
        Ok(())
    }

    /// What `sendfile` left for the gate, if it did.
    pub fn take_tail(&self) -> Option<(OwnedFd, i64, u64)> {
        self.tail.borrow_mut().take()
    }

    /// The response's status and the body bytes it sent so far.
    pub fn response_so_far(&self) -> Option<(u16, u64)> {
        self.cut_short()
    }

    /// Close gracefully: half-close, then read and drop what the client still
    /// sends for a moment, so the kernel does not answer unread data with a
    /// reset that could destroy the response before the client reads it.
    pub fn close_gracefully(&mut self) {
        crate::scoreboard::set_state(crate::scoreboard::State::Closing);
        let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Write);
        let until = Instant::now() + Duration::from_secs(2);
        let mut total = self.end - self.start;
        self.start = 0;
        self.end = 0;
        self.buf.clear();
        let mut sink = [0u8; 1024];
        while total < (1 << 20) {
            let Some(ms) = millis_until(until) else {
                return;
            };
            let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut pfd, ms) {
                Ok(0) => return,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
            match recv(self.fd.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return,
                Ok(n) => total += n,
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                Err(_) => return,
            }
        }
    }

    /// Whether unread request bytes are waiting in the kernel (without
    /// blocking). The client's end of stream is not: a connection it has
    /// already closed needs no graceful close.
    pub fn has_pending_input(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::uninit()];
        self.start < self.end
            || matches!(
                crate::sys::peek(self.fd.as_raw_fd(), &mut byte),
                Ok([_, ..])
            )
    }
}

/// Time left until `deadline` for poll, rounded up; `None` once it has passed.
pub(super) fn millis_until(deadline: Instant) -> Option<PollTimeout> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    Some(PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX))
}
