//! Where a CGI request body waits for its script: the worker reads the whole
//! body before it starts the script (the answer depends on it, and the
//! script gets exactly `CONTENT_LENGTH` bytes on stdin), so it must be kept
//! somewhere, and a large one must not be kept in memory: a worker's memory
//! is a host's memory, times `max_connections`.
//!
//! A body starts in a memfd (no file system involved, nothing to clean up).
//! Once it passes `[limits] cgi_body_in_memory` (64 KiB by default), what it
//! holds so far moves to an unlinked file in `[server] temp_dir` (`O_TMPFILE`,
//! `/var/tmp` by default: never visible by name, so nothing is left behind
//! whatever happens to the worker), and the rest follows it there. Either way
//! the result is one close-on-exec descriptor, positioned at 0, and the
//! length: the script's stdin.
//!
//! A failure (the temporary file cannot be made or written: the directory
//! gone, a full disk) is logged once here, and the body's reader answers
//! 500.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::Mode;
use nix::unistd::{lseek, Whence};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::Rc;

/// Where a body too large for memory goes: `[server] temp_dir` by name (a
/// worker), or by a descriptor the supervisor sent (the gate; open for as
/// long as a spool may need it).
#[derive(Clone)]
pub enum Dir<'a> {
    Path(&'a Path),
    Fd(Rc<OwnedFd>),
}

impl std::fmt::Display for Dir<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dir::Path(p) => write!(f, "{}", p.display()),
            Dir::Fd(_) => f.write_str("temp_dir"),
        }
    }
}

/// A request body on its way in.
pub struct Spool<'a> {
    fd: Option<OwnedFd>,
    len: u64,
    in_memory: u64,
    on_disk: bool,
    dir: Option<Dir<'a>>,
}

impl<'a> Spool<'a> {
    /// An empty body that stays in memory up to `in_memory` bytes, then
    /// moves to `dir`.
    pub fn new(in_memory: u64, dir: &'a Path) -> Spool<'a> {
        Spool {
            fd: None,
            len: 0,
            in_memory,
            on_disk: false,
            dir: Some(Dir::Path(dir)),
        }
    }

    /// A spool that goes on in `fd`, a memfd that holds `len` bytes already
    /// (written at its end); `dir`: where to move when it outgrows memory
    /// (`None`: it never does, and a body that would is refused).
    pub fn resume(fd: OwnedFd, len: u64, in_memory: u64, dir: Option<Dir<'a>>) -> Spool<'a> {
        Spool {
            fd: Some(fd),
            len,
            in_memory,
            on_disk: false,
            dir,
        }
    }

    /// Add `data` at the end; false (logged) if it could not be kept.
    pub fn write(&mut self, data: &[u8]) -> bool {
        let total = self.len.saturating_add(data.len() as u64);
        if total > self.in_memory && !self.on_disk {
            if let Err(e) = self.move_to_disk() {
                let dir = self
                    .dir
                    .as_ref()
                    .map_or("temp_dir".into(), |d| d.to_string());
                crate::error!(
                    "request body of more than {} bytes: cannot keep it in {dir}: {e}",
                    self.in_memory,
                );
                return false;
            }
        }
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => {
                crate::error!("request body: memfd_create: {e}");
                return false;
            }
        };
        if let Err(e) = write_all(fd, data) {
            let place = match (self.on_disk, &self.dir) {
                (true, Some(d)) => d.to_string(),
                _ => "memory".into(),
            };
            crate::error!("request body: cannot write it in {place}: {e}");
            return false;
        }
        self.len = total;
        true
    }

    /// The body: a descriptor positioned at 0, and its length.
    pub fn finish(mut self) -> Result<(OwnedFd, u64), Errno> {
        self.fd()?;
        let fd = self.fd.take().ok_or(Errno::EBADF)?;
        lseek(&fd, 0, Whence::SeekSet)?;
        Ok((fd, self.len))
    }

    /// The descriptor written to: a memfd until the body moves to disk.
    fn fd(&mut self) -> Result<&OwnedFd, Errno> {
        if self.fd.is_none() {
            self.fd = Some(memfd_create(c"lbaws-body", MFdFlags::MFD_CLOEXEC)?);
        }
        self.fd.as_ref().ok_or(Errno::EBADF)
    }

    /// Move what the body holds so far to an unlinked file in the directory.
    fn move_to_disk(&mut self) -> Result<(), Errno> {
        let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let mode = Mode::S_IRUSR | Mode::S_IWUSR;
        let file = match self.dir.as_ref().ok_or(Errno::ENOENT)? {
            Dir::Path(p) => nix::fcntl::open(*p, flags, mode)?,
            Dir::Fd(fd) => {
                // A directory removed since is gone, as it would be by name.
                if nix::sys::stat::fstat(fd.as_ref())?.st_nlink == 0 {
                    return Err(Errno::ENOENT);
                }
                nix::fcntl::openat(fd.as_ref(), ".", flags, mode)?
            }
        };
        if let Some(memory) = self.fd.take() {
            copy(&memory, &file, self.len)?;
        }
        self.fd = Some(file);
        self.on_disk = true;
        Ok(())
    }
}

/// The first `len` bytes of `from` to the end of `to`.
fn copy(from: &OwnedFd, to: &OwnedFd, len: u64) -> Result<(), Errno> {
    let mut buf = vec![0u8; len.min(16 << 10) as usize];
    let mut at: u64 = 0;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        let n = match nix::sys::uio::pread(from, &mut buf[..want], at as i64) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        write_all(to, &buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return Err(Errno::ENOSPC),
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn contents(fd: OwnedFd) -> Vec<u8> {
        let mut v = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut v).unwrap();
        v
    }

    fn place(fd: &OwnedFd) -> String {
        use std::os::fd::AsRawFd as _;
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::fs::read_link(link).unwrap().display().to_string()
    }

    #[test]
    fn small_bodies_stay_in_memory_large_ones_move_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(10, dir.path());
        assert!(s.write(b"01234") && s.write(b"56789"));
        let (fd, len) = s.finish().unwrap();
        assert!(
            place(&fd).starts_with("/memfd:lbaws-body"),
            "{}",
            place(&fd)
        );
        assert_eq!((len, contents(fd)), (10, b"0123456789".to_vec()));

        let mut s = Spool::new(10, dir.path());
        assert!(s.write(b"01234") && s.write(b"56789") && s.write(b"a"));
        assert!(s.write(&[b'z'; 40000]));
        let (fd, len) = s.finish().unwrap();
        let at = place(&fd);
        assert!(
            at.starts_with(&dir.path().display().to_string()) && at.ends_with("(deleted)"),
            "{at}"
        );
        let mut want = b"0123456789a".to_vec();
        want.extend_from_slice(&[b'z'; 40000]);
        assert_eq!((len, contents(fd)), (40011, want));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "unlinked"
        );
    }

    #[test]
    fn empty_and_zero_threshold_and_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (fd, len) = Spool::new(10, dir.path()).finish().unwrap();
        assert_eq!((len, contents(fd)), (0, Vec::new()));
        let mut s = Spool::new(0, dir.path());
        assert!(s.write(b"x"));
        let (fd, _) = s.finish().unwrap();
        assert!(place(&fd).ends_with("(deleted)"));
        let gone = dir.path().join("gone");
        let mut s = Spool::new(1, &gone);
        assert!(s.write(b"x"), "in memory");
        assert!(!s.write(b"y"), "no directory to move to");
    }
}
