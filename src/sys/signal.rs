//! Signal dispositions, straight to the kernel (`rt_sigaction`): glibc's
//! `sigaction` refuses the two real-time signals it keeps for itself, and
//! lbaws resets those too (`crate::signals`). Only the default and
//! "ignore" can be installed this way: no code of ours ever runs as a
//! handler through these (the sandbox's `SIGSYS` handler is `on_sigsys`).

use nix::errno::Errno;

/// A kernel `struct sigaction` (x86_64 and aarch64 layout): handler, flags,
/// restorer, mask. All zero is SIG_DFL.
type KernelSigaction = [u64; 4];

fn rt_sigaction(sig: i32, new: Option<&KernelSigaction>, old: Option<&mut KernelSigaction>) -> i64 {
    let new = new.map_or(std::ptr::null(), |n| n.as_ptr());
    let old = old.map_or(std::ptr::null_mut(), |o| o.as_mut_ptr());
    // SAFETY: valid pointers to kernel sigaction structs or null (8 bytes
    // of mask); the callers below install only SIG_DFL or SIG_IGN, which
    // run no code of ours.
    unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, new, old, 8usize) }
}

/// The handler word of `sig`'s disposition (0: `SIG_DFL`, 1: `SIG_IGN`,
/// else a handler's address); `None` where the kernel refuses the signal
/// number.
pub fn signal_handler(sig: i32) -> Option<u64> {
    let mut old: KernelSigaction = [0; 4];
    (rt_sigaction(sig, None, Some(&mut old)) == 0).then_some(old[0])
}

/// Give `sig` its default disposition, or (`ignore`) ignore it; no flags,
/// nothing masked. `EINVAL` for `SIGKILL`, `SIGSTOP` and what is no signal.
pub fn set_signal(sig: i32, ignore: bool) -> Result<(), Errno> {
    let handler = if ignore { libc::SIG_IGN as u64 } else { 0 };
    let new: KernelSigaction = [handler, 0, 0, 0];
    match rt_sigaction(sig, Some(&new), None) {
        0 => Ok(()),
        _ => Err(Errno::last()),
    }
}
