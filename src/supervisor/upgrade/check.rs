//! The upgrade's check: the new binary run as `NEW check [--config F]
//! --upgrade-format N`, a child of the supervisor reaped in the loop like
//! any other; its output is read when it ends.

use super::{cstring, environment, Upgrade, FORMAT};
use crate::supervisor::Supervisor;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult, Pid};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Most of the check's output kept for the log.
const CHECK_OUTPUT: usize = 4096;

impl Supervisor {
    /// Whether `pid` is the upgrade's check (a child, but no worker).
    pub(in crate::supervisor) fn is_upgrade_check(&self, pid: Pid) -> bool {
        matches!(self.upgrade, Some(Upgrade::Checking { pid: p, .. }) if p == pid)
    }

    /// `NEW check [--config F] --upgrade-format N`, its output (stdout and
    /// stderr) into a pipe read when it ends.
    pub(super) fn spawn_check(&self) -> Result<(Pid, OwnedFd), Errno> {
        use nix::fcntl::OFlag;
        let exe = cstring(self.image.exe.as_os_str().as_bytes())?;
        let mut argv = vec![exe.clone(), cstring(b"check")?];
        if let Some(p) = &self.cfg_path {
            argv.push(cstring(b"--config")?);
            argv.push(cstring(p.as_os_str().as_bytes())?);
        }
        argv.push(cstring(b"--upgrade-format")?);
        argv.push(cstring(FORMAT.to_string().as_bytes())?);
        let env = environment(&[])?;
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // SAFETY: single-threaded; the child only moves descriptors, resets
        // signals and execs (or _exits), all prepared before the fork.
        match unsafe { fork() }? {
            ForkResult::Child => {
                let w = w.as_raw_fd();
                // SAFETY: plain system calls on our own descriptors.
                unsafe {
                    libc::dup2(w, 1);
                    libc::dup2(w, 2);
                }
                crate::sys::close_all_but(&mut [0, 1, 2]);
                let _ = crate::signals::reset_in_child();
                let _ = nix::unistd::execve(&exe, &argv, &env);
                // SAFETY: _exit is always safe.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                drop(w);
                Ok((child, r))
            }
        }
    }

    /// The check ended (reaped): on to the hand-over, or refused.
    pub(in crate::supervisor) fn check_ended(&mut self, code: i32, signal: Option<Signal>) {
        let Some(Upgrade::Checking { output, .. }) = self.upgrade.take() else {
            return;
        };
        let mut buf = [0u8; CHECK_OUTPUT];
        let n = nix::unistd::read(&output, &mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        let text = text.trim().replace('\n', "; ");
        match (code, signal) {
            (0, None) => self.begin_handover(),
            (127, None) if text.is_empty() => self.upgrade_refused(&format!(
                "{} could not be executed",
                self.image.exe.display()
            )),
            (code, None) => self.upgrade_refused(&format!(
                "{} check exited with code {code}: {text}",
                self.image.exe.display()
            )),
            (_, Some(sig)) => self.upgrade_refused(&format!(
                "{} check was killed by {sig}",
                self.image.exe.display()
            )),
        }
    }
}
