//! The upgrade's check: the new binary, run from the descriptor the exec
//! will use, with the exec's arguments and environment (but the service
//! manager's variables) and a record of purpose Check, does what taking
//! over does before it holds a descriptor, and says so (`upgraded` in
//! src/upgraded.rs is its side). A child of the supervisor, reaped in the
//! loop like any other; its output is read when it ends.

use super::{cstrings, environment, record, Next, Purpose, State, Upgrade, ENV};
use crate::supervisor::Supervisor;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Most of the check's output read (its pipe holds 64 KiB).
const CHECK_OUTPUT: usize = 64 << 10;
/// Most of it in the log.
const CHECK_LOGGED: usize = 4096;

impl Supervisor {
    /// Whether `pid` is the upgrade's check (a child, but no worker).
    pub(in crate::supervisor) fn is_upgrade_check(&self, pid: Pid) -> bool {
        matches!(self.upgrade, Some(Upgrade::Checking { pid: p, .. }) if p == pid)
    }

    /// The check: the binary run with the arguments and the environment of
    /// the exec (but the service manager's variables), and a record of
    /// purpose Check; its output (stdout and stderr) into a pipe read when
    /// it ends.
    pub(super) fn spawn_check(&self, next: &Next) -> Result<(Pid, OwnedFd), Errno> {
        let record = self.check_record(next).to_memfd()?;
        let argv = cstrings(&self.image.args)?;
        let env = environment(&[(ENV.into(), record.as_raw_fd().to_string().into())])?;
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let exe = next.exe.as_raw_fd();
        // SAFETY: single-threaded; the child only moves descriptors, resets
        // signals and execs (or _exits), all prepared before the fork.
        match crate::sys::fork()? {
            ForkResult::Child => {
                // SAFETY: plain system calls on our own descriptors; nix's
                // dup2_std* replace only descriptors 1 and 2.
                let _ = nix::unistd::dup2_stdout(&w);
                let _ = nix::unistd::dup2_stderr(&w);
                crate::sys::close_all_but(&mut [0, 1, 2, record.as_raw_fd(), exe]);
                crate::sys::set_cloexec(record.as_raw_fd(), false);
                // A script (`#!`) is run as /dev/fd/N: N stays open.
                crate::sys::set_cloexec(exe, false);
                let _ = crate::signals::reset_in_child();
                let _ = nix::unistd::execveat(
                    next.exe.as_fd(),
                    c"",
                    &argv,
                    &env,
                    AtFlags::AT_EMPTY_PATH,
                );
                // SAFETY: _exit is always safe.
                crate::sys::exit_now(127)
            }
            ForkResult::Parent { child } => {
                drop(w);
                Ok((child, r))
            }
        }
    }

    /// What the check is asked: the same as the record of the exec, but
    /// naming no descriptor.
    fn check_record(&self, next: &Next) -> State {
        State {
            purpose: Purpose::Check,
            from_version: crate::VERSION.into(),
            exe: self.image.exe.clone(),
            exe_fd: -1,
            config: next.config.clone(),
            filters: crate::sandbox::attached(),
            daemon: self.daemon,
            stop_reader: -1,
            stop_writer: -1,
            park_rx: -1,
            park_tx: -1,
            scoreboard: -1,
            ..State::default()
        }
    }

    /// The check ended (reaped): on to the hand-over, or refused.
    pub(in crate::supervisor) fn check_ended(&mut self, code: i32, signal: Option<Signal>) {
        let Some(Upgrade::Checking { output, next, .. }) = self.upgrade.take() else {
            return;
        };
        let out = read_output(&output);
        let passed = out.contains(record::PASSED);
        let mut text = out.trim().replace('\n', "; ");
        if text.len() > CHECK_LOGGED {
            let mut cut = CHECK_LOGGED;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        let exe = self.image.exe.display();
        match (code, signal) {
            (0, None) if passed => self.begin_handover(next),
            (0, None) => self.upgrade_refused(&format!(
                "{exe} ended its check without saying it can take over: {text}"
            )),
            (127, None) if text.is_empty() => {
                self.upgrade_refused(&format!("{exe} could not be executed"))
            }
            // Another record format: this binary says it the way `check
            // --upgrade-format` does; 0.2.0 and 0.3.0 say "this binary reads".
            (_, None) if text.contains("this binary reads") && !text.contains(record::OTHER) => {
                self.upgrade_refused(&format!(
                    "{exe} {} (another hand-over format): {text}",
                    record::OTHER
                ))
            }
            (code, None) => {
                self.upgrade_refused(&format!("{exe} check exited with code {code}: {text}"))
            }
            (_, Some(sig)) => self.upgrade_refused(&format!("{exe} check was killed by {sig}")),
        }
    }
}

/// What the check wrote (at most `CHECK_OUTPUT`; it has ended).
fn read_output(output: &OwnedFd) -> String {
    let mut buf = vec![0u8; CHECK_OUTPUT];
    let mut n = 0;
    while n < buf.len() {
        match nix::unistd::read(output, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
