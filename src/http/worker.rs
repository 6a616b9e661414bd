//! The worker: what a forked child does with its one connection.
//!
//! For now one request per connection (`Connection: close`); persistent
//! connections come with the full HTTP/1.1 worker.

use super::request::{read_head, ReadError};
use super::response::{self, send_all};
use super::{EXIT_IOERR, EXIT_OK};
use crate::config::{Action, Config};
use crate::listen::Peer;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, shutdown, MsgFlags, Shutdown};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Serve the connection; the result is the worker's exit code.
pub fn serve(conn: &OwnedFd, peer: Peer, cfg: &Config) -> i32 {
    let deadline = Instant::now() + cfg.limits.header_timeout;
    let mut buf = Vec::with_capacity(4096);
    let head = match read_head(
        conn,
        &mut buf,
        cfg.limits.max_header_bytes,
        cfg.limits.max_headers,
        deadline,
    ) {
        Ok(h) => h,
        Err(ReadError::Closed { .. }) | Err(ReadError::Timeout { started: false }) => {
            return EXIT_OK
        }
        Err(ReadError::Io(e)) => return io_exit(e),
        Err(e) => {
            let status = match e {
                ReadError::Timeout { .. } => 408,
                ReadError::TooLarge | ReadError::TooManyHeaders => 431,
                ReadError::BadVersion => 505,
                _ => 400,
            };
            crate::debug!("{peer}: bad request: {e:?} -> {status}");
            return finish(conn, &response::error(status, false), true);
        }
    };
    let head_only = head.method == "HEAD";
    let has_body = buf.len() > head.len
        || head.header("transfer-encoding").is_some()
        || head.header("content-length").is_some_and(|v| v != b"0");

    // RFC 9112 3.2: a 1.1 request carries exactly one Host.
    if head.version == 1 && head.count("host") != 1 {
        return finish(conn, &response::error(400, head_only), has_body);
    }
    if !head.target.starts_with('/') {
        return finish(conn, &response::error(400, head_only), has_body);
    }
    let out = match cfg.route(head.path()) {
        Some(route) => match &route.action {
            Action::Respond {
                status,
                body,
                content_type,
            } => response::build(*status, content_type, body.as_bytes(), head_only),
        },
        None => response::error(404, head_only),
    };
    crate::debug!("{peer}: {} {}", head.method, head.target);
    finish(conn, &out, has_body)
}

/// Send the response and close. With request bytes still unread, close
/// gracefully: half-close, then read and drop what the client still sends for
/// a moment, so that the kernel does not answer them with a reset that could
/// destroy the response before the client reads it.
fn finish(conn: &OwnedFd, out: &[u8], unread: bool) -> i32 {
    if let Err(e) = send_all(conn, out) {
        return io_exit(e);
    }
    if unread {
        let _ = shutdown(conn.as_raw_fd(), Shutdown::Write);
        linger(conn, Duration::from_secs(2), 1 << 20);
    }
    EXIT_OK
}

fn linger(conn: &OwnedFd, max_time: Duration, max_bytes: usize) {
    let until = Instant::now() + max_time;
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < max_bytes {
        let now = Instant::now();
        if now >= until {
            return;
        }
        let ms = (until - now).as_millis().clamp(1, 60_000) as u16;
        let mut pfd = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        match poll(&mut pfd, PollTimeout::from(ms)) {
            Ok(0) => return,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
        match recv(conn.as_raw_fd(), &mut sink, MsgFlags::empty()) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// The client going away is a normal end; anything else is an I/O error.
fn io_exit(e: Errno) -> i32 {
    match e {
        Errno::EPIPE | Errno::ECONNRESET | Errno::ETIMEDOUT => EXIT_OK,
        _ => EXIT_IOERR,
    }
}
