//! The system calls that contain a CGI script (`crate::http::cgi`): resource
//! limits, a user namespace of its own, the setuid of a script started by
//! a root worker, and the pidfd its worker waits on; and the lingering
//! close that makes a cut response visible as one.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `setrlimit(resource, {n, n})` (both the soft and the hard limit).
pub fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> Result<(), Errno> {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a pointer to a valid rlimit for the duration of the call.
    Errno::result(unsafe { libc::setrlimit(resource, &r) }).map(drop)
}

/// `unshare(CLONE_NEWUSER)`: this (single-threaded) process enters a new
/// user namespace, with no ids mapped. What it gives a CGI script:
/// `RLIMIT_NPROC` is counted per user *and user namespace* (Linux 5.14 and
/// later: the "ucounts"), so a limit set after this counts the script's own
/// processes only, not every process of its user.
pub fn unshare_user() -> Result<(), Errno> {
    // SAFETY: unshare with a flag argument.
    Errno::result(unsafe { libc::unshare(libc::CLONE_NEWUSER) }).map(drop)
}

/// Become `uid`/`gid` for good, with no supplementary groups (a child of a
/// worker running as root, before it execs a script).
pub fn become_user(uid: u32, gid: u32) -> Result<(), Errno> {
    // SAFETY: plain system calls with integer arguments (setgroups with an
    // empty list).
    unsafe {
        Errno::result(libc::setgroups(0, std::ptr::null()))?;
        Errno::result(libc::setresgid(gid, gid, gid))?;
        Errno::result(libc::setresuid(uid, uid, uid))?;
    }
    Ok(())
}

/// `pidfd_open(pid)`: a descriptor that polls readable once `pid` has
/// ended (close-on-exec, as every pidfd is).
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, Errno> {
    // SAFETY: integer arguments; the kernel returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    let fd = Errno::result(fd)? as i32;
    // SAFETY: pidfd_open just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SO_LINGER` on (`on`: a zero linger, so that a close resets the
/// connection) or off (the default graceful close).
pub fn set_reset_on_close(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    let l = libc::linger {
        l_onoff: on as libc::c_int,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one linger struct.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// Whether `path` has the extended attribute `name` (systemd marks the
/// cgroups it delegates with `trusted.delegate`).
pub fn has_xattr(path: &std::path::Path, name: &std::ffi::CStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(p) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: NUL-terminated strings; a size of 0 only asks for the length.
    unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}
