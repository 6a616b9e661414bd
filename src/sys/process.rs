//! The process itself: `fork` and the environment, which Rust calls
//! `unsafe` because they are sound only in a single-threaded process;
//! `_exit`; its resource limits, its name, its clocks, what happens to it
//! when its parent ends, and its children.
//!
//! lbaws never starts a thread: the supervisor, the gate, every worker and
//! every CGI child is a single-threaded process (a forked copy of a
//! threaded one would be unsafe, and no async runtime is used). That is
//! what makes [`fork`], [`set_env`] and [`remove_env`] safe to call here.
//! The unit tests are the exception: they run on the test harness's
//! threads, so a test that forks lets its child do no more than system
//! calls and [`exit_now`] or an exec, and none changes the environment.

use nix::unistd::ForkResult;
use std::ffi::OsStr;
use std::time::Duration;

/// `fork(2)`: the child is a copy of this process, its only thread the one
/// that called, and continues with `Ok(ForkResult::Child)`; the parent gets
/// the child's pid.
///
/// Safe to call (`nix::unistd::fork` is `unsafe`) because lbaws's processes
/// are single-threaded (see the module's doc): no other thread can hold a
/// lock (the allocator's, stdio's) that the child would wait on forever, so
/// the child is a complete copy that may run any code. The child must
/// leave through [`exit_now`] or an exec, never by returning into its
/// parent's loop; that is its caller's to keep (`child.rs`, `gate/mod.rs`).
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: single-threaded process, as documented above.
    unsafe { nix::unistd::fork() }
}

/// `_exit(2)`: the process ends at once with `code`: no atexit handlers, no
/// destructors, nothing flushed. How a forked child leaves, so that nothing
/// of its parent's state (a buffer, a Unix socket to unlink) is acted on
/// twice.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Set an environment variable (`std::env::set_var`).
///
/// Safe to call (`std::env::set_var` is `unsafe`) because lbaws's processes
/// are single-threaded (see the module's doc): no other thread reads the
/// environment while it changes.
pub fn set_env(key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) {
    // SAFETY: single-threaded process: no other thread reads the environment.
    unsafe { std::env::set_var(key, value) }
}

/// Remove an environment variable (`std::env::remove_var`); safe for the
/// same reason as [`set_env`].
pub fn remove_env(key: impl AsRef<OsStr>) {
    // SAFETY: single-threaded process: no other thread reads the environment.
    unsafe { std::env::remove_var(key) }
}

/// `RLIMIT_NOFILE`: (soft, hard).
pub fn nofile() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 1024))
}

/// Raise the soft `RLIMIT_NOFILE` to the hard one; returns the new soft limit.
/// (A CGI script gets its route's `open_files` instead.)
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{setrlimit, Resource};
    let (soft, hard) = nofile();
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// This process gets `sig` when its parent ends (`PR_SET_PDEATHSIG`).
pub fn die_with_parent(sig: libc::c_int) {
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
}

/// Orphaned descendants of this process are reparented to it rather than
/// to init (`PR_SET_CHILD_SUBREAPER`), so it can end and reap them.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
}

/// The pids of this process's children (`/proc/thread-self/children`; the
/// process is single-threaded), into `out`, at most `out.len()`; how many.
/// 0 where /proc cannot tell.
pub fn children(out: &mut [libc::pid_t]) -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/children") else {
        return 0;
    };
    let mut n = 0;
    for pid in text.split_ascii_whitespace().filter_map(|p| p.parse().ok()) {
        if n == out.len() {
            break;
        }
        out[n] = pid;
        n += 1;
    }
    n
}

/// This thread's name (`PR_SET_NAME`: what `ps -o comm`, `top` and
/// `/proc/PID/stat` show; at most 15 bytes).
pub fn set_name(name: &std::ffi::CStr) {
    // SAFETY: prctl reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// `clock_gettime(2)` of clock `id` (zero where the kernel refuses it).
pub fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
