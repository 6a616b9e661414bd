//! The HTTP side: everything a worker does with the connection it owns.
//!
//! `worker` (the keep-alive loop, waiting and parking) uses `request` (the
//! head parser), `body` (request bodies), `dispatch` (a route's action:
//! `static_file`, `cgi`, `status`, fixed responses and redirects, over
//! `response`) and
//! `access` (the log line), all over `conn` (the socket with its buffer,
//! deadlines and the client's pace).
//!
//! A worker is a forked child that serves exactly one connection and exits
//! (invariant 2). Its exit codes are part of the interface, documented in
//! lbaws(8) and logged by the supervisor when they are not 0:
//!
//! | code | meaning |
//! |---|---|
//! | 0  | connection served and closed, whatever the client did (bad requests get their 4xx) |
//! | 70 | internal error (a bug: a panic) |
//! | 71 | post-fork set-up failed (signal reset) |
//! | 74 | I/O error on the connection other than the client going away |

pub mod access;
pub mod body;
pub mod cgi;
pub mod conn;
pub mod dispatch;
pub mod error_page;
pub mod procfs;
pub mod request;
pub mod response;
pub mod static_file;
pub mod status;
pub mod worker;

pub const EXIT_OK: i32 = 0;
pub const EXIT_SOFTWARE: i32 = 70;
pub const EXIT_OSERR: i32 = 71;
pub const EXIT_IOERR: i32 = 74;

/// Run, once in the supervisor, what would otherwise be done again in every
/// worker: the CPU feature detection behind httparse's SIMD parser is cached
/// in a static on first use, and a forked child inherits the cache (the check
/// costs several microseconds, more under a hypervisor that traps cpuid).
pub fn warm_up(cfg: &crate::config::Config) {
    let _ = request::parse(
        b"GET /warm-up HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
        &cfg.limits,
    );
}
