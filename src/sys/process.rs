//! The process itself: its resource limits, its name, what happens to it
//! when its parent ends, and its children.

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
