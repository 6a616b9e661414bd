//! The system calls of the sandbox (`crate::sandbox`): Landlock, seccomp,
//! `no_new_privs`, the resource limit that forbids `fork`, and what the
//! `SIGSYS` handler of the optional per-worker filter needs.

use nix::errno::Errno;
use std::mem::{size_of, zeroed};
use std::os::fd::RawFd;

/// `PR_SET_NO_NEW_PRIVS`: no `execve` of this process or its descendants
/// can gain privileges (set-user-ID, file capabilities) again. Landlock and
/// seccomp need it from a process without `CAP_SYS_ADMIN`.
pub fn no_new_privs() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    Errno::result(r).map(drop)
}

/// `RLIMIT_NPROC` 0: this process can no longer `fork` (unless it runs
/// with `CAP_SYS_RESOURCE` or as root, which the limit does not bind).
pub fn forbid_fork() -> Result<(), Errno> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a pointer to a valid rlimit for the duration of the call.
    Errno::result(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &zero) }).map(drop)
}

/// The Landlock ABI version the kernel offers (0: none; -1 if Landlock is
/// built in but disabled at boot).
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: no pointer is passed; the call only reports a version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    match v {
        v if v > 0 => v as i32,
        _ if Errno::last() == Errno::EOPNOTSUPP => -1,
        _ => 0,
    }
}

/// `landlock_restrict_self`: this process (single-threaded) enters the
/// domain of the prepared ruleset `ruleset`, nested in its current one.
pub fn landlock_restrict(ruleset: RawFd) -> Result<(), Errno> {
    // SAFETY: integer arguments; the kernel checks the descriptor.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    Errno::result(r).map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` with a compiled classic-BPF program;
/// it applies to this process and everything it later runs.
pub fn seccomp_filter(program: &[libc::sock_filter]) -> Result<(), Errno> {
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program during the call; `prog` and the
    // slice outlive it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(r).map(drop)
}

/// The system call a `SIGSYS` from a seccomp filter reports (`si_syscall`,
/// which libc's `siginfo_t` does not name: after the signal number, errno,
/// code and padding, the faulting address, then the call's number).
pub fn sigsys_syscall(info: &libc::siginfo_t) -> i32 {
    const SI_SYSCALL_OFFSET: usize = 16 + size_of::<usize>();
    const _: () = assert!(SI_SYSCALL_OFFSET + 4 <= size_of::<libc::siginfo_t>());
    let at = info as *const libc::siginfo_t as *const u8;
    // SAFETY: 4 bytes within the siginfo_t `info` refers to (asserted
    // above), read unaligned; any bits are a valid i32.
    unsafe { std::ptr::read_unaligned(at.add(SI_SYSCALL_OFFSET) as *const i32) }
}

/// A `SIGSYS` handler: the signal, the `siginfo_t` the kernel passes an
/// `SA_SIGINFO` handler, its context.
pub type SigsysHandler = extern "C" fn(libc::c_int, &libc::siginfo_t, *mut libc::c_void);

/// Install `handler` for `SIGSYS`, once: it runs with `SIGSYS` unblocked
/// and the default disposition already restored, so that a `SIGSYS` it
/// raises ends the process. The kernel calls an `SA_SIGINFO` handler with
/// a pointer to a `siginfo_t` that is valid while it runs, never null: the
/// reference the handler's type takes. The handler runs in a signal's
/// context: it must do only what is safe there (atomics, system calls, no
/// allocation), which its caller sees to, as with any handler.
pub fn on_sigsys(handler: SigsysHandler) {
    // SAFETY: a zeroed sigaction is valid (empty mask); the handler is a
    // plain function, whose reference argument the kernel's pointer
    // satisfies (see above).
    unsafe {
        let mut sa: libc::sigaction = zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER;
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}

/// Send `sig` to this thread (`tgkill`), from a signal handler too.
pub fn raise(sig: libc::c_int) {
    // SAFETY: plain system calls with integer arguments.
    unsafe {
        let pid = libc::getpid();
        let tid = libc::syscall(libc::SYS_gettid);
        libc::syscall(libc::SYS_tgkill, pid, tid, sig);
    }
}
