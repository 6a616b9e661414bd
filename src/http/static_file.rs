//! Static files: resolution that cannot leave the root, then a file served by
//! `sendfile(2)` with validators, conditional requests and ranges.
//!
//! Resolution opens the path *relative to a descriptor of the root* with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any
//! step (`..`, an absolute or climbing symlink, a /proc magic link) that would
//! leave the root. Where the kernel lacks openat2 (before 5.6), the fallback
//! opens normally and then checks the opened file's real path against the
//! root's. The request path has already been decoded and normalised (no `..`
//! can reach here); names starting with '.' are refused unless `dotfiles`,
//! in the request path and in what a symlink inside the root leads to.

use super::conn::Conn;
use super::request::Request;
use super::response::{self, Face, Head, Persist, Sent};
use crate::config::StaticRoute;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the worker needs to answer.
pub struct Ctx<'c, 'a> {
    pub conn: &'c Conn<'a>,
    pub req: &'c Request,
    pub face: Face<'c>,
    pub persist: Persist,
    pub roots: &'c RootCache,
}

/// The roots a worker has opened, kept for the rest of its connection: a
/// keep-alive connection's later requests skip opening (and closing) the root
/// directory. Fixed size, so it allocates nothing.
#[derive(Default)]
pub struct RootCache {
    slots: std::cell::RefCell<[Option<(usize, OwnedFd)>; 4]>,
    /// A root changed under this worker's sandbox: close the connection
    /// after the response.
    pub close_after: std::cell::Cell<bool>,
}

impl<'c> Ctx<'c, '_> {
    fn head(&self, status: u16) -> Head<'c> {
        Head::new(status, self.face)
    }

    fn error(&self, status: u16) -> Result<Sent, Errno> {
        response::error(
            self.conn,
            status,
            self.face,
            self.req.is_head(),
            self.persist,
        )
    }
}

/// Open a static route's root (`O_PATH`).
fn open_root(route: &StaticRoute) -> Result<OwnedFd, Errno> {
    let root = std::ffi::CString::new(route.root.as_os_str().as_encoded_bytes())
        .map_err(|_| Errno::EINVAL)?;
    nix::fcntl::open(
        root.as_c_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// An error page's file (`rel` below the route's root, by the route's
/// rules): its descriptor and size; a regular file or an error. Uses the
/// worker's cached root unless the cache is in use (a page for an error of
/// a static request): then the root is opened for this once.
pub fn open_page(
    roots: &RootCache,
    route: &StaticRoute,
    rel: &str,
) -> Result<(OwnedFd, u64), Errno> {
    let target = if rel.is_empty() { "." } else { rel };
    let key = route as *const StaticRoute as usize;
    let cached = match roots.slots.try_borrow() {
        Ok(slots) => slots
            .iter()
            .flatten()
            .find(|(k, _)| *k == key)
            .map(|(_, fd)| open_visible(route, fd, target)),
        Err(_) => None,
    };
    let fd = match cached {
        Some(r) => r?,
        None => open_visible(route, &open_root(route)?, target)?,
    };
    let st = fstat(&fd)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Errno::EISDIR);
    }
    Ok((fd, st.st_size as u64))
}

/// Serve `rel` (the decoded path below the route's prefix, no leading '/').
pub fn serve(cx: &Ctx<'_, '_>, route: &StaticRoute, rel: &str) -> Result<Sent, Errno> {
    if cx.req.method != "GET" && cx.req.method != "HEAD" {
        let mut h = cx.head(405);
        h.header("Allow", "GET, HEAD");
        return response::error_with(cx.conn, h, cx.req.is_head(), cx.persist);
    }
    if !route.dotfiles && rel.split('/').any(|seg| seg.starts_with('.')) {
        return cx.error(403);
    }
    let mut slots = cx.roots.slots.borrow_mut();
    let key = route as *const StaticRoute as usize;
    let uncached;
    let root: &OwnedFd = match slots
        .iter()
        .position(|s| s.as_ref().is_some_and(|(k, _)| *k == key))
    {
        Some(i) => &slots[i].as_ref().expect("found").1,
        None => {
            let fd = match open_root(route) {
                Ok(fd) => fd,
                Err(e) => {
                    crate::error!("static root {}: {e}", route.root.display());
                    return cx.error(404);
                }
            };
            match slots.iter().position(Option::is_none) {
                Some(i) => {
                    slots[i] = Some((key, fd));
                    &slots[i].as_ref().expect("just stored").1
                }
                None => {
                    uncached = fd;
                    &uncached
                }
            }
        }
    };
    let target = if rel.is_empty() {
        "."
    } else {
        rel.trim_end_matches('/')
    };
    let fd = match open_visible(route, root, target) {
        Ok(fd) => fd,
        Err(Errno::EACCES) if crate::sandbox::root_changed(&route.root, root.as_fd()) => {
            return root_changed(cx, route)
        }
        Err(e) => return cx.error(open_status(e)),
    };
    let st = fstat(&fd)?;
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => file(cx, route, root, target, fd, &st),
        SFlag::S_IFDIR => directory(cx, route, root, target, fd),
        _ => cx.error(403),
    }
}

/// The root names another directory than when this worker's sandbox was
/// made (a deploy since it was forked), which its rules do not cover: 503,
/// and the connection closes, so that the client's next request gets a
/// fresh worker, with rules for the new directory.
#[cold]
#[inline(never)]
fn root_changed(cx: &Ctx<'_, '_>, route: &StaticRoute) -> Result<Sent, Errno> {
    crate::warn!(
        "{}: static root {} changed since this worker's sandbox was made (a deploy?): \
         503, the next connection gets a new worker",
        cx.req.target,
        route.root.display()
    );
    cx.roots.close_after.set(true);
    let mut h = cx.head(503);
    h.header("Retry-After", 1);
    response::error_with(cx.conn, h, cx.req.is_head(), Persist::Close)
}

fn open_status(e: Errno) -> u16 {
    match e {
        Errno::EACCES | Errno::EPERM => 403,
        // Not there, or resolving it would leave the root: the same answer.
        _ => 404,
    }
}

const OPEN_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY);

/// Open `path` below `dir` without ever resolving outside it.
pub fn open_beneath(dir: &OwnedFd, path: &str) -> Result<OwnedFd, Errno> {
    match openat2_beneath(dir, path, ResolveFlag::empty()) {
        Err(Errno::ENOSYS) => open_checked(dir, path, OPEN_FLAGS),
        r => r,
    }
}

fn openat2_beneath(dir: &OwnedFd, path: &str, extra: ResolveFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OPEN_FLAGS)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS | extra);
    // A C string from the worker's arena: nix would otherwise copy the path
    // into a 1 KiB buffer on the stack, and every page of stack a worker
    // touches is a page it copies.
    let cpath = std::ffi::CString::new(path).map_err(|_| Errno::EINVAL)?;
    openat2(dir, cpath.as_c_str(), how)
}

/// Open `path` below the route's root, keeping hidden what `dotfiles =
/// false` hides: the request path was checked for names starting with '.',
/// but a symlink inside the root may lead to one (`link -> .secret`). So
/// the path is first opened with no symlink followed; only if it has one is
/// it opened again and where it really led checked (EACCES: 403).
fn open_visible(route: &StaticRoute, root: &OwnedFd, path: &str) -> Result<OwnedFd, Errno> {
    if route.dotfiles {
        return open_beneath(root, path);
    }
    match openat2_beneath(root, path, ResolveFlag::RESOLVE_NO_SYMLINKS) {
        Err(Errno::ELOOP) | Err(Errno::ENOSYS) => {}
        r => return r,
    }
    let fd = open_beneath(root, path)?;
    if leads_to_hidden(root, &fd) {
        return Err(Errno::EACCES);
    }
    Ok(fd)
}

/// Whether `fd`, opened below `root`, is (or is inside) a name starting
/// with '.' there, by the kernel's names for both. Out of line: only paths
/// through a symlink come here.
#[cold]
#[inline(never)]
fn leads_to_hidden(root: &OwnedFd, fd: &OwnedFd) -> bool {
    let real = |fd: &OwnedFd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let (Ok(root), Ok(file)) = (real(root), real(fd)) else {
        return true;
    };
    match file.strip_prefix(&root) {
        Ok(rel) => rel
            .components()
            .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b".")),
        Err(_) => true,
    }
}

/// The fallback for kernels without openat2: open, then make sure the file
/// really is below the root by comparing the kernel's names for both. Kept
/// out of line: its path buffer stays off the stack of the usual path.
#[cold]
#[inline(never)]
fn open_checked(dir: &OwnedFd, path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    if path.starts_with('/') || path.split('/').any(|s| s == "..") {
        return Err(Errno::EXDEV);
    }
    let fd = openat(dir, path, flags, Mode::empty())?;
    let real = |fd: &OwnedFd| {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| Errno::EXDEV)
    };
    let (root, file) = (real(dir)?, real(&fd)?);
    if file == root || file.starts_with(&root) {
        Ok(fd)
    } else {
        Err(Errno::EXDEV)
    }
}

fn directory(
    cx: &Ctx<'_, '_>,
    route: &StaticRoute,
    root: &OwnedFd,
    target: &str,
    dir: OwnedFd,
) -> Result<Sent, Errno> {
    if !cx.req.path.ends_with('/') {
        // The slash form, so relative links inside the directory resolve.
        let mut loc = encode_path(&cx.req.path);
        loc.push('/');
        if let Some(q) = &cx.req.query {
            loc.push('?');
            loc.push_str(q);
        }
        let mut h = cx.head(301);
        h.header("Location", &loc);
        return response::error_with(cx.conn, h, cx.req.is_head(), cx.persist);
    }
    for name in &route.index {
        let path = if target == "." {
            name.clone()
        } else {
            format!("{target}/{name}")
        };
        if let Ok(fd) = open_visible(route, root, &path) {
            let st = fstat(&fd)?;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG {
                return file(cx, route, root, &path, fd, &st);
            }
        }
    }
    if route.autoindex {
        return listing(cx, route, dir);
    }
    cx.error(403)
}

// ---------------------------------------------------------------------------
// Files

/// The representation chosen: the file itself or a precompressed sibling.
struct Variant {
    fd: OwnedFd,
    size: u64,
    mtime: i64,
    encoding: Option<&'static str>,
}

/// A precompressed sibling (`FILE.br`, `FILE.gz`) the client accepts, if
/// one exists. Out of line: the usual path keeps its stack small.
#[inline(never)]
fn precompressed(
    cx: &Ctx<'_, '_>,
    route: &StaticRoute,
    root: &OwnedFd,
    path: &str,
) -> Result<Option<Variant>, Errno> {
    let accepted = accepted_encodings(cx.req);
    for (enc, ext) in [("br", "br"), ("gzip", "gz")] {
        if !accepted.contains(&enc) {
            continue;
        }
        if let Ok(fd) = open_visible(route, root, &format!("{path}.{ext}")) {
            let st = fstat(&fd)?;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG {
                return Ok(Some(Variant {
                    fd,
                    size: st.st_size as u64,
                    mtime: st.st_mtime,
                    encoding: Some(enc),
                }));
            }
        }
    }
    Ok(None)
}

fn file(
    cx: &Ctx<'_, '_>,
    route: &StaticRoute,
    root: &OwnedFd,
    path: &str,
    fd: OwnedFd,
    st: &FileStat,
) -> Result<Sent, Errno> {
    let content_type = content_type(path);
    let mut v = Variant {
        fd,
        size: st.st_size as u64,
        mtime: st.st_mtime,
        encoding: None,
    };
    if route.precompressed {
        if let Some(p) = precompressed(cx, route, root, path)? {
            v = p;
        }
    }
    let size = v.size;
    let mtime = UNIX_EPOCH + Duration::from_secs(v.mtime.max(0) as u64);
    let etag = format!(
        "\"{:x}-{:x}{}\"",
        v.mtime,
        size,
        v.encoding
            .map_or("", |e| if e == "br" { "-br" } else { "-gz" })
    );
    let validators = |h: &mut Head| {
        h.header("ETag", &etag);
        h.header("Last-Modified", httpdate::fmt_http_date(mtime));
        if route.precompressed {
            h.header("Vary", "Accept-Encoding");
        }
    };

    match conditional(cx.req, &etag, mtime) {
        Some(304) => {
            let mut h = cx.head(304);
            validators(&mut h);
            return response::send(cx.conn, h, "", b"", true, cx.persist);
        }
        Some(status) => return cx.error(status),
        None => {}
    }

    let (status, start, len) = match byte_range(cx.req, size, &etag, mtime) {
        Range::Full => (200, 0, size),
        Range::Part(a, b) => (206, a, b - a + 1),
        Range::Unsatisfiable => {
            let mut h = cx.head(416);
            h.header("Content-Range", format!("bytes */{size}"));
            return response::error_with(cx.conn, h, cx.req.is_head(), cx.persist);
        }
    };
    let mut h = cx.head(status);
    h.header("Content-Type", content_type);
    validators(&mut h);
    h.header("Accept-Ranges", "bytes");
    if let Some(enc) = v.encoding {
        h.header("Content-Encoding", enc);
    }
    if status == 206 {
        h.header(
            "Content-Range",
            format!("bytes {}-{}/{}", start, start + len - 1, size),
        );
    }
    let out = h.finish(Some(len), cx.persist);
    cx.conn.mark_head(status, out.len());
    let with_body = !cx.req.is_head() && len > 0;
    cx.conn.write_all(&out, with_body)?;
    if with_body {
        cx.conn.sendfile(&v.fd, start as i64, len)?;
    }
    Ok(Sent {
        status,
        body_bytes: if with_body { len } else { 0 },
    })
}

pub fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let textual = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
        );
    if textual {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

/// Encodings the client accepts (q > 0), lower-cased.
fn accepted_encodings(req: &Request) -> Vec<&'static str> {
    let mut out = Vec::new();
    for t in req.tokens("accept-encoding") {
        let mut parts = t.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        if refused {
            continue;
        }
        match name {
            "br" => out.push("br"),
            "gzip" | "x-gzip" => out.push("gzip"),
            _ => {}
        }
    }
    out
}

/// RFC 9110 13.2.2: evaluate the preconditions in order. `Some(304 | 412)`
/// answers the request; `None` serves it.
fn conditional(req: &Request, etag: &str, mtime: SystemTime) -> Option<u16> {
    if let Some(v) = req.header_str("if-match") {
        if !etag_list_matches(v, etag, true) {
            return Some(412);
        }
    } else if let Some(t) = req
        .header_str("if-unmodified-since")
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        if mtime > t {
            return Some(412);
        }
    }
    if let Some(v) = req.header_str("if-none-match") {
        if etag_list_matches(v, etag, false) {
            return Some(304);
        }
    } else if let Some(t) = req
        .header_str("if-modified-since")
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        if mtime <= t {
            return Some(304);
        }
    }
    None
}

/// Does a list of entity tags (or `*`) match ours? Weak comparison ignores `W/`.
fn etag_list_matches(list: &str, etag: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    list.split(',')
        .map(str::trim)
        .any(|t| match t.strip_prefix("W/") {
            Some(weak) => !strong && weak == etag,
            None => t == etag,
        })
}

enum Range {
    Full,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// A single `bytes=` range is honoured; several ranges get the whole
/// representation (RFC 9110 14.2 lets a server ignore Range); a Range that
/// does not parse is ignored; one whose ranges all miss is 416.
fn byte_range(req: &Request, size: u64, etag: &str, mtime: SystemTime) -> Range {
    if req.method != "GET" {
        return Range::Full;
    }
    let Some(spec) = req.header_str("range") else {
        return Range::Full;
    };
    if let Some(ir) = req.header_str("if-range") {
        let ir = ir.trim();
        let fresh = if ir.starts_with('"') {
            ir == etag
        } else {
            httpdate::parse_http_date(ir).is_ok_and(|t| t == mtime)
        };
        if !fresh {
            return Range::Full;
        }
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    let mut parsed = Vec::new();
    for r in set.split(',').map(str::trim) {
        let Some((a, b)) = r.split_once('-') else {
            return Range::Full;
        };
        let num = |s: &str| {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let range = match (a.is_empty(), b.is_empty()) {
            (false, _) => {
                let Some(first) = num(a) else {
                    return Range::Full;
                };
                let last = if b.is_empty() { None } else { Some(num(b)) };
                match last {
                    Some(None) => return Range::Full,
                    Some(Some(l)) if l < first => return Range::Full,
                    Some(Some(l)) => (first < size).then(|| (first, l.min(size - 1))),
                    None => (first < size).then(|| (first, size - 1)),
                }
            }
            (true, false) => {
                let Some(n) = num(b) else { return Range::Full };
                (n > 0 && size > 0).then(|| (size - n.min(size), size - 1))
            }
            (true, true) => return Range::Full,
        };
        parsed.push(range);
    }
    let satisfiable: Vec<(u64, u64)> = parsed.into_iter().flatten().collect();
    match satisfiable.as_slice() {
        [] => Range::Unsatisfiable,
        [(a, b)] => Range::Part(*a, *b),
        _ => Range::Full,
    }
}

// ---------------------------------------------------------------------------
// Directory listings

fn listing(cx: &Ctx<'_, '_>, route: &StaticRoute, dir: OwnedFd) -> Result<Sent, Errno> {
    let probe = nix::unistd::dup(&dir)?;
    let mut d = nix::dir::Dir::from_fd(dir)?;
    let mut entries: Vec<(String, bool)> = Vec::new();
    for e in d.iter().flatten() {
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." || (!route.dotfiles && name.starts_with('.')) {
            continue;
        }
        let is_dir = match e.file_type() {
            Some(t) => t == nix::dir::Type::Directory,
            None => nix::sys::stat::fstatat(probe.as_fd(), name, nix::fcntl::AtFlags::empty())
                .is_ok_and(|s| {
                    SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                }),
        };
        entries.push((name.to_string(), is_dir));
    }
    entries.sort();
    let title = html_escape(&cx.req.path);
    let mut html = String::with_capacity(256 + entries.len() * 64);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if cx.req.path != "/" {
        html.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for (name, is_dir) in &entries {
        let slash = if *is_dir { "/" } else { "" };
        let _ = writeln!(
            html,
            "<li><a href=\"./{}{slash}\">{}{slash}</a></li>",
            html_escape(&encode_path(name)),
            html_escape(name)
        );
    }
    html.push_str("</ul>\n</body></html>\n");
    response::send(
        cx.conn,
        cx.head(200),
        "text/html; charset=utf-8",
        html.as_bytes(),
        cx.req.is_head(),
        cx.persist,
    )
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode a decoded path for a URL (keeps '/' and the safe characters).
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert!(etag_list_matches("\"a\", \"b\"", "\"b\"", true));
        assert!(etag_list_matches("W/\"b\"", "\"b\"", false));
        assert!(!etag_list_matches("W/\"b\"", "\"b\"", true));
        assert!(etag_list_matches("*", "\"x\"", true));
    }

    /// The fallback for kernels without openat2 refuses what openat2 would.
    #[test]
    fn checked_open_stays_beneath() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("in.txt"), "in").unwrap();
        std::fs::write(dir.path().join("out.txt"), "out").unwrap();
        std::os::unix::fs::symlink("../out.txt", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("in.txt", root.join("alias")).unwrap();
        let fd =
            nix::fcntl::open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let flags = OFlag::O_RDONLY;
        assert!(open_checked(&fd, "in.txt", flags).is_ok());
        assert!(open_checked(&fd, "alias", flags).is_ok());
        assert_eq!(open_checked(&fd, "up", flags).unwrap_err(), Errno::EXDEV);
        assert_eq!(
            open_checked(&fd, "etc/passwd", flags).unwrap_err(),
            Errno::EXDEV
        );
        assert_eq!(
            open_checked(&fd, "../out.txt", flags).unwrap_err(),
            Errno::EXDEV
        );
        assert_eq!(
            open_checked(&fd, "/etc/passwd", flags).unwrap_err(),
            Errno::EXDEV
        );
        // And openat2 itself, where the kernel has it.
        assert!(matches!(
            open_beneath(&fd, "up"),
            Err(Errno::EXDEV) | Err(Errno::ELOOP)
        ));
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_path("/a b/%/ü"), "/a%20b/%25/%C3%BC");
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
