//! Descriptors: what a forked child keeps, and close-on-exec.

use std::os::fd::RawFd;

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
