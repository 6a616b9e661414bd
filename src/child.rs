//! What happens in a worker between `fork()` and `_exit()`.
//!
//! Invariant 2: the child closes every descriptor of the supervisor's but the
//! few it is given (its connection, the stop pipe's read end, the park
//! channel, the logs): the listeners, the signalfd, the stop pipe's write
//! end, the channels to the gate and whatever other connection the
//! supervisor held at that moment all go, in a few `close_range` calls. It
//! moves to a process group of its own, ignores the supervisor's signals
//! (a terminal's Ctrl-C or a `systemctl kill` to the whole cgroup is not
//! for it), gives every other signal its default disposition and an empty
//! mask ([`crate::signals::set_up_child`]), serves its
//! one connection, and leaves through `_exit` with a documented code
//! ([`crate::http`]). It never returns into the supervisor's loop, not even
//! on a panic, and runs no exit handlers or destructors of the parent's state
//! (nothing may unlink a Unix socket or flush a buffer that belongs to the
//! supervisor). It keeps the stop pipe's read end, which it watches while
//! idle, and the park channel, on which it may hand its connection back.
//! It also keeps the sandbox's prepared rulesets ([`crate::sandbox`]), and
//! enters its own before it reads a byte of the connection.

use crate::config::Config;
use crate::handoff::{BodySpec, Meta};
use crate::http::{self, worker};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// What a worker gets of the supervisor's descriptors and state.
pub struct Inherited<'a> {
    /// This worker's scoreboard slot.
    pub slot: usize,
    /// The logs' descriptors (`log::descriptors`; -1: none).
    pub logs: [RawFd; 2],
    /// The stop pipe's read end, watched while idle.
    pub stop_reader: BorrowedFd<'a>,
    /// The park channel, when the connection may be handed back while idle.
    pub park: Option<BorrowedFd<'a>>,
    /// The supervisor is stopping: answer with `Connection: close`.
    pub stopping: bool,
}

/// Run a worker for `conn` (and the request the gate kept in a file, head
/// and body, for a `Kind::Bodied` connection); never returns.
pub fn run(
    conn: OwnedFd,
    meta: Meta,
    body: Option<(OwnedFd, BodySpec)>,
    cfg: &Config,
    inherited: Inherited<'_>,
) -> ! {
    const SITE_LOGS: usize = crate::config::MAX_SITE_LOGS;
    let mut keep = [-1; 7 + SITE_LOGS + crate::config::MAX_CGI_ROUTES];
    keep[..6].copy_from_slice(&[
        conn.as_raw_fd(),
        inherited.stop_reader.as_raw_fd(),
        inherited.park.map_or(-1, |p| p.as_raw_fd()),
        inherited.logs[0],
        inherited.logs[1],
        body.as_ref().map_or(-1, |(f, _)| f.as_raw_fd()),
    ]);
    crate::log::site_descriptors(&mut keep[6..6 + SITE_LOGS]);
    crate::sandbox::keep(&mut keep[6 + SITE_LOGS..]);
    crate::sys::close_all_but(&mut keep);
    if crate::signals::set_up_child().is_err() {
        crate::sys::exit_now(http::EXIT_OSERR);
    }
    // From here on, allocations come from a fresh arena, not from the
    // supervisor's (copy-on-write) heap.
    crate::alloc::enter_worker();
    crate::scoreboard::enter(inherited.slot);
    // Its own Landlock domain and seccomp filter (prepared by the
    // supervisor; two system calls here), before it reads a byte.
    if crate::sandbox::enter_worker().is_err() {
        crate::sys::exit_now(http::EXIT_OSERR);
    }
    // Borrowed from the supervisor's descriptors, which this copy of it
    // keeps (above) and never closes: it leaves through _exit.
    let ctx = worker::Ctx {
        stop: Some(inherited.stop_reader),
        park: inherited.park,
        served: meta.served,
        stopping: inherited.stopping,
        prepared: body,
    };
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker::serve(&conn, meta.peer, cfg, ctx)
    }))
    .unwrap_or(http::EXIT_SOFTWARE);
    drop(conn);
    // `_exit(2)`: no atexit handlers, no destructors of inherited state.
    crate::sys::exit_now(code)
}
