//! Which program answers a CGI request, and what of the path is its
//! `SCRIPT_NAME` and its `PATH_INFO`.
//!
//! In `dir` mode the path below the prefix is walked one component at a time
//! below the directory, each opened with `openat2(RESOLVE_BENEATH)` relative
//! to a descriptor of the directory (as static files are), so that nothing,
//! symbolic links included, leads out of it; the first regular file is the
//! script and the rest is `PATH_INFO`. Names starting with a dot are refused.
//! In `script` mode the one configured program answers the whole subtree.
//!
//! What is found is held open: the script (read-only, close-on-exec) and its
//! directory, the very files that were checked. The script is exec'd from
//! that descriptor and the directory entered from its own (`process.rs`), so
//! that what runs is what was checked, not whatever its path names a moment
//! later.
//!
//! The answer is a status when there is no script to run: 404 when the path
//! names nothing, 403 for a directory, a dotfile, something that is not a
//! regular file, or a file that cannot be opened (or, without an interpreter
//! configured for it, is not executable: [`executable`]).

use crate::config::{CgiRoute, CgiTarget};
use crate::http::static_file::open_beneath;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::AccessFlags;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The program a request runs, found.
pub struct Script {
    /// The file to run (absolute): its name, for the meta-variables, the
    /// log, and the interpreter of a script that needs one.
    pub path: PathBuf,
    pub script_name: String,
    pub path_info: Option<String>,
    /// The file that was checked, open (read-only, close-on-exec).
    pub file: OwnedFd,
    /// Its directory, open (the script's working directory).
    pub dir: OwnedFd,
}

/// `fd` if it is a regular file's, else 403.
fn regular(fd: OwnedFd) -> Result<OwnedFd, u16> {
    let st = fstat(&fd).map_err(|_| 403u16)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG {
        Ok(fd)
    } else {
        Err(403)
    }
}

/// Find the script and split the path into SCRIPT_NAME and PATH_INFO.
pub fn resolve(route: &CgiRoute, prefix: &str, path: &str) -> Result<Script, u16> {
    let below = &path[prefix.len().min(path.len())..];
    match &route.target {
        CgiTarget::Script(file) => one_script(file, prefix, below),
        CgiTarget::Dir(dir) => in_dir(dir, prefix, below, path.ends_with('/')),
    }
}

/// `script = ...`: "/app" serves "/app" and "/app/..." but not "/apps".
fn one_script(file: &Path, prefix: &str, below: &str) -> Result<Script, u16> {
    if !below.is_empty() && !below.starts_with('/') && !prefix.ends_with('/') {
        return Err(404);
    }
    let rest = below.trim_start_matches('/');
    let path_info = (!rest.is_empty() || below.starts_with('/') || prefix.ends_with('/'))
        .then(|| format!("/{rest}"));
    // The configured program: its absence is the configuration's fault.
    let opened = nix::fcntl::open(file, OPEN_SCRIPT, Mode::empty()).and_then(|f| {
        let dir = file.parent().unwrap_or(Path::new("/"));
        Ok((f, nix::fcntl::open(dir, OPEN_DIR, Mode::empty())?))
    });
    let (fd, dir) = opened.map_err(|e| {
        crate::error!("cgi script {}: {e}", file.display());
        if e == Errno::ENOENT {
            404u16
        } else {
            403
        }
    })?;
    Ok(Script {
        path: file.to_path_buf(),
        script_name: prefix.trim_end_matches('/').to_string(),
        path_info,
        file: regular(fd)?,
        dir,
    })
}

/// How a script is opened: to be read (by the kernel, for its `#!` line)
/// and exec'd from.
const OPEN_SCRIPT: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NONBLOCK);
/// How its directory is opened: to be entered (`fchdir`).
const OPEN_DIR: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// `dir = ...`: walk below the directory to the first regular file.
fn in_dir(
    dir: &std::path::Path,
    prefix: &str,
    below: &str,
    trailing_slash: bool,
) -> Result<Script, u16> {
    let comps: Vec<&str> = below.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() || comps.iter().any(|c| c.starts_with('.')) {
        return Err(403);
    }
    let root = nix::fcntl::open(dir, OPEN_DIR, Mode::empty()).map_err(|e| {
        crate::error!("cgi dir {}: {e}", dir.display());
        404u16
    })?;
    // The directory the walk is in: the root, then each one below it.
    let mut parent: Option<OwnedFd> = None;
    for i in 1..=comps.len() {
        let rel = comps[..i].join("/");
        let fd = match open_beneath(&root, &rel) {
            Ok(fd) => fd,
            Err(Errno::EACCES) | Err(Errno::EPERM) => return Err(403),
            Err(_) => return Err(404),
        };
        let st = fstat(&fd).map_err(|_| 404u16)?;
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => parent = Some(fd),
            SFlag::S_IFREG => {
                let rest = comps[i..].join("/");
                let path_info = (!rest.is_empty()).then(|| {
                    let slash = if trailing_slash { "/" } else { "" };
                    format!("/{rest}{slash}")
                });
                let base = prefix.trim_end_matches('/');
                return Ok(Script {
                    path: dir.join(&rel),
                    script_name: format!("{base}/{rel}"),
                    path_info,
                    file: fd,
                    dir: parent.unwrap_or(root),
                });
            }
            _ => return Err(403),
        }
    }
    Err(403) // a directory
}

/// The interpreter configured for the script's extension, if any.
pub fn interpreter(route: &CgiRoute, script: &Script) -> Option<PathBuf> {
    let path = script.path.to_str()?;
    route
        .interpreters
        .iter()
        .find(|(ext, _)| path.ends_with(ext.as_str()))
        .map(|(_, i)| i.clone())
}

/// May this process exec the checked file? Asked of the descriptor
/// (`faccessat2(AT_EMPTY_PATH)`: permissions, ACLs, a `noexec` mount), not
/// of its path. Where the kernel (or a seccomp filter) does not answer that,
/// the permission bits say, and the exec itself has the last word (500).
pub fn executable(file: &OwnedFd) -> bool {
    let flags = AtFlags::AT_EMPTY_PATH | AtFlags::AT_EACCESS;
    match nix::unistd::faccessat(file, "", AccessFlags::X_OK, flags) {
        Ok(()) => true,
        Err(Errno::EACCES) => false,
        Err(_) => fstat(file).is_ok_and(|st| st.st_mode & 0o111 != 0),
    }
}
