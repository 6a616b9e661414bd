//! Signals arrive through a signalfd, read in the supervisor's loop.
//!
//! Invariant 1: lbaws installs no signal handler at all. The signals it acts on
//! are blocked in [`block`] before anything else happens and then read as data
//! from a non-blocking, close-on-exec signalfd, so a SIGCHLD can never interrupt
//! a system call half-way or run code at an unsafe moment; signals that arrive
//! while the loop is busy stay pending and show up at the next poll. Several
//! SIGCHLDs may merge into one: the reaper loops on `waitpid(WNOHANG)` anyway.
//!
//! Invariant 2, the other half: [`set_up_child`] puts a forked worker (or
//! the gate) in a process group of its own, and gives it the default
//! disposition of every signal but SIGPIPE and the supervisor's own
//! ([`NOT_FOR_CHILDREN`]), which it ignores, and an empty mask;
//! [`reset_in_child`] gives a CGI script every default, SIGPIPE's too.
//!
//! Why children ignore the supervisor's signals: they reach every process
//! of lbaws when a terminal sends them to its foreground process group
//! (Ctrl-C) or `systemctl kill` to the whole cgroup (its default,
//! `--kill-whom=all`). The process group keeps the terminal's away; the
//! ignoring covers the cgroup's, and a signal sent between the fork and
//! [`set_up_child`] (still blocked then) is dropped by it too.

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Signals whose disposition is not the default in this process, as a bit
/// per signal (bit n-1 for signal n). Until [`scan_dispositions`] has run,
/// every signal counts as changed.
static NOT_DEFAULT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Note which signals are not at their default (start-up, before any fork):
/// SIGPIPE, which the Rust runtime ignores, and whatever was inherited
/// ignored. A worker then resets just those, in a few system calls rather
/// than one per signal on every connection. lbaws itself installs no handler.
pub fn scan_dispositions() {
    let mut bits = 0u64;
    for sig in 1..=libc::SIGRTMAX().min(64) {
        if crate::sys::signal_handler(sig).is_some_and(|h| h != 0) {
            bits |= 1 << (sig - 1);
        }
    }
    NOT_DEFAULT.store(bits, Ordering::Relaxed);
}

/// The supervisor's signals, which the gate and the workers ignore: SIGTERM
/// is not among them (the supervisor ends its children with it), nor
/// SIGCHLD (a worker waits for its CGI scripts). And SIGTTOU: in a process
/// group of its own, a background one when lbaws runs in a terminal, a
/// child's log line on that terminal would stop it under `stty tostop`.
pub const NOT_FOR_CHILDREN: [i32; 6] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTTOU,
];

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// In a child about to run another program (a CGI script, the check of an
/// upgrade): default dispositions everywhere, nothing blocked. Ignored
/// signals would otherwise stay ignored across `exec` (SIGPIPE is the
/// classic case; the worker's [`NOT_FOR_CHILDREN`] and an ignored
/// real-time signal inherited from whoever started lbaws are others).
/// Straight to the kernel, since glibc's wrapper refuses the two real-time
/// signals it keeps for itself.
pub fn reset_in_child() -> nix::Result<()> {
    reset(not_default() | ignored_by_children(), false)
}

/// In `lbaws --inetd`: the same, but SIGPIPE stays ignored. `sendfile`
/// cannot be told not to raise it, and a client that leaves in the middle
/// of a download is an ordinary end (`EPIPE`), not a kill.
pub fn reset_in_worker() -> nix::Result<()> {
    reset(not_default(), true)
}

/// In a freshly forked worker or gate: a process group of its own, the
/// supervisor's signals ([`NOT_FOR_CHILDREN`]) and SIGPIPE ignored, every
/// other signal at its default, nothing blocked. Still blocked as it
/// inherited them, a supervisor's signal sent since the fork is pending:
/// ignoring it drops it (POSIX), before the mask opens.
pub fn set_up_child() -> nix::Result<()> {
    // Fails only for a session leader, which a forked child is not.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    for sig in NOT_FOR_CHILDREN {
        let _ = crate::sys::set_signal(sig, true);
    }
    reset(not_default() & !ignored_by_children(), true)
}

fn not_default() -> u64 {
    NOT_DEFAULT.load(Ordering::Relaxed)
}

fn ignored_by_children() -> u64 {
    NOT_FOR_CHILDREN.iter().fold(0, |b, &s| b | bit(s))
}

/// The signals in `bits` go back to the default (SIGPIPE is ignored instead
/// if `keep_sigpipe_ignored`); the mask opens.
fn reset(bits: u64, keep_sigpipe_ignored: bool) -> nix::Result<()> {
    for sig in 1..=libc::SIGRTMAX().min(64) {
        let keep = keep_sigpipe_ignored && sig == libc::SIGPIPE;
        if bits & bit(sig) != 0 && sig != libc::SIGKILL && sig != libc::SIGSTOP && !keep {
            let _ = crate::sys::set_signal(sig, false);
        }
    }
    if keep_sigpipe_ignored && bits & bit(libc::SIGPIPE) == 0 {
        // Started with SIGPIPE at its default (the Rust runtime ignores it):
        // ignore it here.
        let _ = crate::sys::set_signal(libc::SIGPIPE, true);
    }
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}
