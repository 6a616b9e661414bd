//! CGI/1.1 (RFC 3875): the worker that owns the connection forks and execs the
//! script, so any language runs behind lbaws without an interpreter inside it.
//!
//! ```text
//!   resolve the script (below `dir`, with openat2, or the one `script`)  resolve.rs
//!   -> build the meta-variables from nothing (no environment leaks in)    env.rs
//!   -> its cgroup leaf, where limits are enforced by cgroup
//!      (crate::sandbox)
//!   -> fork: new process group, its limits, user and sandbox, stdin = the
//!      request body, stdout and stderr = pipes, fds 0-2 only, default
//!      signals, cwd = the script's directory -> exec                     process.rs
//!   -> read the CGI header (within `timeout`, whatever the script does
//!      with its stdout: else TERM, KILL, 504), log stderr line by line
//!      (up to the route's `stderr`), parse it (lbaws::proto::cgi_head)   running.rs
//!   -> stream the body: Content-Length when the script gave one, else
//!      chunked on a keep-alive HTTP/1.1 connection, else close-delimited;
//!      cut (never complete-looking) if the script is killed mid-body     response.rs
//!   -> reap the script and end what it left (killed first if the client
//!      went away), log what its limits stopped                          running.rs
//! ```
//!
//! The request body was read by the worker before any of this (the answer
//! depends on it), into a [`spool::Spool`]: in memory up to `[limits]
//! cgi_body_in_memory`, else in an unlinked file in `[server] temp_dir`. The
//! script's stdin is that descriptor, holding exactly `CONTENT_LENGTH`
//! decoded bytes, positioned at 0.
//!
//! Failures: no such script 404, not executable 403, fork failed (or its
//! cgroup leaf could not be made) 503, exec failed 500, exit or crash before
//! a complete header 502 (logged with the status or signal, and the limit
//! behind it where known), a header the parser refuses 502, header timeout
//! 504.

mod env;
mod process;
mod resolve;
mod response;
mod running;
pub mod spool;

use crate::config::{CgiRoute, Config};
use crate::http::conn::Conn;
use crate::http::request::Request;
use crate::http::response::{self as http_response, Face, Persist, Sent};
use crate::listen::Peer;
use crate::sandbox::CgroupLeaf;
use env::cstring;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use process::{Program, SpawnErr};
use std::os::fd::OwnedFd;

/// What the worker does after a CGI request.
pub enum Outcome {
    /// Answered; `close` when the connection cannot carry another request
    /// (close-delimited body, or a script that broke its own framing).
    Sent { sent: Sent, close: bool },
    /// `Location: /local/path` without a status: serve that path instead (GET).
    Redirect(String),
}

/// Everything the script needs to know about the request.
pub struct CgiRequest<'r> {
    pub req: &'r Request,
    pub prefix: &'r str,
    pub peer: Peer,
    /// The decoded request body, positioned at 0, if there was one.
    pub body: Option<(OwnedFd, u64)>,
    /// What the responses carry (the route's fields, the site's pages).
    pub face: Face<'r>,
    /// The request's site.
    pub site: &'r crate::config::Site,
}

/// The name of this worker's scripts' cgroup leaf: its scoreboard slot
/// (the leaf of a killed worker is then reused, not left behind), or its
/// pid (`--inetd`).
fn leaf_name() -> String {
    match crate::scoreboard::my_slot() {
        Some(i) => format!("s{i}"),
        None => format!("p{}", std::process::id()),
    }
}

/// Answer one request with its CGI route.
pub fn serve(
    conn: &Conn<'_>,
    cx: CgiRequest<'_>,
    route: &CgiRoute,
    cfg: &Config,
    persist: Persist,
) -> Result<Outcome, Errno> {
    let req = cx.req;
    let sh = cx.face;
    let refuse = |status: u16| -> Result<Outcome, Errno> {
        let sent = http_response::error(conn, status, sh, req.is_head(), persist)?;
        Ok(Outcome::Sent { sent, close: false })
    };
    let script = match resolve::resolve(route, cx.prefix, &req.path) {
        Ok(s) => s,
        Err(status) => return refuse(status),
    };
    let interpreter =
        resolve::interpreter(route, &script).map(|i| cstring(i.as_os_str().as_encoded_bytes()));
    if interpreter.is_none() && !resolve::executable(&script.file) {
        crate::debug!("cgi {}: not executable", script.path.display());
        return refuse(403);
    }

    let path = cstring(script.path.as_os_str().as_encoded_bytes());
    let argv = interpreter.iter().chain([&path]).cloned().collect();
    let env = env::environment(&cx, &script, route, cfg, conn);
    let name = script.path.display().to_string();
    let nph = script
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("nph-"));
    // Where limits are enforced by cgroup: the script's leaf, made now.
    let leaf = match crate::sandbox::cgroup_dir() {
        None => None,
        Some(dir) => match CgroupLeaf::create(
            &dir,
            &leaf_name(),
            route.limits.processes,
            route.limits.memory,
        ) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                crate::error!("cgi {name}: its cgroup: {e}: not run");
                return refuse(503);
            }
        },
    };
    let program = Program {
        file: script.file,
        path,
        interpreter,
        argv,
        env,
        dir: script.dir,
        sandbox: route.slot,
        limits: route.limits,
        stderr: route.stderr,
        leaf,
    };
    let stdin = match cx.body {
        Some((fd, _)) => fd,
        None => match nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                crate::error!("cgi {name}: /dev/null: {e}");
                return refuse(503);
            }
        },
    };
    let mut run = match process::spawn(program, stdin, name.clone()) {
        Ok(run) => run,
        Err(SpawnErr::Setup(what, e)) => {
            crate::error!("cgi {name}: {what}: {e}");
            return refuse(503);
        }
        Err(SpawnErr::Exec(e)) => {
            crate::error!("cgi {name}: exec: {e}");
            return refuse(500);
        }
        Err(SpawnErr::Replaced) => {
            crate::error!("cgi {name}: replaced between its check and its exec: not run");
            return refuse(500);
        }
    };

    let result = if nph {
        response::pass_raw(conn, &mut run, cfg)
    } else {
        response::respond(conn, &mut run, req, route, cfg, sh, persist)
    };
    if result.is_err() {
        // The client went away (or the socket failed): the script goes too.
        run.kill(Signal::SIGKILL);
    }
    run.finish();
    result
}
