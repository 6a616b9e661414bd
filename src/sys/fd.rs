//! Descriptors: what a forked child keeps, close-on-exec, and the
//! descriptors a process is handed (their ownership taken, their kind
//! asked).

use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Close every descriptor from 3 up but those in `keep` (sorted here, in
/// place): one `close_range` per gap between them. A forked child does this
/// first, so that nothing of its parent's it was not given stays open in it,
/// whatever the parent happened to hold at the fork.
pub fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut from: u32 = 3;
    for &k in keep.iter().filter(|&&k| k >= 3) {
        let k = k as u32;
        if k > from {
            // SAFETY: closes descriptors of this process only.
            unsafe { libc::close_range(from, k - 1, 0) };
        }
        from = from.max(k + 1);
    }
    // SAFETY: as above.
    unsafe { libc::close_range(from, u32::MAX, 0) };
}

/// Set or clear close-on-exec (an upgrade in place keeps a few descriptors
/// open across `execve`). Harmless on a descriptor that is not open.
pub fn set_cloexec(fd: RawFd, on: bool) {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl on a descriptor number of this process.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flag) };
}

/// Take ownership of `fd`, a descriptor this process was handed open for it
/// to own: by the service manager (socket activation, inetd), or by the
/// image before it, across the `execve` of an upgrade in place.
///
/// Checks that `fd` is open (`fcntl(F_GETFD)`): `Err(EBADF)` if not, -1
/// included, rather than an `OwnedFd` of nothing.
///
/// Trusts its caller for what `OwnedFd::from_raw_fd` asks beyond that and
/// no system call can tell: that nothing else in this process owns `fd` (no
/// `OwnedFd`, `File` or socket of it, no earlier `adopt_fd` of the same
/// number), so that the `OwnedFd` returned is the only one to close it.
/// This is a safe fn with that contract, which the compiler does not check:
/// every caller says in a SAFETY comment why it holds there.
pub fn adopt_fd(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: fcntl on a descriptor number; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: open (checked above), and owned by nothing else in this
    // process, on the caller's word (see the doc).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The type of the socket `fd` (`SO_TYPE`: `SOCK_STREAM`, ...); `ENOTSOCK`
/// for another file, `EBADF` for no descriptor.
pub fn socket_type(fd: RawFd) -> Result<libc::c_int, Errno> {
    sockopt_int(fd, libc::SO_TYPE)
}

/// Whether the socket `fd` is listening (`SO_ACCEPTCONN`); false for
/// anything else.
pub fn is_listening(fd: RawFd) -> bool {
    sockopt_int(fd, libc::SO_ACCEPTCONN).is_ok_and(|v| v != 0)
}

/// A `SOL_SOCKET` option of type `int`.
fn sockopt_int(fd: RawFd, opt: libc::c_int) -> Result<libc::c_int, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into v and sets len; a
    // descriptor number that is no socket is an error, not a fault.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    Errno::result(rc).map(|_| v)
}
