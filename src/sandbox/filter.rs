//! The seccomp filters, compiled with `seccompiler` (pure Rust, so the
//! static executable needs no libseccomp; maintained with Firecracker, which
//! filters its own processes the same way) when a configuration is loaded.
//!
//! - **The shared filter**, attached once by the supervisor before it forks
//!   anything, and inherited by the gate, every worker and every CGI script
//!   (a filter survives `fork` and `execve`, and a forked process shares its
//!   parent's, at no cost): a deny-list of the calls that reach into other
//!   processes or the kernel's global state (`ptrace`, `process_vm_readv`,
//!   `bpf`, `perf_event_open`, `mount`, `unshare`, `keyctl`, `io_uring`,
//!   ...). They fail with `EPERM`, so a script that tries one goes on to
//!   answer.
//! - **The worker allow-list** (`[sandbox] strict_syscalls`, static-only
//!   configurations): the calls a static worker makes, attached by each
//!   worker after `fork`. Anything else, `fork` and `execve` first, raises
//!   `SIGSYS`; the worker records the call in its scoreboard slot and dies
//!   of it, and the supervisor logs the call by name. Not the default,
//!   because attaching a filter is not cheap: the kernel JIT-compiles it
//!   and, for its cache of always-allowed calls, runs it for every system
//!   call number. Measured here, any filter attached per worker costs 35 to
//!   40 us, a sixth of what a whole connection costs; so this one starts
//!   with a load of the instruction pointer, which the kernel's cache
//!   builder cannot evaluate, and it skips that pass (the filter then runs on
//!   each call the worker makes instead, a few hundred nanoseconds each).
//!
//! Both begin with a check of the architecture and a refusal of x32 call
//! numbers, which a list keyed by x86_64 numbers would otherwise let
//! through.

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// A compiled program, in the kernel's layout.
pub type Program = Vec<libc::sock_filter>;

/// The calls a static worker makes (strace of the test suite's static
/// requests, keep-alive, parking, refusals, logging), with what the Rust
/// runtime and glibc may need on a rarer path (memory, time, randomness,
/// an abort).
#[cfg(target_arch = "x86_64")]
const STATIC_WORKER: &[i64] = &[
    // The connection and the files it is answered from.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_sendfile,
    libc::SYS_shutdown,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fadvise64,
    // syslog's socket, reconnected after a restart of the log daemon
    // (AF_UNIX only: see `socket_rule`).
    libc::SYS_connect,
    // Memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Time, randomness, the process itself.
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    // Signals: the default dispositions it resets, the SIGSYS it dies of.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Denied to every process lbaws forks (the shared filter).
#[cfg(target_arch = "x86_64")]
const DENIED: &[i64] = &[
    // Into other processes.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    // Kernel attack surface a script has no use for.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_modify_ldt,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    libc::SYS_lookup_dcookie,
    // Namespaces and mounts.
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // The machine's global state.
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_vhangup,
    libc::SYS_uselib,
];

/// A compiled filter.
pub struct Filter {
    pub program: Program,
}

impl Filter {
    /// What names this program across images (FNV-1a over its
    /// instructions): an upgrade in place hands the digests of the filters
    /// attached on to the image it executes, which the kernel keeps them
    /// for, so that none is attached twice.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for i in &self.program {
            let [c0, c1] = i.code.to_le_bytes();
            let [k0, k1, k2, k3] = i.k.to_le_bytes();
            for b in [c0, c1, i.jt, i.jf, k0, k1, k2, k3] {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// The shared deny-list; an error where seccomp filters are not built for
/// this architecture.
pub fn shared() -> Result<Filter, String> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, vec![])).collect();
        // But for one use: a CGI script's process enters a user namespace
        // of its own, where its process limit counts (`limits.rs`). (Any
        // process could make one with clone(CLONE_NEWUSER) anyway; a
        // script's own filter then takes that away: [`script`].)
        let not_just_user = cond(0, Dword, Ne, libc::CLONE_NEWUSER as u64)?;
        rules.insert(libc::SYS_unshare, vec![rule(vec![not_just_user])?]);
        let denied = SeccompAction::Errno(libc::EPERM as u32);
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            denied,
            seccompiler::TargetArch::x86_64,
        );
        let program = x32_guard(SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assemble(filter, program)
    }
    #[cfg(not(target_arch = "x86_64"))]
    Err("seccomp filters are built for x86_64 only".into())
}

/// The static worker's allow-list.
pub fn worker_allow_list() -> Result<Filter, String> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            STATIC_WORKER.iter().map(|&nr| (nr, vec![])).collect();
        rules.insert(libc::SYS_socket, socket_rule().map_err(|e| e.to_string())?);
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            seccompiler::TargetArch::x86_64,
        );
        // The load the cache builder cannot evaluate (see the module docs).
        let mut program = vec![libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: SECCOMP_DATA_IP,
        }];
        program.extend(x32_guard(SECCOMP_RET_TRAP));
        assemble(filter, program)
    }
    #[cfg(not(target_arch = "x86_64"))]
    Err("seccomp filters are built for x86_64 only".into())
}

/// A CGI route's scripts: attached by each script's process right before
/// its exec, over the shared filter, and inherited by all it starts.
///
/// - Sockets: TCP (Landlock then says which ports it may connect to),
///   netlink route queries, and, only where the route grants them, Unix
///   sockets (`connect_unix`) and UDP (`udp_ports`); every other family
///   and kind (raw, SCTP, packet, ...) is refused. The filter sees the
///   call's integers, never the address a socket is used with, and this
///   kernel's Landlock has no rule for UDP ports or Unix socket paths: a
///   route granted either gets it for any address (`lbaws check` says so).
/// - No namespaces: `unshare`, and `clone` with any `CLONE_NEW*` flag
///   (the script's process made its one user namespace before this).
///   `clone3`, whose flags are out of a filter's sight, answers ENOSYS, so
///   that the C library falls back to `clone`.
///
/// Refusals are EPERM: a script sees a failed call and goes on.
pub fn script(unix: bool, udp: bool) -> Result<Filter, String> {
    #[cfg(target_arch = "x86_64")]
    {
        use libc::{AF_INET, AF_INET6, AF_NETLINK, AF_UNIX};
        let eq = |arg, v: i32| cond(arg, Dword, Eq, v as u64);
        let ne = |arg, v: i32| cond(arg, Dword, Ne, v as u64);
        let kind = |v: i32| cond(1, Dword, MaskedEq(0xf), v as u64);
        let mut socket = vec![rule(vec![
            ne(0, AF_UNIX)?,
            ne(0, AF_INET)?,
            ne(0, AF_INET6)?,
            ne(0, AF_NETLINK)?,
        ])?];
        if !unix {
            socket.push(rule(vec![eq(0, AF_UNIX)?])?);
        }
        // NETLINK_ROUTE only (interfaces and addresses, read by resolvers).
        socket.push(rule(vec![eq(0, AF_NETLINK)?, ne(2, 0)?])?);
        let mut refused_kinds = vec![
            libc::SOCK_RAW,
            libc::SOCK_RDM,
            libc::SOCK_SEQPACKET,
            libc::SOCK_DCCP,
            // SOCK_PACKET, which libc keeps only as a deprecated name.
            10,
        ];
        if !udp {
            refused_kinds.push(libc::SOCK_DGRAM);
        }
        for family in [AF_INET, AF_INET6] {
            for &k in &refused_kinds {
                socket.push(rule(vec![eq(0, family)?, kind(k)?])?);
            }
            // A stream is TCP (not SCTP or MPTCP, which Landlock does not see).
            socket.push(rule(vec![
                eq(0, family)?,
                kind(libc::SOCK_STREAM)?,
                ne(2, 0)?,
                ne(2, libc::IPPROTO_TCP)?,
            ])?);
            if udp {
                socket.push(rule(vec![
                    eq(0, family)?,
                    kind(libc::SOCK_DGRAM)?,
                    ne(2, 0)?,
                    ne(2, libc::IPPROTO_UDP)?,
                ])?);
            }
        }
        let mut clone = Vec::new();
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            let f = flag as u64;
            clone.push(rule(vec![cond(0, Qword, MaskedEq(f), f)?])?);
        }
        let rules: BTreeMap<i64, Vec<SeccompRule>> = [
            (libc::SYS_socket, socket),
            (libc::SYS_clone, clone),
            (libc::SYS_unshare, vec![]),
        ]
        .into_iter()
        .collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            seccompiler::TargetArch::x86_64,
        );
        let mut program = x32_guard(SECCOMP_RET_ERRNO | libc::EPERM as u32);
        program.extend(refuse_call(
            libc::SYS_clone3 as u32,
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ));
        assemble(filter, program)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (unix, udp);
        Err("seccomp filters are built for x86_64 only".into())
    }
}

#[cfg(target_arch = "x86_64")]
use SeccompCmpArgLen::{Dword, Qword};
#[cfg(target_arch = "x86_64")]
use SeccompCmpOp::{Eq, MaskedEq, Ne};

#[cfg(target_arch = "x86_64")]
fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    v: u64,
) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, len, op, v).map_err(|e| e.to_string())
}

#[cfg(target_arch = "x86_64")]
fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| e.to_string())
}

/// Call `nr` answers `ret` (after [`x32_guard`], whose load of the call's
/// number it reuses).
fn refuse_call(nr: u32, ret: u32) -> Program {
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let i = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![i(JEQ, 0, 1, nr), i(RET, 0, 0, ret)]
}

/// `prologue`, then what seccompiler made of `filter`.
#[cfg(target_arch = "x86_64")]
fn assemble(
    filter: Result<SeccompFilter, seccompiler::BackendError>,
    mut program: Program,
) -> Result<Filter, String> {
    let filter = filter.map_err(|e| e.to_string())?;
    let bpf: seccompiler::BpfProgram = filter.try_into().map_err(|e| format!("{e}"))?;
    program.extend(bpf.iter().map(|i| libc::sock_filter {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    Ok(Filter { program })
}

/// `socket(AF_UNIX, ...)` only: the log's socket, not a way out.
#[cfg(target_arch = "x86_64")]
fn socket_rule() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let unix = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::AF_UNIX as u64,
    )?;
    Ok(vec![SeccompRule::new(vec![unix])?])
}

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
/// `struct seccomp_data`: the instruction pointer's offset.
const SECCOMP_DATA_IP: u32 = 8;

/// x86_64 only, and no x32 numbers (`refuse` for those).
fn x32_guard(refuse: u32) -> Program {
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let i = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // struct seccomp_data: nr at 0, arch at 4.
    vec![
        i(LD_W_ABS, 0, 0, 4),
        i(JEQ, 1, 0, AUDIT_ARCH_X86_64),
        i(RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
        i(LD_W_ABS, 0, 0, 0),
        i(JGE, 0, 1, X32_SYSCALL_BIT),
        i(RET, 0, 0, refuse),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_within_the_kernel_limit() {
        for f in [shared().unwrap(), worker_allow_list().unwrap()] {
            // BPF_MAXINSNS
            assert!(f.program.len() < 4096, "{}", f.program.len());
        }
    }

    #[test]
    fn a_digest_names_a_program() {
        let (a, b) = (shared().unwrap(), worker_allow_list().unwrap());
        assert_eq!(a.digest(), shared().unwrap().digest());
        assert_ne!(a.digest(), b.digest());
        let mut c = shared().unwrap();
        c.program[3].k ^= 1;
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn the_static_list_has_no_way_to_run_a_program() {
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_bind,
            libc::SYS_listen,
        ] {
            assert!(!STATIC_WORKER.contains(&nr), "{nr}");
        }
    }
}
