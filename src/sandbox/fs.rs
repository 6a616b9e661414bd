//! The Landlock side: which paths and ports a worker and each CGI route's
//! scripts may use ([`Plan`], computed from the configuration alone, so
//! `lbaws check` can print it), and the rulesets built from them with the
//! `landlock` crate (maintained by Landlock's authors; it drops what an
//! older kernel does not know, and lbaws reports what that left out).
//!
//! The rights handled are pinned to Landlock ABI 6: every file right up to
//! `IOCTL_DEV` (ABI 5), TCP bind and connect (ABI 4), and the signal and
//! abstract-socket scopes (ABI 6). A newer kernel enforces the same set.

use crate::config::{Action, CgiRoute, CgiTarget, Config};
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, ABI,
};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The ABI whose rights lbaws handles (see the module docs).
pub const PINNED: ABI = ABI::V6;

/// What a path is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Read files, list directories (static roots).
    Read,
    /// Read and execute (scripts, interpreters, system directories, a
    /// route's `read`).
    Run,
    /// Create unnamed files and write them (the spool for request bodies).
    Spool,
    /// Read, write, truncate, ioctl (`/dev/null` and the like).
    Device,
    /// Everything (a route's `write`).
    Write,
}

impl Right {
    fn access(self) -> BitFlags<AccessFs> {
        use AccessFs::*;
        match self {
            Right::Read => ReadFile | ReadDir,
            Right::Run => AccessFs::from_read(PINNED),
            Right::Spool => ReadFile | ReadDir | WriteFile | MakeReg | Truncate,
            Right::Device => ReadFile | WriteFile | Truncate | IoctlDev,
            Right::Write => AccessFs::from_all(PINNED),
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Run => "read+exec",
            Right::Spool => "spool",
            Right::Device => "device",
            Right::Write => "write",
        }
    }
}

/// Paths with their rights, and the TCP ports connect may reach.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub paths: Vec<(PathBuf, Right)>,
    pub ports: Vec<u16>,
}

impl Plan {
    fn add(&mut self, path: impl Into<PathBuf>, right: Right) {
        let path = path.into();
        if !self.paths.iter().any(|(p, r)| *p == path && *r == right) {
            self.paths.push((path, right));
        }
    }

    fn merge(&mut self, other: &Plan) {
        for (p, r) in &other.paths {
            self.add(p.clone(), *r);
        }
        for &port in &other.ports {
            if !self.ports.contains(&port) {
                self.ports.push(port);
            }
        }
    }
}

/// Where programs and their libraries live: scripts get these read and
/// executable, `/etc` readable (the loader's cache, name service, time
/// zones, certificates).
const SYSTEM_RUN: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
const SYSTEM_READ: &[&str] = &["/etc", "/proc"];
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// What a CGI route's scripts get: their script or directory, their
/// interpreters, the system's programs and libraries, the harmless
/// devices, `/proc` (other processes' private files stay behind ptrace
/// rules, which the scoping denies), and what the route's `sandbox` adds.
pub fn script_plan(route: &CgiRoute) -> Plan {
    let mut plan = Plan::default();
    match &route.target {
        CgiTarget::Dir(d) => plan.add(d, Right::Run),
        CgiTarget::Script(s) => {
            plan.add(s, Right::Run);
            // It runs in its directory, and may read what lies beside it.
            if let Some(dir) = s.parent() {
                plan.add(dir, Right::Run);
            }
        }
    }
    for (_, interpreter) in &route.interpreters {
        plan.add(interpreter, Right::Run);
    }
    for p in SYSTEM_RUN {
        plan.add(*p, Right::Run);
    }
    for p in SYSTEM_READ {
        plan.add(*p, Right::Read);
    }
    for p in DEVICES {
        plan.add(*p, Right::Device);
    }
    for p in &route.widen.read {
        plan.add(p, Right::Run);
    }
    for p in &route.widen.write {
        plan.add(p, Right::Write);
    }
    plan.ports = route.widen.connect_ports.clone();
    plan
}

/// What a worker gets: its static roots; and when it may run scripts,
/// everything any of them gets (a script's domain is nested in its
/// worker's, so it can only narrow it), the spool directory, and the
/// directory of the scripts' cgroup leaves (`cgroup`), where limits are
/// enforced by cgroup. With a status route, `/proc` to read, where the
/// page's worker reads the supervisor's and the gate's `stat`, `limits`
/// and descriptor count (`http::procfs`): what any process may read of
/// another, the rest stays behind ptrace rules, which the scoping denies
/// (and the scoreboard every worker maps shows every connection's peer
/// and request already).
pub fn worker_plan(cfg: &Config, cgroup: Option<&Path>) -> Plan {
    let mut plan = Plan::default();
    let mut cgi = false;
    for route in &cfg.routes {
        match &route.action {
            Action::Static(st) => plan.add(&st.root, Right::Read),
            Action::Cgi(c) => {
                cgi = true;
                plan.merge(&script_plan(c));
            }
            Action::Status(_) => plan.add("/proc", Right::Read),
            Action::Respond { .. } | Action::Redirect { .. } => {}
        }
    }
    if cgi {
        plan.add(&cfg.server.temp_dir, Right::Spool);
        if let Some(dir) = cgroup {
            plan.add(dir, Right::Write);
        }
    }
    plan
}

/// What a path named when a ruleset was built on it (device and inode of
/// what it led to, symlinks followed), `None` if nothing: Landlock's rules
/// hold what a path named, so when it names something else (a deploy swaps
/// a symlink or renames a directory), the ruleset must be built again.
pub type Id = Option<(u64, u64)>;

/// Paths, each with what it named.
pub type Watched = Vec<(PathBuf, Id)>;

/// What `path` names now (`stat`: no allocation, one path walk).
pub fn id_of(path: &Path) -> Id {
    nix::sys::stat::stat(path).ok().map(|st| id(&st))
}

/// What an open descriptor is.
pub fn id_of_fd(fd: BorrowedFd) -> Id {
    nix::sys::stat::fstat(fd).ok().map(|st| id(&st))
}

// (`dev_t` and `ino_t` are not 64 bits everywhere.)
#[allow(clippy::unnecessary_cast)]
fn id(st: &nix::sys::stat::FileStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// A ruleset ready to enter, and each of `plan`'s paths but the system's
/// with what it named when its rule was made (`None`: it did not exist,
/// and grants nothing).
pub fn build(plan: &Plan) -> Result<(Option<OwnedFd>, Watched), String> {
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(PINNED))
        .map_err(err)?
        .handle_access(AccessNet::from_all(PINNED))
        .map_err(err)?
        .scope(Scope::from_all(PINNED))
        .map_err(err)?
        .create()
        .map_err(err)?;
    let mut seen = Vec::new();
    for (path, right) in &plan.paths {
        let Ok(fd) = PathFd::new(path) else {
            // The system's own may be absent (/lib32 on most machines).
            if !is_system(path) {
                seen.push((path.clone(), None));
            }
            continue;
        };
        // What the rule holds: the file this descriptor opened.
        let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("{}: {e}", path.display()))?;
        if !is_system(path) && !seen.iter().any(|(p, _)| p == path) {
            seen.push((path.clone(), Some(id(&st))));
        }
        let mut access = right.access();
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            access &= AccessFs::from_file(PINNED);
        }
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(err)?;
    }
    for &port in &plan.ports {
        ruleset = ruleset
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(err)?;
    }
    Ok((ruleset.into(), seen))
}

fn is_system(path: &Path) -> bool {
    SYSTEM_RUN
        .iter()
        .chain(SYSTEM_READ)
        .chain(DEVICES)
        .any(|s| Path::new(s) == path)
}

/// What the kernel's Landlock ABI `abi` enforces of the pinned set, and
/// what it leaves out.
pub fn coverage(abi: i32) -> (Vec<&'static str>, Vec<&'static str>) {
    let features = [
        (1, "files"),
        (3, "truncation"),
        (4, "TCP bind and connect"),
        (5, "device ioctl"),
        (6, "signal and abstract-socket scoping"),
    ];
    let mut on = Vec::new();
    let mut off = Vec::new();
    for (needs, what) in features {
        if abi >= needs {
            on.push(what);
        } else {
            off.push(what);
        }
    }
    (on, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        crate::config::parse(text, "test.toml").unwrap()
    }

    #[test]
    fn a_static_worker_reads_its_roots_only() {
        let c = cfg("[[route]]\nprefix = \"/\"\nstatic = { root = \"/srv/www\" }\n");
        let plan = worker_plan(&c, None);
        assert_eq!(plan.paths, vec![(PathBuf::from("/srv/www"), Right::Read)]);
        assert!(plan.ports.is_empty());
    }

    #[test]
    fn a_status_route_lets_workers_read_proc() {
        let c = cfg(concat!(
            "[[route]]\nprefix = \"/metrics\"\nstatus = { format = \"prometheus\" }\n",
            "[[route]]\nprefix = \"/\"\nstatic = { root = \"/srv/www\" }\n",
        ));
        let plan = worker_plan(&c, None);
        assert_eq!(
            plan.paths,
            vec![
                (PathBuf::from("/proc"), Right::Read),
                (PathBuf::from("/srv/www"), Right::Read)
            ]
        );
    }

    #[test]
    fn a_cgi_worker_gets_what_its_scripts_get_and_the_spool() {
        let c = cfg(concat!(
            "[server]\ntemp_dir = \"/tmp\"\n",
            "[[route]]\nprefix = \"/app\"\ncgi = { script = \"/opt/app/run.cgi\" }\n",
            "sandbox = { read = [\"/opt/venv\"], write = [\"/var/lib/app\"], connect_ports = [5432] }\n",
        ));
        let Action::Cgi(route) = &c.routes[0].action else {
            panic!()
        };
        let script = script_plan(route);
        for want in [
            ("/opt/app/run.cgi", Right::Run),
            ("/opt/app", Right::Run),
            ("/usr", Right::Run),
            ("/etc", Right::Read),
            ("/dev/null", Right::Device),
            ("/opt/venv", Right::Run),
            ("/var/lib/app", Right::Write),
        ] {
            assert!(
                script.paths.contains(&(PathBuf::from(want.0), want.1)),
                "{want:?}"
            );
        }
        assert!(!script.paths.iter().any(|(p, _)| p == Path::new("/tmp")));
        assert_eq!(script.ports, vec![5432]);
        let worker = worker_plan(&c, None);
        assert!(worker
            .paths
            .contains(&(PathBuf::from("/tmp"), Right::Spool)));
        assert_eq!(worker.ports, vec![5432]);
    }

    #[test]
    fn rulesets_build_and_missing_paths_are_named() {
        let plan = Plan {
            paths: vec![
                (PathBuf::from("/usr"), Right::Run),
                (PathBuf::from("/etc/hostname"), Right::Read),
                (PathBuf::from("/no/such/dir"), Right::Read),
            ],
            ports: vec![80],
        };
        let (_fd, seen) = build(&plan).unwrap();
        let hostname = std::fs::metadata("/etc/hostname").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            seen,
            vec![
                (
                    PathBuf::from("/etc/hostname"),
                    Some((hostname.dev(), hostname.ino()))
                ),
                (PathBuf::from("/no/such/dir"), None),
            ]
        );
        assert_eq!(id_of(Path::new("/etc/hostname")), seen[0].1);
    }
}
