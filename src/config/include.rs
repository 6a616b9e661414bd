//! `include = ["/etc/lbaws/sites.d/*.toml"]`: files that hold sites.
//!
//! Each entry is a path or a glob pattern (`*`, `?`, `[...]`), relative to
//! the directory of the file that names it. Its matches are read in sorted
//! order (byte order of their paths), entries in the order written; names
//! starting with `.` are not matched by a wildcard (editors' swap files). A
//! pattern that matches nothing is fine; a file that matches and cannot be
//! read is an error, and so is a file read twice (which also stops a loop).
//! An included file holds `[[site]]` tables and may itself `include`, at
//! most [`MAX_DEPTH`] deep. Errors in an included file name that file, with
//! line and column.

use super::raw::{RawIncluded, RawSite};
use super::sites::Located;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A configuration file read: its name (as shown in errors) and its text.
pub(super) struct File {
    pub name: String,
    pub text: String,
    /// Its real path, to tell a file read twice (`None`: the built-in one).
    pub real: Option<PathBuf>,
}

/// Includes within includes, at most this deep.
pub const MAX_DEPTH: usize = 8;
/// At most this many files included in all.
pub const MAX_FILES: usize = 256;
/// At most this many entries in one `include`.
pub const MAX_PATTERNS: usize = 64;
/// The largest file an include may read.
pub const MAX_BYTES: u64 = 1 << 20;

type Includes = Option<Spanned<Vec<Spanned<String>>>>;

/// Read what `include` (of file `from`, at `depth`) names, and what those
/// files include in turn: the sites found, each with its file's index.
pub(super) fn expand(
    include: &Includes,
    from: usize,
    depth: usize,
    files: &mut Vec<File>,
    sites: &mut Vec<(usize, Spanned<RawSite>)>,
) -> Result<(), Located> {
    let Some(list) = include else {
        return Ok(());
    };
    if depth >= MAX_DEPTH {
        return Err((
            from,
            list.span(),
            format!("includes nest more than {MAX_DEPTH} deep"),
        ));
    }
    if list.get_ref().len() > MAX_PATTERNS {
        return Err((
            from,
            list.span(),
            format!("include: more than {MAX_PATTERNS} entries"),
        ));
    }
    // Relative to the naming file's directory, as that file was named.
    let base = Path::new(&files[from].name)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for entry in list.get_ref() {
        let at = |msg: String| (from, entry.span(), msg);
        let pattern = entry.get_ref();
        if pattern.is_empty() || pattern.contains('\0') {
            return Err(at("include: an empty entry".into()));
        }
        let full = base.join(pattern);
        let full = full
            .to_str()
            .ok_or_else(|| at("include: not UTF-8".into()))?;
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let matches = glob::glob_with(full, opts)
            .map_err(|e| at(format!("include {pattern:?}: bad pattern: {}", e.msg)))?;
        let mut paths = Vec::new();
        for m in matches {
            match m {
                Ok(p) => paths.push(p),
                Err(e) => {
                    return Err(at(format!(
                        "include {pattern:?}: cannot read {}: {}",
                        e.path().display(),
                        e.error()
                    )))
                }
            }
        }
        paths.sort();
        for path in paths {
            let index =
                read(&path, files).map_err(|why| at(format!("include {pattern:?}: {why}")))?;
            let file = &files[index];
            let raw: RawIncluded = toml::from_str(&file.text)
                .map_err(|e| (index, e.span().unwrap_or(0..0), super::clean(e.message())))?;
            sites.extend(raw.site.into_iter().map(|s| (index, s)));
            expand(&raw.include, index, depth + 1, files, sites)?;
        }
    }
    Ok(())
}

/// Read one included file into `files`; its index there.
fn read(path: &Path, files: &mut Vec<File>) -> Result<usize, String> {
    let shown = path.display();
    if files.len() > MAX_FILES {
        return Err(format!("more than {MAX_FILES} files included"));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    if meta.len() > MAX_BYTES {
        return Err(format!("{shown} is larger than 1 MiB"));
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("{shown}: {e}"))?;
    if let Some(f) = files.iter().find(|f| f.real.as_ref() == Some(&real)) {
        return Err(format!("{shown} is read twice (it is {})", f.name));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    files.push(File {
        name: shown.to_string(),
        text,
        real: Some(real),
    });
    Ok(files.len() - 1)
}
