//! What happens in a worker between `fork()` and `_exit()`.
//!
//! Invariant 2: the child closes every descriptor of the supervisor's that it
//! does not need (the listeners, the signalfd, the stop pipe's write end), gives every signal its
//! default disposition and an empty mask, serves its one connection, and
//! leaves through `_exit` with a documented code ([`crate::http`]). It never
//! returns into the supervisor's loop, not even on a panic, and runs no exit
//! handlers or destructors of the parent's state (nothing may unlink a Unix
//! socket or flush a buffer that belongs to the supervisor).

use crate::config::Config;
use crate::http::{self, worker};
use crate::listen::{Listener, Peer};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The supervisor's descriptors a worker must not keep.
pub struct Inherited<'a> {
    pub listeners: &'a [Listener],
    pub signal_fd: RawFd,
    /// The write end of the stop pipe: a worker holding it would keep the pipe
    /// from ever reporting the supervisor's stop.
    pub stop_writer: Option<RawFd>,
    /// The read end, which the worker watches while idle.
    pub stop_reader: RawFd,
}

/// Run a worker for `conn`; never returns.
pub fn run(conn: OwnedFd, peer: Peer, cfg: &Config, inherited: Inherited<'_>) -> ! {
    for l in inherited.listeners {
        // SAFETY: the child's copies; the supervisor keeps its own.
        unsafe { libc::close(l.fd.as_raw_fd()) };
    }
    unsafe { libc::close(inherited.signal_fd) };
    if let Some(w) = inherited.stop_writer {
        unsafe { libc::close(w) };
    }
    // SAFETY: the read end stays open for the whole life of this process.
    let stop = unsafe { std::os::fd::BorrowedFd::borrow_raw(inherited.stop_reader) };
    if crate::signals::reset_in_child().is_err() {
        exit(http::EXIT_OSERR);
    }
    // From here on, allocations come from a fresh arena, not from the
    // supervisor's (copy-on-write) heap.
    crate::alloc::enter_worker();
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker::serve(&conn, peer, cfg, Some(stop))
    }))
    .unwrap_or(http::EXIT_SOFTWARE);
    drop(conn);
    exit(code)
}

/// `_exit(2)`: no atexit handlers, no destructors of inherited state.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}
