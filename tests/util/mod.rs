//! Test harness: runs the real `lbaws` binary in a fresh temporary directory,
//! collects its log, and dumps everything it knows when a test fails.
//!
//! Nothing here sleeps as synchronisation: every wait polls a condition
//! against a deadline and fails with the daemon's log when it runs out.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lbaws");
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `cond` until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// For a test this machine cannot run (no root, no IPv6, a program
/// missing): under CI (`CI=true`) that is a failure, since CI must run every
/// test (`scripts/test` installs what they need, and CI runs as root);
/// elsewhere the test says "skipped" and why, on the terminal (past the test
/// harness's capture), and the caller returns.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}: no test may be skipped in CI (CI=true)");
    }
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr().lock(), "test {name}: skipped: {why}");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running lbaws and its temporary directory.
pub struct Daemon {
    pub child: Child,
    pub pid: i32,
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<String>>,
    /// The log pipe is at its end: everything lbaws (and every process that
    /// shared its stderr) wrote is in `logs`.
    log_ended: Arc<std::sync::atomic::AtomicBool>,
    exited: Option<ExitStatus>,
}

pub struct Builder {
    config: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    nofile: Option<u64>,
    nproc: Option<u64>,
    wrapper: Vec<String>,
    wait_ready: bool,
    binary: Option<PathBuf>,
    dirs: Vec<String>,
    listener: Option<std::net::TcpListener>,
    setup: Vec<Setup>,
}

/// A step run on the temp dir before lbaws starts ([`Builder::setup`]).
type Setup = Box<dyn FnOnce(&Path)>;

impl Builder {
    /// Run `f` on the temp dir before lbaws starts (after `dirs`): files,
    /// symlinks its configuration must find at start.
    pub fn setup(mut self, f: impl FnOnce(&Path) + 'static) -> Self {
        self.setup.push(Box::new(f));
        self
    }
    /// Make these directories in the temp dir before lbaws starts (paths
    /// its sandbox must find at start).
    pub fn dirs(mut self, names: &[&str]) -> Self {
        self.dirs.extend(names.iter().map(|s| s.to_string()));
        self
    }
    /// Run this file instead of the built binary (a copy, for upgrades).
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_path_buf());
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }
    pub fn nproc(mut self, n: u64) -> Self {
        self.nproc = Some(n);
        self
    }
    /// Pass this listening socket to lbaws (or to the wrapper) as systemd
    /// would (see [`with_listener`]); the test knows its port before lbaws
    /// starts, and no other program can take it.
    pub fn listener(mut self, l: std::net::TcpListener) -> Self {
        self.listener = Some(l);
        self
    }
    /// Run lbaws under another program, e.g. `systemd-socket-activate --fdname=web`.
    pub fn wrapper(mut self, w: &[&str]) -> Self {
        self.wrapper = w.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Write the config (with `{dir}` replaced by the temp dir) and start lbaws.
    pub fn start(self) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("lbaws-test-")
            .tempdir()
            .unwrap();
        for d in &self.dirs {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for f in self.setup {
            f(dir.path());
        }
        if !self.dirs.is_empty() {
            // Reachable by a supervisor that dropped root for another user.
            use std::os::unix::fs::PermissionsExt;
            let open = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(dir.path(), open).unwrap();
        }
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            self.config.replace("{dir}", dir.path().to_str().unwrap()),
        )
        .unwrap();
        let bin = self.binary.clone().unwrap_or_else(|| PathBuf::from(BIN));
        let (program, args) = match self.wrapper.split_first() {
            None => (bin.clone().into_os_string(), Vec::new()),
            Some((w, rest)) => {
                let mut args: Vec<std::ffi::OsString> = rest.iter().map(Into::into).collect();
                args.push(bin.clone().into_os_string());
                (w.into(), args)
            }
        };
        let mut cmd = match &self.listener {
            Some(l) => with_listener(&program, l),
            None => Command::new(&program),
        };
        cmd.args(&args);
        cmd.arg("--config").arg(&cfg).args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v.replace("{dir}", dir.path().to_str().unwrap()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.process_group(0);
        let (nofile, nproc) = (self.nofile, self.nproc);
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(n) = nofile {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    libc::setrlimit(libc::RLIMIT_NOFILE, &r);
                }
                if let Some(n) = nproc {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    libc::setrlimit(libc::RLIMIT_NPROC, &r);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn lbaws");
        // lbaws (or its wrapper) has its own copy of a passed listener now.
        drop(self.listener);
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let log_ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ended = log_ended.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let pid = child.id() as i32;
        let mut d = Daemon {
            child,
            pid,
            dir,
            logs,
            log_ended,
            exited: None,
        };
        if self.wait_ready {
            d.wait_log("info: ready:");
        }
        d
    }
}

impl Daemon {
    pub fn with_config(config: &str) -> Builder {
        Builder {
            config: config.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            nofile: None,
            nproc: None,
            wrapper: Vec::new(),
            wait_ready: true,
            binary: None,
            dirs: Vec::new(),
            listener: None,
            setup: Vec::new(),
        }
    }

    /// A daemon with one listener on an ephemeral loopback port and a fixed body.
    pub fn hello(extra: &str) -> Daemon {
        Daemon::with_config(&format!("{extra}\n{}", hello_routes())).start()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// True once the log pipe is at its end (lbaws exited, and so did every
    /// process that shared its stderr): nothing more will come.
    fn log_ended(&self) -> bool {
        self.log_ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait for a log line containing `needle`; panics with the log if none
    /// comes (lbaws's lines are read from a pipe by a thread: a line written
    /// just before lbaws exited may still be on its way when the exit is
    /// seen, so it is the pipe's end that says none will come).
    pub fn wait_log(&mut self, needle: &str) {
        let logs = self.logs.clone();
        let found = wait_for(DEADLINE, || {
            logs.lock().unwrap().contains(needle) || self.log_ended()
        });
        if !found || !self.logs().contains(needle) {
            panic!(
                "no log line with {needle:?}; exit: {:?}; log:\n{}",
                self.exited,
                self.logs()
            );
        }
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.logs().matches(needle).count()
    }

    /// The listening addresses lbaws logged, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.logs()
            .lines()
            .filter_map(|l| l.split("listening on ").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect()
    }

    pub fn addr(&self) -> SocketAddr {
        *self
            .addrs()
            .last()
            .unwrap_or_else(|| panic!("no TCP listener in log:\n{}", self.logs()))
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig).unwrap();
    }

    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited.is_some()
    }

    pub fn alive(&mut self) -> bool {
        !self.has_exited()
    }

    /// Wait for the process to exit, and for the rest of its log (the pipe's
    /// end), so that the log is whole afterwards; panics with the log if it
    /// does not exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if !wait_for(timeout, || self.has_exited()) {
            panic!(
                "lbaws did not exit within {timeout:?}; log:\n{}",
                self.logs()
            );
        }
        // A child that outlived it may hold the pipe: then the log is as
        // whole as it gets after this wait.
        wait_for(DEADLINE, || self.log_ended());
        self.exited.unwrap()
    }

    /// The daemon's workers (its children but the gate): (pid, state letter).
    pub fn children(&self) -> Vec<(i32, char)> {
        procs_of(self.pid)
            .into_iter()
            .filter(|p| p.comm != GATE)
            .map(|p| (p.pid, p.state))
            .collect()
    }

    /// The gate process, if it is running.
    pub fn gate(&self) -> Option<i32> {
        procs_of(self.pid)
            .into_iter()
            .find(|p| p.comm == GATE && p.state != 'Z')
            .map(|p| p.pid)
    }

    /// Wait until the gate runs; its pid.
    pub fn wait_gate(&self) -> i32 {
        let mut pid = None;
        if !wait_for(DEADLINE, || {
            pid = self.gate();
            pid.is_some()
        }) {
            panic!("no gate process; log:\n{}", self.logs());
        }
        pid.unwrap()
    }

    pub fn wait_children(&self, n: usize) {
        if !wait_for(DEADLINE, || self.children().len() == n) {
            panic!(
                "expected {n} workers, have {:?}; log:\n{}",
                self.children(),
                self.logs()
            );
        }
    }

    /// Wait until every worker has ended and been reaped (no child but the
    /// gate, and no zombie at all); panics with the children and the log
    /// otherwise.
    pub fn wait_no_workers(&self) {
        let done =
            || self.children().is_empty() && children_of(self.pid).iter().all(|c| c.1 != 'Z');
        if !wait_for(DEADLINE, done) {
            panic!(
                "children left (Z = zombie): {:?}; log:\n{}",
                children_of(self.pid),
                self.logs()
            );
        }
    }

    /// Descriptors the gate holds.
    pub fn gate_fd_count(&self) -> usize {
        let gate = self.wait_gate();
        std::fs::read_dir(format!("/proc/{gate}/fd"))
            .unwrap()
            .count()
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    /// Descriptors of the daemon (fd, flags from fdinfo).
    pub fn fd_flags(&self) -> Vec<(i32, u32)> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(format!("/proc/{}/fdinfo", self.pid)).unwrap() {
            let e = e.unwrap();
            let fd: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            let info = std::fs::read_to_string(e.path()).unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap_or(0);
            v.push((fd, flags));
        }
        v
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.has_exited() {
            // The whole process group (the daemon, a wrapper), and its
            // children: the gate and the workers have process groups of
            // their own (a CGI script dies with its worker).
            let children = procs_of(self.pid);
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            for c in children {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- lbaws log (pid {}, dir {}) ----\n{}",
                self.pid,
                self.dir.path().display(),
                self.logs()
            );
            eprintln!(
                "---- config ----\n{}",
                std::fs::read_to_string(self.path("config.toml")).unwrap_or_default()
            );
        }
    }
}

pub fn hello_routes() -> &'static str {
    r#"
[[listen]]
address = "127.0.0.1:0"
name = "http"

[[route]]
prefix = "/"
respond = { status = 200, body = "Hello, World!\n", content_type = "text/plain" }
"#
}

/// The gate's process name (`gate::GATE_NAME`).
pub const GATE: &str = "lbaws-gate";

/// Children of `pid` from /proc/*/stat: (pid, state), the gate included.
pub fn children_of(pid: i32) -> Vec<(i32, char)> {
    procs_of(pid)
        .into_iter()
        .map(|p| (p.pid, p.state))
        .collect()
}

pub struct Proc {
    pub pid: i32,
    pub state: char,
    pub comm: String,
}

/// Children of `pid`, with their names.
pub fn procs_of(pid: i32) -> Vec<Proc> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(p) = e.file_name().to_str().unwrap_or("").parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may contain spaces, so split after ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |x| x.1).to_string();
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == pid {
            v.push(Proc {
                pid: p,
                state,
                comm,
            });
        }
    }
    v
}

/// A socket option of another process's descriptor, read from a copy of it
/// (`pidfd_getfd`, Linux 5.6: the daemon is our child, so we may); `None`
/// if it is not a socket.
pub fn sockopt_of(pid: i32, fd: i32, level: i32, opt: i32) -> Option<i32> {
    // SAFETY: plain system calls; the descriptors they return are closed below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        libc::close(pidfd);
        if copy < 0 {
            return None;
        }
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            copy,
            level,
            opt,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        );
        libc::close(copy);
        (rc == 0).then_some(v)
    }
}

/// `TCP_DEFER_ACCEPT` of another process's descriptor.
pub fn defer_accept_of(pid: i32, fd: i32) -> i32 {
    sockopt_of(pid, fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT).expect("a TCP socket")
}

/// The listening sockets among a process's descriptors.
pub fn listening_fds(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| sockopt_of(pid, fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1))
        .collect();
    v.sort();
    v
}

/// The real uid of a process.
pub fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------
// A raw HTTP client

pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Connect from `src`, another loopback address (127.0.0.0/8 all reaches
/// this host), as a different client host would.
pub fn connect_from(src: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrStorage};
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let [a, b, c, d] = src.octets();
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(a, b, c, d, 0),
    )
    .unwrap();
    socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )
    .expect("connect");
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// The n-th of a spread of client source addresses (127.0.1.1, 127.0.1.2,
/// ...), so that many test clients stay under the per-source limit.
pub fn source(n: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8)
}

/// `[limits]` keys that keep an idle keep-alive connection in its worker
/// (parking off: `park_after` not below `keepalive_timeout`), for tests that
/// need a live worker to act on.
pub const NO_PARKING: &str = "park_after = \"60s\"\nkeepalive_timeout = \"60s\"";

/// Read a whole response up to EOF (the server closes; a hang is a failure).
pub fn read_response(s: &mut impl Read) -> Response {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("read to EOF: the server must close after its response");
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// Send raw bytes, read the response to EOF.
pub fn exchange(addr: SocketAddr, req: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(req).unwrap();
    read_response(&mut s)
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `curl -sS -i URL`, the real client.
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Ports. A test never picks a "free" port to hand to a program that binds it
// later: between the two another test (or another program) may take it. A
// port comes either from a socket bound here and handed over already bound
// ([`loopback_listener`], [`Builder::listener`], [`inherit_fds`]), or from
// the program that bound port 0 saying which port it got (lbaws's
// "listening on" line, [`Daemon::addr`]; [`tcp_listen_addrs`] for a daemon
// that logs to syslog).

/// A listening TCP socket on an ephemeral port of 127.0.0.1, bound here.
pub fn loopback_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// Let the program `cmd` runs inherit `fds` under their own numbers, and
/// no other descriptor but 0-2, as systemd passes sockets: in the forked
/// child every descriptor from 3 up is made close-on-exec (what the test
/// process itself inherited without the flag too: a jobserver pipe, a
/// stray /dev/null), then the flag is cleared on `fds`. Done in the child
/// only, so no other program this test process starts meanwhile gets them.
pub fn inherit_fds(cmd: &mut Command, fds: &[std::os::fd::RawFd]) {
    let fds = fds.to_vec();
    // SAFETY: close_range and fcntl are async-signal-safe system calls; the
    // closure touches no memory but `fds`.
    unsafe {
        cmd.pre_exec(move || {
            // Flagged, not closed: the standard library's pipe that reports
            // a failed exec stays open until the exec.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A command that runs `program` with `listener` passed the way systemd
/// passes a socket (sd_listen_fds(3)): as fd 3, with `LISTEN_FDS=1` and
/// `LISTEN_PID` its own pid (`bash` moves the descriptor, sets the pid to
/// its own and execs the program, which keeps it). `program` may be lbaws itself
/// or `systemd-socket-activate`, which takes the socket over and passes it on
/// (its `--fdname` names it). Arguments for `program` go after this.
pub fn with_listener(
    program: impl AsRef<std::ffi::OsStr>,
    listener: &std::net::TcpListener,
) -> Command {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    // bash, not sh: dash takes no descriptor number above 9.
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(
            r#"fd=$1; shift
if [ "$fd" != 3 ]; then exec 3<&"$fd" {fd}<&-; fi
LISTEN_PID=$$ exec "$@""#,
        )
        .arg("bash")
        .arg(fd.to_string())
        .arg(program)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_FDNAMES");
    inherit_fds(&mut cmd, &[fd]);
    cmd
}

/// The TCP addresses a process listens on, read from the kernel
/// (`/proc/PID/fd` and `/proc/PID/net/tcp`), for a daemon whose log the test
/// cannot read (`--daemon` logs to syslog).
pub fn tcp_listen_addrs(pid: i32) -> Vec<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let t = std::fs::read_link(e.path()).ok()?;
            let t = t.to_str()?;
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st ... inode (the 10th field).
            if f.len() < 10 || f[3] != "0A" || !inodes.iter().any(|i| i == f[9]) {
                return None;
            }
            let (ip, port) = f[1].split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // The address is the kernel's u32 in host (little-endian) order.
            Some(SocketAddr::from((ip.to_le_bytes(), port)))
        })
        .collect()
}

/// Wait until the process `pid` listens on a TCP address; that address.
pub fn wait_tcp_listen_addr(pid: i32) -> SocketAddr {
    let mut addrs = Vec::new();
    if !wait_for(DEADLINE, || {
        addrs = tcp_listen_addrs(pid);
        !addrs.is_empty()
    }) {
        panic!("process {pid} listens on no TCP address");
    }
    addrs[0]
}

pub fn write_config(path: &Path, text: &str) {
    // Write and rename, so lbaws never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------
// A keep-alive client: reads exactly one response at a time.

pub struct Client {
    pub reader: std::io::BufReader<TcpStream>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            reader: std::io::BufReader::new(connect(addr)),
        }
    }

    /// A client on another loopback source address (see [`connect_from`]).
    pub fn from(src: std::net::Ipv4Addr, addr: SocketAddr) -> Client {
        Client {
            reader: std::io::BufReader::new(connect_from(src, addr)),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).unwrap();
    }

    /// Read one response; `head_only` for HEAD and 304s (no body whatever the length says).
    pub fn read(&mut self, head_only: bool) -> Response {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("read response head");
            assert!(
                n > 0,
                "connection closed before a response; got so far: {head:?}"
            );
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut r = Response {
            status: head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            head,
            body: Vec::new(),
        };
        if !head_only && r.status != 304 && r.status != 204 && r.status >= 200 {
            let len: usize = r
                .header("content-length")
                .expect("Content-Length")
                .parse()
                .unwrap();
            r.body = vec![0; len];
            self.reader.read_exact(&mut r.body).unwrap();
        }
        r
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.read(false)
    }

    /// True if the server closed the connection (EOF) without sending anything.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// The notification socket a service manager would own.
pub struct Manager {
    pub sock: std::os::unix::net::UnixDatagram,
    pub seen: Vec<String>,
}

impl Manager {
    pub fn bind(path: &std::path::Path) -> Manager {
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Manager {
            sock,
            seen: Vec::new(),
        }
    }

    /// Wait for a datagram containing every one of `keys`; returns it.
    pub fn expect(&mut self, keys: &[&str]) -> String {
        self.until(keys).pop().unwrap()
    }

    /// Wait for a datagram containing every one of `keys`; returns every
    /// datagram not yet looked at, up to and including that one.
    pub fn until(&mut self, keys: &[&str]) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let found = wait_for(DEADLINE, || {
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            self.seen
                .iter()
                .any(|m| keys.iter().all(|k| m.lines().any(|l| l.starts_with(k))))
        });
        assert!(found, "no notification with {keys:?}; got {:?}", self.seen);
        let i = self
            .seen
            .iter()
            .position(|m| keys.iter().all(|k| m.lines().any(|l| l.starts_with(k))))
            .unwrap();
        // Later expectations only look at what came after this one.
        self.seen.drain(..=i).collect()
    }
}

/// `lbaws --daemon --pid-file PID_FILE --config CFG`: the launcher returns
/// at once (successfully), the daemon lives on; its pid (from the pid file,
/// once written) and a guard that SIGKILLs it when dropped.
pub fn start_daemonized(cfg: &Path, pid_file: &Path) -> (i32, KillOnDrop) {
    let out = Command::new(BIN)
        .args(["--daemon", "--pid-file"])
        .arg(pid_file)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(pid_file)
        .is_ok_and(|s| s.trim().parse::<i32>().is_ok())));
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (pid, KillOnDrop(pid))
}

/// SIGKILL to a process when dropped (a daemon a test started).
pub struct KillOnDrop(pub i32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
