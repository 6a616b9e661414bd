//! Signals arrive through a signalfd, read in the supervisor's loop.
//!
//! Invariant 1: lbaws installs no signal handler at all. The signals it acts on
//! are blocked in [`block`] before anything else happens and then read as data
//! from a non-blocking, close-on-exec signalfd, so a SIGCHLD can never interrupt
//! a system call half-way or run code at an unsafe moment; signals that arrive
//! while the loop is busy stay pending and show up at the next poll. Several
//! SIGCHLDs may merge into one: the reaper loops on `waitpid(WNOHANG)` anyway.
//!
//! Invariant 2, the other half: [`reset_in_child`] gives a forked worker the
//! default disposition of every signal and an empty mask.

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals the supervisor acts on.
pub const HANDLED: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    set
}

/// Block the handled signals (call first thing, before any fork or socket).
pub fn block() -> nix::Result<()> {
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None)
}

/// The supervisor's signal descriptor.
pub fn open() -> nix::Result<SignalFd> {
    SignalFd::with_flags(
        &handled_set(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
}

/// Read one pending signal, `None` when there is none left.
pub fn next(fd: &SignalFd) -> Option<Signal> {
    loop {
        match fd.read_signal() {
            Ok(Some(info)) => {
                if let Ok(s) = Signal::try_from(info.ssi_signo as i32) {
                    return Some(s);
                }
            }
            Ok(None) => return None,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// In a freshly forked child: default dispositions everywhere, nothing blocked.
/// Ignored signals would otherwise stay ignored across `exec` (SIGPIPE, which
/// the Rust runtime ignores, is the classic case; an ignored real-time signal
/// inherited from whoever started lbaws is another).
pub fn reset_in_child() -> nix::Result<()> {
    for s in Signal::iterator() {
        if s == Signal::SIGKILL || s == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours.
        unsafe { signal::signal(s, SigHandler::SigDfl) }?;
    }
    // The real-time signals, including the two glibc keeps for itself (its
    // wrapper refuses them): straight to the kernel. SIG_DFL is an all-zero
    // kernel sigaction.
    let dfl = [0u64; 4];
    for sig in 32..=libc::SIGRTMAX() {
        // SAFETY: a valid, zeroed kernel sigaction; no handler is installed.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}
