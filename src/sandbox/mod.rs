//! A sandbox per worker: a Landlock domain of its own, under a seccomp
//! filter, so that what one connection's process can reach is its
//! configuration's files and nothing of the other connections' processes.
//!
//! The supervisor prepares everything when it loads a configuration
//! ([`prepare`], then [`install`]): the worker's Landlock ruleset, one
//! ruleset per CGI route for its scripts, and the compiled filters. It sets
//! `no_new_privs` on itself, and attaches the shared seccomp filter
//! ([`attach_shared`]) before it forks anything, so that the gate, every
//! worker and every script inherit both at no cost. A forked worker then
//! pays one or two system calls ([`enter_worker`]): `landlock_restrict_self`
//! with the prepared ruleset, and, where no CGI route exists, `setrlimit`
//! of `RLIMIT_NPROC` to 0; nothing is built or allocated per connection. A
//! CGI script's process enters its route's ruleset too ([`enter_script`]),
//! nested in its worker's, so it can only narrow it. Why the filter is
//! shared rather than attached per worker: [`filter`].
//!
//! Landlock's rules hold the files the configured paths named when they
//! were made, not the names. A deploy that swaps a static root's symlink
//! or renames a directory over it would leave every worker without access
//! to the new one: so before each fork the supervisor looks at what each
//! configured path names now (a `stat` each, [`follow_paths`]) and makes
//! the rulesets again when one changed; a worker forked before a change
//! recognises the refusal it gets for what it is ([`root_changed`]).
//!
//! What that gives, on a kernel with Landlock ABI 6 or newer:
//!
//! - files: a worker reads its static roots; with CGI routes, also what
//!   their scripts get (`fs::script_plan`) and it writes only unnamed files
//!   in the spool directory. A script gets its route's share. Without CGI
//!   routes nothing is executable to a worker.
//! - network: no TCP bind anywhere, TCP connect only to the ports a route
//!   lists (`connect_ports`).
//! - processes: Landlock's signal scope and its ptrace rule mean a worker or
//!   script can signal, trace or read `/proc/PID/environ` of nothing but its
//!   own descendants: not the supervisor, not another connection's worker
//!   or script. Abstract Unix sockets made outside its domain are out of
//!   reach.
//! - system calls: see [`filter`].
//!
//! Invariant 1 has one exception here: a worker under the optional
//! per-worker allow-list (`strict_syscalls`) has a `SIGSYS` handler, which
//! only its own filter triggers. It stores the refused call's number in the
//! worker's scoreboard slot and ends the worker with that same signal (no
//! other work), so that the supervisor can log the call by name.

mod cgroup;
mod describe;
mod filter;
mod fs;
mod limits;
mod names;
#[cfg(debug_assertions)]
mod probe;

use crate::config::{Action, Config, SandboxMode};
use nix::errno::Errno;
use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// The plans of a configuration's rulesets: the worker's, and each CGI
/// route's by `CgiRoute::slot`.
struct Plans {
    worker: fs::Plan,
    scripts: Vec<(usize, fs::Plan)>,
}

pub use cgroup::Leaf as CgroupLeaf;
pub use describe::describe;
pub use limits::settle as settle_cgroup;
pub use names::name as syscall_name;

/// What a configuration's workers get, ready to enter.
pub struct Prepared {
    /// The worker's ruleset (`None`: no Landlock).
    worker: Option<OwnedFd>,
    /// Each CGI route's ruleset, by `CgiRoute::slot`.
    scripts: Vec<Option<OwnedFd>>,
    /// The plans the rulesets were built from (`None`: none were), to
    /// build them again when a path names another file ([`follow_paths`]).
    plans: Option<Plans>,
    /// The configuration's paths (not the system's) and what each named
    /// when the rulesets were built.
    watched: fs::Watched,
    /// This process entered the worker's Landlock domain.
    entered: bool,
    /// The shared filter, attached once by the supervisor.
    shared: Option<filter::Filter>,
    /// The worker allow-list (`strict_syscalls`), attached by each worker.
    strict: Option<filter::Filter>,
    /// No CGI route: a worker may not fork (`RLIMIT_NPROC` 0).
    no_fork: bool,
    /// Each CGI route's scripts' filter, by `CgiRoute::slot`.
    script_filters: Vec<Option<filter::Filter>>,
    /// How scripts are held to their limits, and as which user.
    contain: limits::Containment,
    /// One line: what is enforced, what is not and why.
    pub summary: String,
    /// One line, with CGI routes: how their limits are enforced.
    pub limits: Option<String>,
    /// Paths of the configuration that do not exist (they grant nothing).
    pub missing: Vec<PathBuf>,
}

thread_local! {
    /// The sandbox in force (the supervisor is single-threaded; a forked
    /// worker reads its copy).
    static CURRENT: RefCell<Option<Prepared>> = const { RefCell::new(None) };
    /// The filters lbaws attached to this process (their digests), in this
    /// image or one before it: a filter stays across `execve`, and an
    /// upgrade in place says which ([`attached_before`]).
    static ATTACHED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// The Landlock ABI the pinned rights need in full.
const FULL_ABI: i32 = 6;

/// Build the sandbox `cfg` asks for. An error in `required` mode when the
/// kernel cannot give all of it, or when the rulesets cannot be built.
pub fn prepare(cfg: &Config) -> Result<Prepared, String> {
    let contain = limits::prepare(cfg);
    let limits = contain.summary(cfg);
    if cfg.sandbox.mode == SandboxMode::Off {
        return Ok(Prepared {
            worker: None,
            scripts: Vec::new(),
            plans: None,
            watched: Vec::new(),
            entered: false,
            shared: None,
            strict: None,
            no_fork: false,
            script_filters: Vec::new(),
            contain,
            summary: "sandbox off ([sandbox] mode = \"off\")".into(),
            limits,
            missing: Vec::new(),
        });
    }
    let required = cfg.sandbox.mode == SandboxMode::Required;
    let abi = crate::sys::landlock_abi();
    let (on, off) = fs::coverage(abi);
    let cgi = cfg
        .routes
        .iter()
        .any(|r| matches!(r.action, Action::Cgi(_)));
    let mut lacking: Vec<String> = off.iter().map(|s| s.to_string()).collect();
    let shared = filter::shared();
    let strict = match cfg.sandbox.strict_syscalls && !cgi {
        true => Some(filter::worker_allow_list()),
        false => None,
    };
    let mut script_filters = Vec::new();
    let mut script_error = None;
    for route in &cfg.routes {
        if let Action::Cgi(c) = &route.action {
            let f = filter::script(
                !c.widen.connect_unix.is_empty(),
                !c.widen.udp_ports.is_empty(),
            );
            script_filters.resize_with(script_filters.len().max(c.slot + 1), || None);
            match f {
                Ok(f) => script_filters[c.slot] = Some(f),
                Err(e) => script_error = Some(e),
            }
        }
    }
    let compile_errors = [
        shared.as_ref().err(),
        strict.as_ref().and_then(|s| s.as_ref().err()),
        script_error.as_ref(),
    ];
    let not_compiled = compile_errors.iter().any(Option::is_some);
    for e in compile_errors.into_iter().flatten() {
        lacking.push(format!("seccomp ({e})"));
    }
    if required && (abi < FULL_ABI || not_compiled) {
        return Err(format!(
            "[sandbox] mode = \"required\", but this kernel {}: not enforced: {}",
            match abi {
                -1 => "has Landlock disabled".to_string(),
                0 => "has no Landlock".to_string(),
                n => format!("offers Landlock ABI {n} (lbaws needs {FULL_ABI})"),
            },
            lacking.join(", ")
        ));
    }
    crate::sys::no_new_privs().map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"))?;
    let plans = plans(cfg, contain.cgroup.as_deref());
    let (worker, mut scripts, watched) = match abi > 0 {
        true => rulesets(&plans)?,
        false => (None, Vec::new(), Vec::new()),
    };
    let missing = watched
        .iter()
        .filter(|(_, id)| id.is_none())
        .map(|(p, _)| p.clone())
        .collect();
    let mut shared = shared.ok();
    let mut strict = strict.and_then(Result::ok);
    // The calls may be refused although the kernel has them (a seccomp
    // filter around lbaws, such as a unit's SystemCallFilter= without
    // them): try them once in a throw-away child.
    let filters = [shared.as_ref(), strict.as_ref()];
    let [landlock_ok, shared_ok, strict_ok, no_fork_ok] = trial(worker.as_ref(), filters);
    let no_fork = !cgi && no_fork_ok;
    if !cgi && !no_fork_ok {
        lacking.push("no fork (setrlimit refused)".into());
    }
    let mut worker = worker;
    let mut watched = watched;
    if !landlock_ok {
        worker = None;
        scripts.clear();
        watched.clear();
        lacking.push("Landlock (landlock_restrict_self refused)".into());
    }
    if !shared_ok || !strict_ok {
        shared = shared.filter(|_| shared_ok);
        strict = strict.filter(|_| strict_ok);
        lacking.push("seccomp (refused)".into());
    }
    if !shared_ok {
        script_filters.clear();
    }
    for route in &cfg.routes {
        if let Action::Cgi(c) = &route.action {
            if !c.widen.connect_unix.is_empty() || !c.widen.udp_ports.is_empty() {
                lacking.push(format!(
                    "per-path Unix socket and per-port UDP rules ({} may use any: Landlock ABI {abi} has no such rule)",
                    route.prefix
                ));
            }
        }
    }
    if required && !(landlock_ok && shared_ok && strict_ok && (cgi || no_fork_ok)) {
        return Err(format!(
            "[sandbox] mode = \"required\", but not enforced: {}",
            lacking.join(", ")
        ));
    }
    let summary = format!(
        "sandbox {}: Landlock {}; seccomp {}{}{}",
        match required {
            true => "required",
            false => "best-effort",
        },
        match abi {
            n if n > 0 && landlock_ok => format!("ABI {n} ({})", on.join(", ")),
            n if n > 0 => "refused".into(),
            -1 => "disabled at boot".into(),
            _ => "not in this kernel".into(),
        },
        match &shared {
            Some(_) =>
                "deny-list for every process (ptrace, bpf, mount, namespaces, keys, io_uring ...)",
            None => "not available",
        },
        match (&strict, cgi) {
            (Some(_), _) => "; each worker: an allow-list (strict_syscalls), no fork, no exec",
            (None, false) if no_fork => "; each worker: no fork, no exec",
            (None, false) => "; each worker: no exec",
            (None, true) => "",
        },
        match lacking.is_empty() {
            true => String::new(),
            false => format!("; not enforced: {}", lacking.join(", ")),
        }
    );
    Ok(Prepared {
        worker,
        scripts,
        plans: (!watched.is_empty()).then_some(plans),
        watched,
        entered: false,
        shared,
        strict,
        no_fork,
        script_filters,
        contain,
        summary,
        limits,
        missing,
    })
}

fn plans(cfg: &Config, cgroup: Option<&Path>) -> Plans {
    let scripts = cfg
        .routes
        .iter()
        .filter_map(|r| match &r.action {
            Action::Cgi(c) => Some((c.slot, fs::script_plan(c))),
            _ => None,
        })
        .collect();
    Plans {
        worker: fs::worker_plan(cfg, cgroup),
        scripts,
    }
}

/// The workers' ruleset, each CGI route's (by `CgiRoute::slot`), and the
/// configuration's paths with what they named (a script's paths are among
/// its worker's).
#[allow(clippy::type_complexity)]
fn rulesets(
    plans: &Plans,
) -> Result<
    (
        Option<OwnedFd>,
        Vec<Option<OwnedFd>>,
        Vec<(PathBuf, fs::Id)>,
    ),
    String,
> {
    let (worker, watched) = fs::build(&plans.worker)?;
    let mut scripts: Vec<Option<OwnedFd>> = Vec::new();
    for (slot, plan) in &plans.scripts {
        // By slot: routes are sorted by prefix length, slots are in file
        // order.
        scripts.resize_with(scripts.len().max(slot + 1), || None);
        scripts[*slot] = fs::build(plan)?.0;
    }
    Ok((worker, scripts, watched))
}

/// In the supervisor, before each fork of a worker: whether each path the
/// rulesets were built on still names what it named then (a `stat` each:
/// the static roots, CGI directories and scripts, a route's `read` and
/// `write`; not the system's directories). If one names another file now
/// (a deploy swapped a symlink, or renamed a directory over the old one),
/// or appeared, the rulesets are built again, for this worker and the next
/// ones: Landlock's rules hold what a path named, not the name.
pub fn follow_paths() {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(p) = c.as_mut() else { return };
        let mut changed = None;
        for (i, (path, id)) in p.watched.iter().enumerate() {
            if fs::id_of(path) != *id {
                changed = Some(i);
                break;
            }
        }
        let (Some(i), Some(plans)) = (changed, p.plans.as_ref()) else {
            return;
        };
        match rulesets(plans) {
            Ok((worker, scripts, watched)) => {
                crate::info!(
                    "sandbox: {} now names another file than when the sandbox was made: rules made again for the workers forked from now on",
                    p.watched[i].0.display()
                );
                p.worker = worker;
                p.scripts = scripts;
                p.watched = watched;
            }
            Err(e) => {
                // Tried again at the next fork only if the path changes
                // again: the workers keep the rules they have.
                crate::error!(
                    "sandbox: {} changed, but its rules cannot be made again ({e}); \
                     requests to it are refused until a reload (SIGHUP)",
                    p.watched[i].0.display()
                );
                p.watched[i].1 = fs::id_of(&p.watched[i].0);
            }
        }
    })
}

/// In a worker whose sandbox refused a file beneath `path`, a configured
/// root it opened as `opened`: whether that is because `path` names
/// another directory now than when this worker's rules were made (a deploy
/// since this worker was forked).
pub fn root_changed(path: &Path, opened: BorrowedFd) -> bool {
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(p) = c.as_ref().filter(|p| p.entered) else {
            return false;
        };
        let Some((_, then)) = p.watched.iter().find(|(w, _)| w == path) else {
            return false;
        };
        fs::id_of_fd(opened) != *then
    })
}

/// Whether a process can enter `ruleset` and attach each of `filters`:
/// tried in a child that does it and exits with a bit for each that worked.
/// The last bit: whether it could forbid itself to fork.
fn trial(ruleset: Option<&OwnedFd>, filters: [Option<&filter::Filter>; 2]) -> [bool; 4] {
    use nix::sys::wait::{waitpid, WaitStatus};
    // SAFETY: the child makes a few system calls and _exits.
    match crate::sys::fork() {
        Ok(nix::unistd::ForkResult::Child) => {
            let mut code = 0;
            if ruleset.is_none_or(|fd| crate::sys::landlock_restrict(fd.as_raw_fd()).is_ok()) {
                code |= 1;
            }
            if crate::sys::forbid_fork().is_ok() {
                code |= 8;
            }
            for (bit, f) in [2, 4].into_iter().zip(filters) {
                if f.is_none_or(|f| crate::sys::seccomp_filter(&f.program).is_ok()) {
                    code |= bit;
                }
            }
            // SAFETY: nothing of the parent's runs in this copy.
            crate::sys::exit_now(code)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    return [code & 1 != 0, code & 2 != 0, code & 4 != 0, code & 8 != 0]
                }
                Err(nix::errno::Errno::EINTR) => continue,
                _ => return [false; 4],
            }
        },
        Err(_) => [false; 4],
    }
}

/// In the supervisor, before it forks anything (and after each reload):
/// attach the shared filter, unless this process has it already (from this
/// image or, after an upgrade in place, from one before it). It stays for
/// the life of the process, a reload that turns the sandbox off included.
pub fn attach_shared() -> Result<(), Errno> {
    CURRENT.with(
        |c| match c.borrow().as_ref().and_then(|p| p.shared.as_ref()) {
            Some(f) => {
                let digest = f.digest();
                if ATTACHED.with(|a| a.borrow().contains(&digest)) {
                    return Ok(());
                }
                crate::sys::seccomp_filter(&f.program)?;
                ATTACHED.with(|a| a.borrow_mut().push(digest));
                Ok(())
            }
            None => Ok(()),
        },
    )
}

/// The filters attached to this process (digests), for the image an
/// upgrade in place executes.
pub fn attached() -> Vec<u64> {
    ATTACHED.with(|a| a.borrow().clone())
}

/// In an image an upgrade in place started, before [`attach_shared`]: the
/// filters the images before it attached, which this process still runs
/// under.
pub fn attached_before(digests: &[u64]) {
    ATTACHED.with(|a| *a.borrow_mut() = digests.to_vec());
}

/// In the supervisor: take `p` into use for the workers forked from now on.
/// Its summary if that differs from the one it replaces. (How CGI limits
/// are enforced is logged here when a reload changes it.)
pub fn install(p: Prepared) -> Option<String> {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let changed = c.as_ref().is_none_or(|old| old.summary != p.summary);
        let line = changed.then(|| p.summary.clone());
        // (At start, `main` logs it; after a reload, here, if it changed.)
        let limits_changed = c.as_ref().is_some_and(|old| old.limits != p.limits);
        if let (true, Some(l)) = (limits_changed, &p.limits) {
            crate::info!("{l}");
        }
        *c = Some(p);
        line
    })
}

/// In a worker: the directory of the scripts' cgroup leaves, where limits
/// are enforced by cgroup.
pub fn cgroup_dir() -> Option<std::path::PathBuf> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|p| p.contain.cgroup.clone()))
}

/// The descriptors a worker must keep open (its rulesets) into `out`; how
/// many (at most `out.len()`, which must allow `MAX_CGI_ROUTES + 1`).
pub fn keep(out: &mut [RawFd]) -> usize {
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(p) = c.as_ref() else { return 0 };
        let fds = p.worker.iter().chain(p.scripts.iter().flatten());
        // (`scripts` holds at most MAX_CGI_ROUTES.)
        let mut n = 0;
        for (slot, fd) in out.iter_mut().zip(fds) {
            *slot = fd.as_raw_fd();
            n += 1;
        }
        n
    })
}

/// In a fresh worker, after it closed what it must not hold and before it
/// reads a byte: enter the domain, then the filter.
pub fn enter_worker() -> Result<(), Errno> {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(p) = c.as_mut() else { return Ok(()) };
        // Entered, its ruleset is of no more use here: closed.
        if let Some(fd) = p.worker.take() {
            crate::sys::landlock_restrict(fd.as_raw_fd())?;
            p.entered = true;
        }
        if p.no_fork {
            crate::sys::forbid_fork()?;
        }
        if let Some(f) = &p.strict {
            crate::sys::on_sigsys(on_sigsys);
            crate::sys::seccomp_filter(&f.program)?;
        }
        Ok(())
    })?;
    #[cfg(debug_assertions)]
    probe::run();
    Ok(())
}

/// In a CGI script's process, before it closes its worker's descriptors:
/// its cgroup leaf (`leaf`: its `cgroup.procs`), user, user namespace and
/// limits but memory (`limits.rs`), then the Landlock domain of route
/// `slot`, nested in the worker's.
pub fn enter_script(
    slot: usize,
    limits: &crate::config::CgiLimits,
    leaf: Option<&OwnedFd>,
) -> Result<(), Errno> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(p) = c.as_ref() else { return Ok(()) };
        limits::enter(&p.contain, limits, leaf)?;
        match p.scripts.get(slot) {
            Some(Some(fd)) => crate::sys::landlock_restrict(fd.as_raw_fd()),
            _ => Ok(()),
        }
    })
}

/// In a CGI script's process, the last step before its exec: its memory
/// limit (the rlimit way) and route `slot`'s seccomp filter.
pub fn seal_script(slot: usize, limits: &crate::config::CgiLimits) -> Result<(), Errno> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(p) = c.as_ref() else { return Ok(()) };
        limits::seal(&p.contain, limits)?;
        match p.script_filters.get(slot) {
            Some(Some(f)) => crate::sys::seccomp_filter(&f.program),
            _ => Ok(()),
        }
    })
}

/// `SIGSYS` from the static filter: record the call, die of the signal.
extern "C" fn on_sigsys(_: libc::c_int, info: &libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo_t for an SA_SIGINFO handler.
    let nr = crate::sys::sigsys_syscall(info);
    crate::scoreboard::denied(nr);
    // SA_RESETHAND restored the default action: this ends the worker.
    crate::sys::raise(libc::SIGSYS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_prepares_nothing_and_says_so() {
        let cfg = crate::config::parse("[sandbox]\nmode = \"off\"\n", "t.toml").unwrap();
        let p = prepare(&cfg).unwrap();
        assert!(p.worker.is_none() && p.shared.is_none() && p.strict.is_none());
        assert_eq!(describe(&cfg), vec!["sandbox: off".to_string()]);
    }

    #[test]
    fn a_bad_mode_is_refused_where_it_is_written() {
        let e = crate::config::parse("[sandbox]\nmode = \"strict\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:2:8:"), "{e}");
    }
}
