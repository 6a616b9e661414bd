//! What holds one request's CGI script and everything it starts to its
//! route's `limits`, and whose user it runs as.
//!
//! Two ways, chosen when a configuration is loaded and said at start and
//! by `lbaws check`:
//!
//! - **cgroup v2**, where lbaws runs in a subtree delegated to it (systemd
//!   `Delegate=yes`, as the packaged unit has): a leaf per script
//!   (`cgroup.rs`), whose `pids.max` counts the processes of the script's
//!   whole tree and whose `memory.max` its memory, page cache and shared
//!   memory included.
//! - **rlimits** everywhere else. `RLIMIT_NPROC` counts the processes of a
//!   *user*, so set on a script running as lbaws's own user it would count
//!   every worker too: a limit low enough to stop a fork bomb would stop
//!   the server's own forks, and one high enough to leave those alone
//!   would let a bomb take all the room there is. Since Linux 5.14 the
//!   count is kept per user *and user namespace*, so each script's process
//!   enters a user namespace of its own (no ids mapped: it sees itself as
//!   uid 65534, the kernel checks its real ids) and sets `RLIMIT_NPROC`
//!   there: the script's own processes are counted, nothing else. Where a
//!   user namespace cannot be made (a `RestrictNamespaces=` unit, a sysctl
//!   that forbids them), the process limit is not enforced, and lbaws says
//!   so. Memory is each process's address space (`RLIMIT_AS`): a bound
//!   per process, not per tree, and blind to shared memory a script never
//!   maps; only the cgroup bounds a tree.
//!
//! Either way, each process of the script gets `RLIMIT_CPU` (SIGXCPU at
//! the limit, SIGKILL a second later), `RLIMIT_NOFILE`, `RLIMIT_FSIZE`
//! (SIGXFSZ) and no core dumps. Root is not bound by `RLIMIT_NPROC`, nor
//! by much else: started as root without `[server] user`, lbaws runs its
//! scripts as `nobody` (workers stay root, so they can start them so).

use super::cgroup;
use crate::config::{Action, CgiLimits, Config};
use nix::errno::Errno;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// How the scripts of a configuration are held.
#[derive(Debug, Clone, Default)]
pub struct Containment {
    /// The directory of the scripts' cgroup leaves (the cgroup way).
    pub cgroup: Option<PathBuf>,
    /// Why there is no cgroup (the rlimit way).
    pub no_cgroup: String,
    /// Each script enters a user namespace of its own, where
    /// `RLIMIT_NPROC` counts its processes only (the rlimit way).
    pub userns: bool,
    /// Why not, if not.
    pub no_userns: String,
    /// Scripts run as this user: (name, uid, gid) (lbaws runs as root
    /// without `[server] user`).
    pub script_user: Option<(String, u32, u32)>,
}

thread_local! {
    /// What [`settle`] made of the cgroup at start.
    static SETTLED: std::cell::RefCell<Option<Result<PathBuf, String>>> =
        const { std::cell::RefCell::new(None) };
}

/// At start, before the first fork: the cgroup layout, where lbaws has a
/// delegated subtree (it stays for the life of the process: reloads and
/// upgrades in place find it).
pub fn settle() {
    let r = cgroup::settle();
    SETTLED.with(|s| *s.borrow_mut() = Some(r));
}

/// The user scripts run as when lbaws is root without `[server] user`.
const SCRIPT_USER: &str = "nobody";

/// How `cfg`'s scripts will be held, as this process sees it.
pub fn prepare(cfg: &Config) -> Containment {
    let mut c = Containment::default();
    let cgi = cfg
        .routes
        .iter()
        .any(|r| matches!(r.action, Action::Cgi(_)));
    if !cgi {
        return c;
    }
    let root = nix::unistd::geteuid().is_root();
    if root && cfg.server.user.is_none() {
        let (uid, gid) = crate::users::user(SCRIPT_USER).unwrap_or((65534, 65534));
        c.script_user = Some((SCRIPT_USER.to_string(), uid, gid));
    }
    let settled = SETTLED.with(|s| s.borrow().clone());
    match settled.unwrap_or_else(cgroup::detect) {
        Ok(dir) => c.cgroup = Some(dir),
        Err(why) => {
            c.no_cgroup = why;
            match trial_userns(c.script_user.as_ref().map(|u| (u.1, u.2))) {
                Ok(()) => c.userns = true,
                Err(e) => c.no_userns = format!("no user namespace ({e})"),
            }
        }
    }
    c
}

/// Can a script's process enter a user namespace of its own? Tried in a
/// throw-away child, as that process would (as the script's user).
fn trial_userns(user: Option<(u32, u32)>) -> Result<(), Errno> {
    use nix::sys::wait::{waitpid, WaitStatus};
    // SAFETY: the child makes a few system calls and _exits.
    match crate::sys::fork() {
        Ok(nix::unistd::ForkResult::Child) => {
            let r = user
                .map_or(Ok(()), |(uid, gid)| crate::sys::become_user(uid, gid))
                .and_then(|()| crate::sys::unshare_user());
            let code = match r {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            // SAFETY: nothing of the parent's runs in this copy.
            crate::sys::exit_now(code)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(WaitStatus::Exited(_, e)) => return Err(Errno::from_raw(e)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(_) => return Err(Errno::ECHILD),
            }
        },
        Err(e) => Err(e),
    }
}

impl Containment {
    /// One line for the start and `lbaws check` (empty without CGI routes).
    pub fn summary(&self, cfg: &Config) -> Option<String> {
        if !cfg
            .routes
            .iter()
            .any(|r| matches!(r.action, Action::Cgi(_)))
        {
            return None;
        }
        let how = match (&self.cgroup, self.userns) {
            (Some(dir), _) => format!(
                "cgroup v2, a leaf per script under {} (pids.max and memory.max hold its whole tree); \
                 rlimits for cpu, open_files and file_size",
                dir.display()
            ),
            (None, true) => format!(
                "rlimits ({}): processes counted per script in a user namespace of its own \
                 (RLIMIT_NPROC), memory per process (RLIMIT_AS), cpu, open_files, file_size",
                self.no_cgroup
            ),
            (None, false) => format!(
                "rlimits ({}): memory per process (RLIMIT_AS), cpu, open_files, file_size; \
                 processes NOT enforced: {}",
                self.no_cgroup, self.no_userns
            ),
        };
        let user = match &self.script_user {
            Some((name, uid, gid)) => format!(
                "; scripts run as {name} (uid {uid}, gid {gid}): lbaws runs as root without [server] user"
            ),
            None => String::new(),
        };
        Some(format!("CGI limits: {how}{user}"))
    }
}

/// In a script's process, right after the fork (before its sandbox and
/// before it closes the worker's descriptors): into its cgroup leaf, its
/// user, its user namespace, its limits but memory ([`seal`]).
pub fn enter(c: &Containment, limits: &CgiLimits, leaf: Option<&OwnedFd>) -> Result<(), Errno> {
    use crate::sys::set_rlimit;
    if let Some(procs) = leaf {
        cgroup::join(procs)?;
    }
    if let Some((_, uid, gid)) = &c.script_user {
        crate::sys::become_user(*uid, *gid)?;
    }
    if c.cgroup.is_none() && c.userns {
        crate::sys::unshare_user()?;
        set_rlimit(libc::RLIMIT_NPROC, limits.processes, limits.processes)?;
    }
    // SIGXCPU at the limit, SIGKILL a second later for one that ignores it.
    set_rlimit(libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 1)?;
    set_rlimit(libc::RLIMIT_FSIZE, limits.file_size, limits.file_size)?;
    set_rlimit(libc::RLIMIT_CORE, 0, 0)?;
    let (_, hard) = crate::sys::nofile();
    let files = limits.open_files.min(hard);
    set_rlimit(libc::RLIMIT_NOFILE, files, files)
}

/// The last step before the exec: the address space limit (the rlimit
/// way), which the worker's own mappings, still there until the exec,
/// would otherwise count against.
pub fn seal(c: &Containment, limits: &CgiLimits) -> Result<(), Errno> {
    if c.cgroup.is_none() {
        crate::sys::set_rlimit(libc::RLIMIT_AS, limits.memory, limits.memory)?;
    }
    Ok(())
}
