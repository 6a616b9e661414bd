//! What happens in a worker between `fork()` and `_exit()`.
//!
//! Invariant 2: the child closes every descriptor of the supervisor's that it
//! does not need (the listeners and the signalfd), gives every signal its
//! default disposition and an empty mask, serves its one connection, and
//! leaves through `_exit` with a documented code ([`crate::http`]). It never
//! returns into the supervisor's loop, not even on a panic, and runs no exit
//! handlers or destructors of the parent's state (nothing may unlink a Unix
//! socket or flush a buffer that belongs to the supervisor).

use crate::config::Config;
use crate::http::{self, worker};
use crate::listen::{Listener, Peer};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Run a worker for `conn`; never returns.
pub fn run(conn: OwnedFd, peer: Peer, cfg: &Config, listeners: &[Listener], signal_fd: RawFd) -> ! {
    for l in listeners {
        // SAFETY: the child's copies; the supervisor keeps its own.
        unsafe { libc::close(l.fd.as_raw_fd()) };
    }
    unsafe { libc::close(signal_fd) };
    if crate::signals::reset_in_child().is_err() {
        exit(http::EXIT_OSERR);
    }
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker::serve(&conn, peer, cfg)
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
