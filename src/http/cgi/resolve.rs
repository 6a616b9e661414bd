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
//! The answer is a status when there is no script to run: 404 when the path
//! names nothing, 403 for a directory, a dotfile, something that is not a
//! regular file, or a file that cannot be opened.

use crate::config::{CgiRoute, CgiTarget};
use crate::http::static_file::open_beneath;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use std::path::PathBuf;

/// The program a request runs, found.
pub struct Script {
    /// The file to run (absolute).
    pub path: PathBuf,
    pub script_name: String,
    pub path_info: Option<String>,
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
fn one_script(file: &std::path::Path, prefix: &str, below: &str) -> Result<Script, u16> {
    if !below.is_empty() && !below.starts_with('/') && !prefix.ends_with('/') {
        return Err(404);
    }
    let rest = below.trim_start_matches('/');
    let path_info = (!rest.is_empty() || below.starts_with('/') || prefix.ends_with('/'))
        .then(|| format!("/{rest}"));
    Ok(Script {
        path: file.to_path_buf(),
        script_name: prefix.trim_end_matches('/').to_string(),
        path_info,
    })
}

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
    let root = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        crate::error!("cgi dir {}: {e}", dir.display());
        404u16
    })?;
    for i in 1..=comps.len() {
        let rel = comps[..i].join("/");
        let fd = match open_beneath(&root, &rel) {
            Ok(fd) => fd,
            Err(Errno::EACCES) | Err(Errno::EPERM) => return Err(403),
            Err(_) => return Err(404),
        };
        let st = fstat(&fd).map_err(|_| 404u16)?;
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => continue,
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
