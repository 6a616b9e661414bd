//! CGI limits in a cgroup v2 subtree delegated to lbaws (systemd's
//! `Delegate=yes`): one leaf per running script, whose `pids.max` and
//! `memory.max` hold the script *and everything it starts*, together.
//!
//! ```text
//!   <the service's cgroup>/          delegated: pids and memory given on
//!     supervisor/                    the supervisor, the gate, the workers
//!     cgi/                           pids and memory given on
//!       s<slot>/                     one script's tree (created by its worker,
//!                                    removed once the tree is reaped)
//! ```
//!
//! cgroup v2 lets a cgroup with controllers enabled for its children hold
//! no process itself, so lbaws first moves into `supervisor/` (at start,
//! before it forks anything: [`settle`]). Only a subtree that is really
//! lbaws's is touched: one it may write as itself (systemd gives the
//! service's user the delegated directory and nothing else), or, as root,
//! one marked delegated (the `trusted.delegate` attribute systemd sets);
//! never the root of the hierarchy. A worker creates its script's leaf,
//! sets the limits, and the script's process joins it before it execs
//! (`cgroup.procs` opened by the worker, written by the child), so nothing
//! of the script runs outside it. At the end the worker reads what the
//! limits stopped (`pids.events`, `memory.events`) for the log, and removes
//! the leaf. A leaf left by a worker that was killed is emptied
//! (`cgroup.kill`) and made again by the next worker of that slot.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const CONTROLLERS: &str = "+pids +memory";

/// This process's cgroup v2 path (`0::/...` in /proc/self/cgroup).
fn own_path() -> Result<String, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| "no cgroup v2 hierarchy (cgroup v1 only)".to_string())
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

fn has_controllers(dir: &Path) -> bool {
    let text = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let have: Vec<&str> = text.split_whitespace().collect();
    have.contains(&"pids") && have.contains(&"memory")
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{}: {e}", path.display()))
}

/// The delegated directory this process may build its layout in, or why
/// there is none.
fn delegated() -> Result<PathBuf, String> {
    let own = own_path()?;
    let root = Path::new(ROOT);
    if !is_cgroup2(root) {
        return Err(format!("{ROOT} is not cgroup v2 (a v1 or hybrid layout)"));
    }
    if own == "/" {
        return Err("lbaws runs in the root cgroup, which is not its own".into());
    }
    let dir = root.join(own.trim_start_matches('/'));
    // Already settled (an upgrade in place): the layout is there.
    if dir.ends_with("supervisor") {
        if let Some(parent) = dir.parent() {
            if parent.join("cgi").is_dir() {
                return Ok(parent.to_path_buf());
            }
        }
    }
    if !has_controllers(&dir) {
        return Err(format!(
            "{}: the pids and memory controllers are not available there",
            dir.display()
        ));
    }
    let writable =
        |name: &str| nix::unistd::access(&dir.join(name), nix::unistd::AccessFlags::W_OK).is_ok();
    let ours = match nix::unistd::geteuid().is_root() {
        true => crate::sys::has_xattr(&dir, c"trusted.delegate"),
        false => writable("cgroup.procs") && writable("cgroup.subtree_control"),
    };
    if !ours {
        return Err(format!(
            "{} is not delegated to lbaws (systemd: Delegate=yes)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// At start, before the first fork: build the layout (see the module
/// docs) in the delegated subtree lbaws runs in; the directory for
/// scripts' leaves, or why there is none (then rlimits apply).
pub fn settle() -> Result<PathBuf, String> {
    let dir = delegated()?;
    let cgi = dir.join("cgi");
    let supervisor = dir.join("supervisor");
    if !own_path()?.ends_with("/supervisor") {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let me = std::process::id().to_string();
        if let Some(other) = procs.lines().find(|p| *p != me) {
            return Err(format!(
                "{} holds process {other} besides lbaws: not moved",
                dir.display()
            ));
        }
        mkdir(&supervisor)?;
        write(&supervisor.join("cgroup.procs"), &me)?;
        write(&dir.join("cgroup.subtree_control"), CONTROLLERS)?;
        mkdir(&cgi)?;
        write(&cgi.join("cgroup.subtree_control"), CONTROLLERS)?;
    }
    detect()
}

fn mkdir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("{}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Whether the layout is in place (settled by this lbaws, or by the one
/// this `check` or reload belongs to): the directory for scripts' leaves.
pub fn detect() -> Result<PathBuf, String> {
    let own = own_path()?;
    if !is_cgroup2(Path::new(ROOT)) {
        return Err(format!("{ROOT} is not cgroup v2 (a v1 or hybrid layout)"));
    }
    let dir = Path::new(ROOT).join(own.trim_start_matches('/'));
    // The supervisor's processes, or systemd's control processes
    // (`ExecReload=lbaws check`) beside them.
    let Some(parent) = dir
        .parent()
        .filter(|_| dir.ends_with("supervisor") || dir.ends_with(".control"))
    else {
        return Err(format!(
            "{} is not a delegated subtree lbaws has set up (systemd: Delegate=yes)",
            dir.display()
        ));
    };
    let cgi = parent.join("cgi");
    if !has_controllers(&cgi) {
        return Err(format!(
            "{}: the pids and memory controllers are not available there",
            cgi.display()
        ));
    }
    Ok(cgi)
}

/// One script's leaf, made by its worker.
pub struct Leaf {
    dir: PathBuf,
}

/// What the limits of a leaf stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Hits {
    /// Forks refused at `pids.max`.
    pub processes: u64,
    /// Processes the OOM killer ended at `memory.max`.
    pub oom_kills: u64,
}

impl Leaf {
    /// Make the leaf `name` under `cgi` with these limits (emptying and
    /// making again one left behind); with `cgroup.procs` open for the
    /// script's process to join.
    pub fn create(
        cgi: &Path,
        name: &str,
        processes: u64,
        memory: u64,
    ) -> Result<(Leaf, OwnedFd), String> {
        let dir = cgi.join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(format!("{}: {e}", dir.display()));
            }
            // A leaf a killed worker left: what it holds goes.
            let _ = write(&dir.join("cgroup.kill"), "1");
            let until = Instant::now() + Duration::from_secs(1);
            while std::fs::remove_dir(&dir).is_err() {
                if Instant::now() >= until {
                    return Err(format!("{}: still in use", dir.display()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let leaf = Leaf { dir };
        write(&leaf.dir.join("pids.max"), &processes.to_string())?;
        write(&leaf.dir.join("memory.max"), &memory.to_string())?;
        // The tree ends as one when it is out of memory; and no swap
        // instead (where swap accounting exists).
        let _ = write(&leaf.dir.join("memory.oom.group"), "1");
        let _ = write(&leaf.dir.join("memory.swap.max"), "0");
        let procs = nix::fcntl::open(
            &leaf.dir.join("cgroup.procs"),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{}/cgroup.procs: {e}", leaf.dir.display()))?;
        Ok((leaf, procs))
    }

    /// What its limits stopped so far.
    pub fn hits(&self) -> Hits {
        Hits {
            processes: event(&self.dir.join("pids.events"), "max"),
            oom_kills: event(&self.dir.join("memory.events"), "oom_kill"),
        }
    }

    /// End whatever is still in it (`cgroup.kill`).
    pub fn kill(&self) {
        let _ = write(&self.dir.join("cgroup.kill"), "1");
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        // Empty once the tree is reaped; a leaf still in use is emptied
        // and removed by the next worker of this slot.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The count `key` in a `*.events` file (0 if unreadable).
fn event(path: &Path, key: &str) -> u64 {
    let mut text = String::new();
    if std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .is_err()
    {
        return 0;
    }
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// In the script's process, before its exec: join the leaf.
pub fn join(procs: &OwnedFd) -> Result<(), Errno> {
    nix::unistd::write(procs, b"0").map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.events");
        std::fs::write(
            &p,
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(event(&p, "oom_kill"), 1);
        assert_eq!(event(&p, "max"), 12);
        assert_eq!(event(&p, "oom"), 2);
        assert_eq!(event(&dir.path().join("none"), "max"), 0);
    }

    #[test]
    fn this_machine_says_why_it_has_no_layout() {
        // Whatever the machine, detect() answers without changing anything.
        match detect() {
            Ok(p) => assert!(p.ends_with("cgi")),
            Err(why) => assert!(!why.is_empty()),
        }
    }
}
