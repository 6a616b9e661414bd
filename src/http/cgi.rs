//! CGI/1.1 (RFC 3875): the worker that owns the connection forks and execs the
//! script, so any language runs behind lbaws without an interpreter inside it.
//!
//! ```text
//!   resolve the script (below `dir`, with openat2, or the one `script`)
//!   -> build the meta-variables from nothing (no environment leaks in)
//!   -> fork: new process group, stdin = the request body (a memfd holding
//!      exactly CONTENT_LENGTH decoded bytes), stdout and stderr = pipes,
//!      fds 0-2 only, default signals, cwd = the script's directory -> exec
//!   -> read the CGI header (within `timeout`: else TERM, KILL, 504), log
//!      stderr line by line, parse Status/Content-Type/Location
//!   -> stream the body: Content-Length when the script gave one, else chunked
//!      on a keep-alive HTTP/1.1 connection, else close-delimited
//!   -> reap the script (killed first if the client went away)
//! ```
//!
//! Failures: no such script 404, not executable 403, exec failed 500, exit or
//! crash before a complete header 502 (logged with the status or signal),
//! malformed header 502, header timeout 504.

use super::conn::Conn;
use super::request::Request;
use super::response::{self, Head, Persist, Sent};
use super::static_file::open_beneath;
use crate::config::{CgiRoute, CgiTarget, Config};
use crate::listen::Peer;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::stat::{fstat, SFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// From SIGTERM to SIGKILL for a script that overstays.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Largest CGI response header accepted.
const MAX_CGI_HEADER: usize = 64 << 10;

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
}

struct Script {
    /// The file to run (absolute).
    path: PathBuf,
    script_name: String,
    path_info: Option<String>,
}

pub fn serve(
    conn: &Conn<'_>,
    cx: CgiRequest<'_>,
    route: &CgiRoute,
    cfg: &Config,
    persist: Persist,
) -> Result<Outcome, Errno> {
    let req = cx.req;
    let sh = cfg.server.server_header;
    let refuse = |status: u16| -> Result<Outcome, Errno> {
        let sent = response::error(conn, status, sh, req.is_head(), persist)?;
        Ok(Outcome::Sent { sent, close: false })
    };
    let script = match resolve(route, cx.prefix, &req.path) {
        Ok(s) => s,
        Err(status) => return refuse(status),
    };
    let interpreter = route
        .interpreters
        .iter()
        .find(|(ext, _)| {
            script
                .path
                .to_str()
                .is_some_and(|p| p.ends_with(ext.as_str()))
        })
        .map(|(_, i)| i.clone());
    if interpreter.is_none()
        && nix::unistd::access(&script.path, nix::unistd::AccessFlags::X_OK).is_err()
    {
        crate::debug!("cgi {}: not executable", script.path.display());
        return refuse(403);
    }

    let env = environment(&cx, &script, route, cfg, conn);
    let mut argv: Vec<CString> = Vec::new();
    if let Some(i) = &interpreter {
        argv.push(cstring(i.as_os_str().as_encoded_bytes()));
    }
    argv.push(cstring(script.path.as_os_str().as_encoded_bytes()));
    let program = argv[0].clone();
    let workdir = script.path.parent().unwrap_or(Path::new("/")).to_path_buf();

    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (st_r, st_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let stdin = match cx.body {
        Some((fd, _)) => fd,
        None => nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?,
    };

    // Descendants the script leaves behind (a daemon it starts with setsid)
    // come back to this worker, which ends them with the request.
    crate::sys::become_subreaper();
    let worker = nix::unistd::getpid();
    // SAFETY: the worker is single-threaded; the child only sets up
    // descriptors and execs (or writes errno and _exits).
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => exec_child(
            worker, &stdin, &out_w, &err_w, &st_w, &workdir, &program, &argv, &env,
        ),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            crate::error!("cgi {}: fork: {e}", script.path.display());
            return refuse(503);
        }
    };
    drop((stdin, out_w, err_w, st_w));

    let mut run = Running {
        pid: child,
        name: script.path.display().to_string(),
        err: err_r,
        err_buf: Vec::new(),
        err_open: true,
        reaped: None,
    };
    // Did exec work? The status pipe closes on exec, or carries errno.
    let mut errno = [0u8; 4];
    let n = read_retry(&st_r, &mut errno);
    drop(st_r);
    if n == 4 {
        run.reap_blocking();
        crate::error!(
            "cgi {}: exec: {}",
            run.name,
            Errno::from_raw(i32::from_ne_bytes(errno))
        );
        return refuse(500);
    }

    let nph = script
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("nph-"));
    let result = if nph {
        pass_raw(conn, &mut run, &out_r, cfg)
    } else {
        respond(conn, &mut run, &out_r, req, route, cfg, persist)
    };
    if result.is_err() {
        // The client went away (or the socket failed): the script goes too.
        run.kill(Signal::SIGKILL);
    }
    drop(out_r);
    run.finish();
    result
}

/// Find the script and split the path into SCRIPT_NAME and PATH_INFO.
fn resolve(route: &CgiRoute, prefix: &str, path: &str) -> Result<Script, u16> {
    let below = &path[prefix.len().min(path.len())..];
    match &route.target {
        CgiTarget::Script(file) => {
            // "/app" serves "/app" and "/app/..." but not "/apps".
            if !below.is_empty() && !below.starts_with('/') && !prefix.ends_with('/') {
                return Err(404);
            }
            let rest = below.trim_start_matches('/');
            let script_name = prefix.trim_end_matches('/').to_string();
            let path_info = (!rest.is_empty() || below.starts_with('/') || prefix.ends_with('/'))
                .then(|| format!("/{rest}"));
            Ok(Script {
                path: file.clone(),
                script_name,
                path_info,
            })
        }
        CgiTarget::Dir(dir) => {
            let comps: Vec<&str> = below.split('/').filter(|c| !c.is_empty()).collect();
            if comps.is_empty() {
                return Err(403);
            }
            if comps.iter().any(|c| c.starts_with('.')) {
                return Err(403);
            }
            let root = nix::fcntl::open(
                dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| {
                crate::error!("cgi dir {}: {e}", dir.display());
                404u16
            })?;
            for i in 1..=comps.len() {
                let rel = comps[..i].join("/");
                let fd = match open_beneath(&root, &rel) {
                    Ok(fd) => fd,
                    Err(Errno::EACCES) | Err(Errno::EPERM) => return Err(403),
                    Err(_) => return Err(404),
                };
                let st = fstat(&fd).map_err(|_| 404u16)?;
                match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                    SFlag::S_IFDIR => continue,
                    SFlag::S_IFREG => {
                        let rest = comps[i..].join("/");
                        let path_info = (!rest.is_empty()).then(|| {
                            let slash = if path.ends_with('/') { "/" } else { "" };
                            format!("/{rest}{slash}")
                        });
                        let base = prefix.trim_end_matches('/');
                        return Ok(Script {
                            path: dir.join(&rel),
                            script_name: format!("{base}/{rel}"),
                            path_info,
                        });
                    }
                    _ => return Err(403),
                }
            }
            Err(403) // a directory
        }
    }
}

fn cstring(b: &[u8]) -> CString {
    CString::new(b.iter().copied().filter(|&c| c != 0).collect::<Vec<u8>>()).unwrap_or_default()
}

/// The meta-variables (RFC 3875 4.1), built from nothing.
fn environment(
    cx: &CgiRequest<'_>,
    script: &Script,
    route: &CgiRoute,
    cfg: &Config,
    conn: &Conn<'_>,
) -> Vec<CString> {
    let req = cx.req;
    let mut env: Vec<(String, Vec<u8>)> = Vec::new();
    let mut set = |k: &str, v: &[u8]| env.push((k.to_string(), v.to_vec()));
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set(
        "SERVER_SOFTWARE",
        concat!("lbaws/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    set(
        "SERVER_PROTOCOL",
        format!("HTTP/1.{}", req.version).as_bytes(),
    );
    set("REQUEST_METHOD", req.method.as_bytes());
    set("REQUEST_URI", req.target.as_bytes());
    set(
        "QUERY_STRING",
        req.query.as_deref().unwrap_or("").as_bytes(),
    );
    set("SCRIPT_NAME", script.script_name.as_bytes());
    set(
        "SCRIPT_FILENAME",
        script.path.as_os_str().as_encoded_bytes(),
    );
    let docroot = document_root(cfg, route);
    set("DOCUMENT_ROOT", docroot.as_os_str().as_encoded_bytes());
    if let Some(pi) = &script.path_info {
        set("PATH_INFO", pi.as_bytes());
        let translated = format!("{}{pi}", docroot.display());
        set("PATH_TRANSLATED", translated.as_bytes());
    }
    let local = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(conn.raw_fd())
        .ok()
        .map(|sa| Peer::from_storage(&sa));
    let (local_ip, local_port) = match local {
        Some(Peer::Inet(a)) => (a.ip().to_canonical().to_string(), a.port().to_string()),
        _ => ("localhost".to_string(), "0".to_string()),
    };
    let server_name = match &req.host {
        Some(h) if h.starts_with('[') => h
            .split(']')
            .next()
            .map(|s| format!("{s}]"))
            .unwrap_or_default(),
        Some(h) => h
            .rsplit_once(':')
            .map_or(h.as_str(), |(n, _)| n)
            .to_string(),
        None => local_ip,
    };
    set("SERVER_NAME", server_name.as_bytes());
    set("SERVER_PORT", local_port.as_bytes());
    match cx.peer {
        Peer::Inet(a) => {
            set("REMOTE_ADDR", a.ip().to_canonical().to_string().as_bytes());
            set("REMOTE_PORT", a.port().to_string().as_bytes());
        }
        Peer::Unix => set("REMOTE_ADDR", b"127.0.0.1"),
    }
    if let Some(ct) = req.header("content-type") {
        set("CONTENT_TYPE", ct);
    }
    if let Some((_, len)) = &cx.body {
        set("CONTENT_LENGTH", len.to_string().as_bytes());
    }
    // HTTP_* for every request header but those RFC 3875 or safety exclude.
    const SKIP: [&str; 10] = [
        "proxy", // httpoxy: HTTP_PROXY would be taken for the proxy setting
        "content-type",
        "content-length",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    ];
    let mut http: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in &req.headers {
        if SKIP.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            continue;
        }
        let key: String = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue; // a name that cannot be a variable
        }
        match http.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                let sep: &[u8] = if key == "HTTP_COOKIE" { b"; " } else { b", " };
                v.extend_from_slice(sep);
                v.extend_from_slice(value);
            }
            None => http.push((key, value.clone())),
        }
    }
    env.extend(http);
    if !route.env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), b"/usr/local/bin:/usr/bin:/bin".to_vec()));
    }
    for (k, v) in &route.env {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.as_bytes().to_vec()));
    }
    env.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_bytes();
            kv.push(b'=');
            kv.extend_from_slice(&v);
            cstring(&kv)
        })
        .collect()
}

/// DOCUMENT_ROOT: the root of the static route serving "/", if there is one,
/// else the CGI directory (or the script's directory).
fn document_root(cfg: &Config, route: &CgiRoute) -> PathBuf {
    if let Some(crate::config::Route {
        action: crate::config::Action::Static(st),
        ..
    }) = cfg.route("/")
    {
        return st.root.clone();
    }
    match &route.target {
        CgiTarget::Dir(d) => d.clone(),
        CgiTarget::Script(s) => s.parent().unwrap_or(Path::new("/")).to_path_buf(),
    }
}

/// In the forked child: descriptors 0-2 only, default signals, own process
/// group, the script's directory, exec. Never returns.
#[allow(clippy::too_many_arguments)]
fn exec_child(
    worker: Pid,
    stdin: &OwnedFd,
    out: &OwnedFd,
    err: &OwnedFd,
    status: &OwnedFd,
    dir: &Path,
    program: &CString,
    argv: &[CString],
    env: &[CString],
) -> ! {
    let fail = |e: Errno| -> ! {
        let _ = nix::unistd::write(status, &(e as i32).to_ne_bytes());
        // SAFETY: _exit runs nothing of the worker's in this copy of it.
        unsafe { libc::_exit(127) }
    };
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // A worker killed by anything (SIGKILL, the stall backstop, an
    // immediate stop) takes its script along. If it is already gone, go.
    crate::sys::die_with_parent(libc::SIGKILL);
    if nix::unistd::getppid() != worker {
        fail(Errno::ESRCH);
    }
    // SAFETY: plain descriptor calls in a single-threaded child.
    unsafe {
        if libc::dup2(stdin.as_raw_fd(), 0) < 0
            || libc::dup2(out.as_raw_fd(), 1) < 0
            || libc::dup2(err.as_raw_fd(), 2) < 0
        {
            fail(Errno::last());
        }
        // Everything above 2 goes, except the status pipe (close-on-exec).
        let s = status.as_raw_fd() as libc::c_uint;
        if s > 3 {
            libc::close_range(3, s - 1, 0);
        }
        libc::close_range(s + 1, libc::c_uint::MAX, 0);
    }
    if crate::signals::reset_in_child().is_err() {
        fail(Errno::EINVAL);
    }
    // The descriptor limit lbaws was started with, not the one it raised
    // for itself (programs that loop up to it, or use select, expect 1024).
    crate::sys::restore_nofile();
    if let Err(e) = nix::unistd::chdir(dir) {
        fail(e);
    }
    match nix::unistd::execve(program, argv, env) {
        Err(e) => fail(e),
        Ok(never) => match never {},
    }
}

fn read_retry(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    got
}

/// The running script: its pid, and its stderr being logged line by line.
struct Running {
    pid: Pid,
    name: String,
    err: OwnedFd,
    err_buf: Vec<u8>,
    err_open: bool,
    reaped: Option<WaitStatus>,
}

impl Running {
    /// Wait until stdout is readable (or the deadline), logging stderr meanwhile.
    /// Returns false on timeout.
    fn wait_out(&mut self, out: &OwnedFd, deadline: Instant) -> bool {
        loop {
            let Some(ms) = super::conn::millis_until(deadline) else {
                return false;
            };
            let mut fds = [
                PollFd::new(out.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.err.as_fd(), PollFlags::POLLIN),
            ];
            let n = if self.err_open { 2 } else { 1 };
            match poll(&mut fds[..n], ms) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => return true,
            }
            let err_ready = n == 2 && fds[1].revents().is_some_and(|r| !r.is_empty());
            let out_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            if err_ready {
                self.read_stderr();
            }
            if out_ready {
                return true;
            }
        }
    }

    fn read_stderr(&mut self) {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&self.err, &mut buf) {
            Ok(0) | Err(_) => {
                self.err_open = false;
                self.flush_stderr(true);
            }
            Ok(n) => {
                self.err_buf.extend_from_slice(&buf[..n]);
                self.flush_stderr(false);
            }
        }
    }

    /// One log line per line the script wrote to stderr.
    fn flush_stderr(&mut self, all: bool) {
        while let Some(nl) = self.err_buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.err_buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            crate::warn!(
                "cgi {}[{}]: {}",
                self.name,
                self.pid,
                text.trim_end_matches('\r')
            );
        }
        if (all && !self.err_buf.is_empty()) || self.err_buf.len() > 4096 {
            let text = String::from_utf8_lossy(&self.err_buf).into_owned();
            crate::warn!("cgi {}[{}]: {}", self.name, self.pid, text);
            self.err_buf.clear();
        }
    }

    fn kill(&self, sig: Signal) {
        if self.reaped.is_none() {
            let _ = killpg(self.pid, sig);
        }
    }

    fn try_reap(&mut self) -> bool {
        if self.reaped.is_some() {
            return true;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(s) => {
                self.reaped = Some(s);
                true
            }
            Err(Errno::EINTR) => false,
            Err(_) => {
                self.reaped = Some(WaitStatus::StillAlive);
                true
            }
        }
    }

    fn reap_blocking(&mut self) {
        while self.reaped.is_none() {
            match waitpid(self.pid, None) {
                Ok(s) => self.reaped = Some(s),
                Err(Errno::EINTR) => continue,
                Err(_) => self.reaped = Some(WaitStatus::StillAlive),
            }
        }
    }

    /// TERM the script's group, then KILL after a grace period; reap it
    /// and every descendant it left.
    fn terminate(&mut self) {
        self.kill(Signal::SIGTERM);
        let until = Instant::now() + KILL_GRACE;
        while !self.try_reap() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill(Signal::SIGKILL);
        self.reap_blocking();
        end_descendants();
    }

    /// At the end: drain stderr, reap (killing the group if it lingers), and
    /// log an abnormal end.
    fn finish(&mut self) {
        let until = Instant::now() + KILL_GRACE;
        while self.err_open && Instant::now() < until {
            let mut fds = [PollFd::new(self.err.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) => {
                    if self.try_reap() {
                        break;
                    }
                }
                Ok(_) => self.read_stderr(),
                Err(_) => break,
            }
        }
        self.flush_stderr(true);
        while !self.try_reap() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.reaped.is_none() {
            self.kill(Signal::SIGKILL);
            self.reap_blocking();
        }
        // Whatever it left in its group goes too, and whatever it left
        // anywhere else: detached descendants came back to this worker.
        let _ = killpg(self.pid, Signal::SIGKILL);
        end_descendants();
        match self.reaped {
            Some(WaitStatus::Exited(_, 0)) | None => {}
            Some(WaitStatus::Exited(_, code)) => {
                crate::warn!("cgi {}[{}]: exited with code {code}", self.name, self.pid)
            }
            Some(WaitStatus::Signaled(_, sig, _)) => {
                crate::warn!("cgi {}[{}]: killed by {sig}", self.name, self.pid)
            }
            Some(_) => {}
        }
    }

    fn describe_end(&mut self) -> String {
        self.reap_blocking();
        match self.reaped {
            Some(WaitStatus::Exited(_, code)) => format!("exited with code {code}"),
            Some(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
            _ => "ended".into(),
        }
    }
}

/// End what a script left behind: this worker is a subreaper, so every
/// descendant that outlived its parent is now a child of the worker (which
/// has no other). SIGTERM to each and its group, SIGKILL to what is left
/// after the grace, and reap them all; again, until none is left (an ended
/// descendant's own children come back too).
fn end_descendants() {
    let mut pids = [0 as libc::pid_t; 64];
    for _ in 0..8 {
        let n = crate::sys::children(&mut pids);
        if n == 0 {
            break;
        }
        for &p in &pids[..n] {
            let pid = Pid::from_raw(p);
            let _ = killpg(pid, Signal::SIGTERM);
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        }
        let until = Instant::now() + KILL_GRACE;
        while Instant::now() < until {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break, // ECHILD: none left
            }
        }
        for &p in &pids[..n] {
            let pid = Pid::from_raw(p);
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            // Dying now: wait for it (an error means it was reaped above).
            let _ = waitpid(pid, None);
        }
    }
}

/// Read from the script's stdout with `deadline`; `Ok(0)` is EOF, `Err(())` a timeout.
fn read_out(
    run: &mut Running,
    out: &OwnedFd,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ()> {
    loop {
        if !run.wait_out(out, deadline) {
            return Err(());
        }
        match nix::unistd::read(out, buf) {
            Ok(n) => {
                crate::scoreboard::progress();
                return Ok(n);
            }
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(_) => return Ok(0),
        }
    }
}

/// A parsed CGI response header.
struct CgiHead {
    status: Option<u16>,
    content_type: Option<String>,
    location: Option<String>,
    content_length: Option<u64>,
    other: Vec<(String, String)>,
}

fn parse_head(raw: &[u8]) -> Option<CgiHead> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut h = CgiHead {
        status: None,
        content_type: None,
        location: None,
        content_length: None,
        other: Vec::new(),
    };
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
        {
            return None;
        }
        let value = value.trim();
        if value.bytes().any(|b| b < 0x20 && b != b'\t') {
            return None;
        }
        match name.to_ascii_lowercase().as_str() {
            "status" => {
                let code = value.split(' ').next()?;
                if code.len() != 3 {
                    return None;
                }
                let n: u16 = code.parse().ok()?;
                if !(100..=999).contains(&n) {
                    return None;
                }
                h.status = Some(n);
            }
            "content-type" => h.content_type = Some(value.to_string()),
            "location" => h.location = Some(value.to_string()),
            "content-length" => h.content_length = Some(value.parse().ok()?),
            // Framing and connection management are the server's.
            "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
            | "date" | "server" => {}
            _ => h.other.push((name.to_string(), value.to_string())),
        }
    }
    Some(h)
}

/// Read the header, answer, stream the body.
fn respond(
    conn: &Conn<'_>,
    run: &mut Running,
    out: &OwnedFd,
    req: &Request,
    route: &CgiRoute,
    cfg: &Config,
    persist: Persist,
) -> Result<Outcome, Errno> {
    let sh = cfg.server.server_header;
    let deadline = Instant::now() + route.timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    let (head_end, body_start) = loop {
        if let Some(p) = find_blank_line(&buf) {
            break p;
        }
        if buf.len() > MAX_CGI_HEADER {
            crate::error!("cgi {}[{}]: response header too large", run.name, run.pid);
            run.terminate();
            return bad_gateway(conn, req, sh, persist, 502);
        }
        match read_out(run, out, &mut chunk, deadline) {
            Ok(0) => {
                let how = run.describe_end();
                crate::error!(
                    "cgi {}[{}]: {how} before a complete response header",
                    run.name,
                    run.pid
                );
                return bad_gateway(conn, req, sh, persist, 502);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(()) => {
                crate::error!(
                    "cgi {}[{}]: no response header within {:?}; terminating it",
                    run.name,
                    run.pid,
                    route.timeout
                );
                run.terminate();
                return bad_gateway(conn, req, sh, persist, 504);
            }
        }
    };
    let Some(head) = parse_head(&buf[..head_end]) else {
        crate::error!("cgi {}[{}]: malformed response header", run.name, run.pid);
        run.terminate();
        return bad_gateway(conn, req, sh, persist, 502);
    };
    let leftover = buf[body_start..].to_vec();

    // Local redirect: the server fetches that path instead (RFC 3875 6.2.2).
    if let (Some(loc), None) = (&head.location, head.status) {
        if loc.starts_with('/') {
            drain(run, out, deadline);
            return Ok(Outcome::Redirect(loc.clone()));
        }
    }
    let status = head
        .status
        .unwrap_or(if head.location.is_some() { 302 } else { 200 });
    let bodyless_status = status == 204 || status == 304 || status < 200;
    if head.content_type.is_none()
        && head.location.is_none()
        && !bodyless_status
        && head.status.is_none()
    {
        crate::error!(
            "cgi {}[{}]: response header without Content-Type, Location or Status",
            run.name,
            run.pid
        );
        run.terminate();
        return bad_gateway(conn, req, sh, persist, 502);
    }

    let mut h = Head::new(status, sh);
    if let Some(ct) = &head.content_type {
        h.header("Content-Type", ct);
    }
    if let Some(loc) = &head.location {
        h.header("Location", loc);
    }
    for (k, v) in &head.other {
        h.header(k, v);
    }
    let head_only = req.is_head() || bodyless_status;
    // Framing: the script's length, else chunked on a persistent 1.1
    // connection, else close-delimited.
    enum Framing {
        Length(u64),
        Chunked,
        Close,
    }
    let framing = match (head.content_length, persist) {
        (Some(n), _) => Framing::Length(n),
        (None, Persist::KeepAlive { http10: false }) if !head_only => Framing::Chunked,
        (None, Persist::KeepAlive { .. }) if head_only => Framing::Length(0),
        _ => Framing::Close,
    };
    let persist_now = if matches!(framing, Framing::Close) {
        Persist::Close
    } else {
        persist
    };
    let head_bytes = match framing {
        Framing::Length(n) => h.finish(
            if head_only && head.content_length.is_none() {
                None
            } else {
                Some(n)
            },
            persist_now,
        ),
        Framing::Chunked => {
            h.header("Transfer-Encoding", "chunked");
            h.finish(None, persist_now)
        }
        Framing::Close => h.finish(None, Persist::Close),
    };
    conn.mark_head(status, head_bytes.len());
    conn.write_all(&head_bytes, !head_only)?;

    // The body, as it comes.
    let mut sent: u64 = 0;
    let mut broken = false;
    let mut pending = leftover;
    loop {
        if !pending.is_empty() && !head_only {
            let data: &[u8] = match framing {
                Framing::Length(n) => {
                    &pending[..(n.saturating_sub(sent) as usize).min(pending.len())]
                }
                _ => &pending,
            };
            if !data.is_empty() {
                match framing {
                    Framing::Chunked => {
                        let mut frame = Vec::with_capacity(data.len() + 16);
                        let _ = write!(frame, "{:x}\r\n", data.len());
                        frame.extend_from_slice(data);
                        frame.extend_from_slice(b"\r\n");
                        conn.write_all(&frame, false)?;
                    }
                    _ => conn.write_all(data, false)?,
                }
                sent += data.len() as u64;
            }
        }
        pending.clear();
        let stall = Instant::now() + cfg.limits.body_timeout.max(route.timeout);
        match read_out(run, out, &mut chunk, stall) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(()) => {
                crate::error!(
                    "cgi {}[{}]: response body stalled; terminating it",
                    run.name,
                    run.pid
                );
                run.terminate();
                broken = true;
                break;
            }
        }
    }
    match framing {
        Framing::Chunked if !broken => conn.write_all(b"0\r\n\r\n", false)?,
        Framing::Length(n) if !head_only && sent < n => {
            crate::warn!(
                "cgi {}[{}]: sent {sent} of its Content-Length {n}",
                run.name,
                run.pid
            );
            broken = true;
        }
        _ => {}
    }
    let close = broken || matches!(framing, Framing::Close);
    Ok(Outcome::Sent {
        sent: Sent {
            status,
            body_bytes: if head_only { 0 } else { sent },
        },
        close,
    })
}

/// The end of the header: a blank line (LF or CRLF line ends, RFC 3875 6.2).
/// Returns (header length, body start).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let line_start = i;
        let line = &buf[line_start..nl];
        if line.is_empty() || line == b"\r" {
            return Some((line_start, nl + 1));
        }
        i = nl + 1;
    }
    None
}

/// Read and drop what the script still writes (before an internal redirect).
fn drain(run: &mut Running, out: &OwnedFd, deadline: Instant) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = read_out(run, out, &mut chunk, deadline) {
        if n == 0 {
            return;
        }
    }
    run.terminate();
}

fn bad_gateway(
    conn: &Conn<'_>,
    req: &Request,
    sh: bool,
    persist: Persist,
    status: u16,
) -> Result<Outcome, Errno> {
    let sent = response::error(conn, status, sh, req.is_head(), persist)?;
    Ok(Outcome::Sent { sent, close: false })
}

/// `nph-` scripts write the whole response themselves; it goes out as is and
/// the connection closes after it.
fn pass_raw(
    conn: &Conn<'_>,
    run: &mut Running,
    out: &OwnedFd,
    cfg: &Config,
) -> Result<Outcome, Errno> {
    let mut chunk = [0u8; 16384];
    let mut sent = 0u64;
    let mut status = 200;
    let mut first = true;
    loop {
        let stall = Instant::now() + cfg.limits.body_timeout;
        match read_out(run, out, &mut chunk, stall) {
            Ok(0) => break,
            Ok(n) => {
                if first {
                    status = std::str::from_utf8(&chunk[..n.min(12)])
                        .ok()
                        .and_then(|s| s.split(' ').nth(1))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(200);
                    first = false;
                }
                conn.write_all(&chunk[..n], false)?;
                sent += n as u64;
            }
            Err(()) => {
                run.terminate();
                break;
            }
        }
    }
    Ok(Outcome::Sent {
        sent: Sent {
            status,
            body_bytes: sent,
        },
        close: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_heads() {
        let h = parse_head(b"Status: 404 Nope\r\nContent-Type: text/plain\r\nX-A: b\r\n").unwrap();
        assert_eq!(
            (h.status, h.content_type.as_deref()),
            (Some(404), Some("text/plain"))
        );
        assert_eq!(h.other, vec![("X-A".to_string(), "b".to_string())]);
        assert!(parse_head(b"Content-Type text/plain\n").is_none());
        assert!(parse_head(b"Status: abc\n").is_none());
        assert_eq!(find_blank_line(b"A: b\nC: d\n\nbody"), Some((10, 11)));
        assert_eq!(find_blank_line(b"A: b\r\n\r\nbody"), Some((6, 8)));
        assert_eq!(find_blank_line(b"A: b\r\n"), None);
    }
}
