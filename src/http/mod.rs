//! The HTTP side: everything a worker does with the connection it owns.
//!
//! `worker` (the keep-alive loop) uses `request` (the head parser), `body`
//! (request bodies), `static_file` (the resolver and file responses) and
//! `response`, and `cgi` (CGI/1.1 scripts), all over `conn` (the socket with its buffer and deadlines).
//!
//! A worker is a forked child that serves exactly one connection and exits
//! (invariant 2). Its exit codes are part of the interface, documented in the
//! README and logged by the supervisor when they are not 0:
//!
//! | code | meaning |
//! |---|---|
//! | 0  | connection served and closed, whatever the client did (bad requests get their 4xx) |
//! | 70 | internal error (a bug: a panic) |
//! | 71 | post-fork set-up failed (signal reset) |
//! | 74 | I/O error on the connection other than the client going away |

pub mod body;
pub mod cgi;
pub mod conn;
pub mod request;
pub mod response;
pub mod static_file;
pub mod worker;

pub const EXIT_OK: i32 = 0;
pub const EXIT_SOFTWARE: i32 = 70;
pub const EXIT_OSERR: i32 = 71;
pub const EXIT_IOERR: i32 = 74;
