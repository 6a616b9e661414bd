//! The script's process: fork and exec (what it is while it runs, and its
//! end: `running.rs`).
//!
//! The child, between `fork` and `exec`: its own process group;
//! `PR_SET_PDEATHSIG` (a worker killed by anything takes its script along);
//! its cgroup leaf, its user, its user namespace and its route's limits
//! (`crate::sandbox::enter_script`: see `sandbox/limits.rs`), its route's
//! Landlock domain; stdin = the request body, stdout and stderr = pipes to
//! the worker; descriptors 0-2 only (everything else of the worker's is
//! closed, and what the child still holds for the exec itself is
//! close-on-exec); default signal dispositions and an empty mask; the
//! script's directory as working directory, entered from the descriptor
//! `resolve` opened (`fchdir`); last, its memory limit and its route's
//! seccomp filter (`crate::sandbox::seal_script`). Whether `exec` worked
//! comes back on a close-on-exec status pipe: closed by a successful exec,
//! or carrying the errno before the child leaves through `_exit`.
//!
//! What runs is the file that was checked, as far as the kernel allows:
//!
//! - A program the kernel runs by itself (an ELF executable) is exec'd from
//!   the checked descriptor: `execveat(fd, "", AT_EMPTY_PATH)`. Nothing
//!   looks its path up again, so a file swapped in at that path after the
//!   check (a symbolic link out of `dir`, another program) is not what runs.
//!   (On kernels before 6.14, `/proc/PID/comm` of such a program is the
//!   descriptor's number, the name the kernel gives it: `/dev/fd/N`.)
//! - A script with a `#!` line (or a `binfmt_misc` format) cannot run that
//!   way and keep descriptors 0-2 only. The kernel hands the interpreter a
//!   *path* to open, `/dev/fd/N` for a descriptor; the checked descriptor is
//!   close-on-exec, so that path would be gone by the time the interpreter
//!   opens it, and the kernel refuses up front with ENOENT (execveat(2),
//!   BUGS). Left open across the exec instead, the descriptor would stay in
//!   the script and everything it starts, for their whole life, and the
//!   script's `$0` or `__file__` would be `/dev/fd/N` (scripts that find their
//!   own files beside them, like `examples/wsgi/hello.cgi`, would break). So
//!   on ENOENT from the descriptor, the child makes sure the path still names
//!   the checked file (same device and inode, followed as exec follows it)
//!   and execs the path. The race that remains is the interpreter's own:
//!   between that check and the moment the interpreter opens the path, the
//!   path could be made to name another file. Only someone who may write in
//!   the script's directory (or above it) can do that, and such a one can
//!   change the script itself anyway. The same holds for a route's
//!   `interpreters`, which get the script's path as their argument.
//!
//! The worker is a subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant the
//! script detaches (`setsid`, a double fork) comes back to it, and when the
//! request ends the worker ends the script's group and every descendant it
//! adopted (SIGTERM, SIGKILL [`KILL_GRACE`] later) and reaps them all.

pub use super::running::Running;
use crate::config::CgiLimits;
use crate::sandbox::CgroupLeaf;
use crate::sys;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::fstat;
use nix::unistd::{ForkResult, Pid};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// From SIGTERM to SIGKILL for a script that overstays.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// What to exec, and where.
pub struct Program {
    /// The script that was checked, open (close-on-exec).
    pub file: OwnedFd,
    /// Its path (where the kernel or an interpreter must have one).
    pub path: CString,
    /// The interpreter configured for its extension, if any.
    pub interpreter: Option<CString>,
    /// `[interpreter,] path`.
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// The working directory (the script's own), open.
    pub dir: OwnedFd,
    /// Its route's place among the CGI routes: the sandbox it enters.
    pub sandbox: usize,
    /// Its route's limits, and its route's budget of logged stderr.
    pub limits: CgiLimits,
    pub stderr: u64,
    /// Its cgroup leaf, where limits are enforced by cgroup (the leaf
    /// goes with the [`Running`] script; its `cgroup.procs` is joined by
    /// the child).
    pub leaf: Option<(CgroupLeaf, OwnedFd)>,
}

/// Why there is no running script.
#[derive(Debug)]
pub enum SpawnErr {
    /// What failed before the script could start (`pipe`, `fork`: 503).
    Setup(&'static str, Errno),
    /// `exec` failed (500).
    Exec(Errno),
    /// The script's path no longer names the file that was checked (500).
    Replaced,
}

/// What the status pipe carries for [`SpawnErr::Replaced`] (no errno is
/// negative).
const REPLACED: i32 = -1;

/// Fork and exec `p` with `stdin`; `name` names it in the log.
pub fn spawn(mut p: Program, stdin: OwnedFd, name: String) -> Result<Running, SpawnErr> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnErr::Setup("pipe", e));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    // Descendants the script leaves behind (a daemon it starts with setsid)
    // come back to this worker, which ends them with the request.
    sys::become_subreaper();
    let worker = nix::unistd::getpid();
    // SAFETY: the worker is single-threaded; the child only sets up
    // descriptors and execs (or writes errno and _exits).
    let pid = match sys::fork() {
        Ok(ForkResult::Child) => exec_child(worker, [&stdin, &out_w, &err_w], &st_w, &p),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(SpawnErr::Setup("fork", e)),
    };
    drop((stdin, out_w, err_w, st_w));
    let leaf = p.leaf.take().map(|(leaf, _procs)| leaf);
    let mut run = Running::new(pid, name, out_r, err_r, p.limits, p.stderr, leaf);
    // Did exec work? The status pipe closes on exec, or carries errno.
    let mut errno = [0u8; 4];
    let n = read_retry(&st_r, &mut errno);
    drop(st_r);
    if n == 4 {
        run.reap_blocking();
        return Err(match i32::from_ne_bytes(errno) {
            REPLACED => SpawnErr::Replaced,
            e => SpawnErr::Exec(Errno::from_raw(e)),
        });
    }
    Ok(run)
}

/// In the forked child: descriptors 0-2 only, default signals, own process
/// group, the script's directory, exec. Never returns.
fn exec_child(worker: Pid, stdio: [&OwnedFd; 3], status: &OwnedFd, p: &Program) -> ! {
    let fail = |e: i32| -> ! {
        let _ = nix::unistd::write(status, &e.to_ne_bytes());
        // SAFETY: _exit runs nothing of the worker's in this copy of it.
        sys::exit_now(127)
    };
    set_up_child(worker, stdio, status, p).unwrap_or_else(|e| fail(e as i32));
    let e = match &p.interpreter {
        None => {
            match nix::unistd::execveat(&p.file, c"", &p.argv, &p.env, AtFlags::AT_EMPTY_PATH) {
                // A script: the kernel needs a path for its interpreter.
                Err(Errno::ENOENT) => exec_path(&p.path, p),
                Err(e) => e as i32,
                Ok(never) => match never {},
            }
        }
        Some(interpreter) => exec_path(interpreter, p),
    };
    fail(e)
}

/// Exec `program` by its path, once the script's path is checked to name
/// the checked file still: an errno, or [`REPLACED`].
fn exec_path(program: &CStr, p: &Program) -> i32 {
    let same = match (nix::sys::stat::stat(p.path.as_c_str()), fstat(&p.file)) {
        (Ok(now), Ok(checked)) => now.st_dev == checked.st_dev && now.st_ino == checked.st_ino,
        (Err(e), _) | (_, Err(e)) => return e as i32,
    };
    if !same {
        return REPLACED;
    }
    match nix::unistd::execve(program, &p.argv, &p.env) {
        Err(e) => e as i32,
        Ok(never) => match never {},
    }
}

/// Everything between fork and exec but the exec.
fn set_up_child(
    worker: Pid,
    stdio: [&OwnedFd; 3],
    status: &OwnedFd,
    p: &Program,
) -> Result<(), Errno> {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // A worker killed by anything (SIGKILL, the stall backstop, an
    // immediate stop) takes its script along. If it is already gone, go.
    sys::die_with_parent(libc::SIGKILL);
    if nix::unistd::getppid() != worker {
        return Err(Errno::ESRCH);
    }
    // Its cgroup leaf, user, user namespace and limits, and its route's
    // Landlock domain, nested in the worker's (the ruleset and the leaf's
    // cgroup.procs are among the descriptors closed below).
    let leaf = p.leaf.as_ref().map(|(_, procs)| procs);
    crate::sandbox::enter_script(p.sandbox, &p.limits, leaf)?;
    // SAFETY: plain descriptor calls in a single-threaded child; nix's
    // dup2_std* replace only descriptors 0-2, the process's stdio.
    let [stdin, stdout, stderr] = stdio;
    nix::unistd::dup2_stdin(stdin)?;
    nix::unistd::dup2_stdout(stdout)?;
    nix::unistd::dup2_stderr(stderr)?;
    // Everything above 2 goes, except what the exec itself needs, all
    // close-on-exec: the status pipe, the script and its directory.
    sys::close_all_but(&mut [status.as_raw_fd(), p.file.as_raw_fd(), p.dir.as_raw_fd()]);
    if crate::signals::reset_in_child().is_err() {
        return Err(Errno::EINVAL);
    }
    nix::unistd::fchdir(&p.dir)?;
    // Last: its memory limit and its route's seccomp filter.
    crate::sandbox::seal_script(p.sandbox, &p.limits)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    /// A program for `script` as `serve` builds it (no interpreter).
    fn program(script: &std::path::Path, named: &std::path::Path) -> Program {
        let open = |p: &std::path::Path, how: OFlag| {
            nix::fcntl::open(p, how | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).unwrap()
        };
        let path = CString::new(named.as_os_str().as_encoded_bytes()).unwrap();
        Program {
            sandbox: 0,
            limits: CgiLimits::default(),
            stderr: 1 << 14,
            leaf: None,
            file: open(script, OFlag::O_RDONLY),
            argv: vec![path.clone()],
            path,
            interpreter: None,
            env: vec![c"PATH=/usr/bin:/bin".to_owned()],
            dir: open(script.parent().unwrap(), OFlag::O_PATH | OFlag::O_DIRECTORY),
        }
    }

    fn write_script(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn null() -> OwnedFd {
        nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).unwrap()
    }

    #[test]
    fn a_script_runs_by_its_path_only_while_it_names_the_checked_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sh"), dir.path().join("b.sh"));
        write_script(&a, "#!/bin/sh\necho \"ran $0 in $PWD\"\n");
        write_script(&b, "#!/bin/sh\necho other\n");
        // The checked file, by its own path: from the descriptor the kernel
        // refuses (a #! script), by the path it runs, in its directory.
        let mut run = spawn(program(&a, &a), null(), "a".into()).unwrap();
        let mut out = [0u8; 256];
        let n = run.read(&mut out, Instant::now() + Duration::from_secs(10));
        let want = format!("ran {} in {}\n", a.display(), dir.path().display());
        assert_eq!(n.map(|n| &out[..n]), Ok(want.as_bytes()));
        run.finish();
        // The path names another file now: not run.
        let replaced = spawn(program(&a, &b), null(), "a".into());
        assert!(matches!(replaced, Err(SpawnErr::Replaced)));
        // Nor when it names nothing.
        let gone = spawn(program(&a, &dir.path().join("gone")), null(), "a".into());
        assert!(matches!(gone, Err(SpawnErr::Exec(Errno::ENOENT))));
    }
}
