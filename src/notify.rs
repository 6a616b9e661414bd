//! The service manager's notification socket (sd_notify(3)), via `sd-notify`.
//!
//! Only the supervisor notifies (systemd's default `NotifyAccess=main`): the
//! variables are read once here and then removed from the environment, so no
//! worker or CGI script inherits them. Nothing is sent when `NOTIFY_SOCKET` was
//! unset. `sd-notify` connects to a path; an abstract socket (`@name`) is
//! handled here, since the crate passes the `@` on as a file name.

use sd_notify::NotifyState;
use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<OsString>,
    /// How often to send WATCHDOG=1 (half of `WATCHDOG_USEC`), if asked to.
    pub watchdog: Option<Duration>,
    /// `WATCHDOG_USEC` as it was given.
    watchdog_usec: Option<u64>,
}

impl Notifier {
    /// Take `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        let interval = sd_notify::watchdog_enabled().filter(|d| d.as_micros() >= 2);
        // SAFETY: single-threaded (the supervisor never starts a thread).
        crate::sys::remove_env("NOTIFY_SOCKET");
        crate::sys::remove_env("WATCHDOG_USEC");
        crate::sys::remove_env("WATCHDOG_PID");
        Notifier {
            socket,
            watchdog: interval.map(|d| d / 2),
            watchdog_usec: interval.map(|d| d.as_micros() as u64),
        }
    }

    /// The variables this notifier was started with, for the image an
    /// upgrade in place executes (same pid, so `WATCHDOG_PID` holds).
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        let mut v = Vec::new();
        if let Some(s) = &self.socket {
            v.push(("NOTIFY_SOCKET".into(), s.clone()));
        }
        if let Some(usec) = self.watchdog_usec {
            v.push(("WATCHDOG_USEC".into(), usec.to_string().into()));
            v.push(("WATCHDOG_PID".into(), std::process::id().to_string().into()));
        }
        v
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(path) = &self.socket else { return };
        let result = if let Some(name) = path.as_encoded_bytes().strip_prefix(b"@") {
            send_abstract(name, states)
        } else {
            // The crate reads the variable itself; hand it back for the call.
            // SAFETY: single-threaded, see above.
            crate::sys::set_env("NOTIFY_SOCKET", path);
            let r = sd_notify::notify(states);
            crate::sys::remove_env("NOTIFY_SOCKET");
            r
        };
        if let Err(e) = result {
            crate::debug!("sd_notify: {e}");
        }
    }

    /// READY=1 with the status line, and WATCHDOG=1 under a watchdog: an
    /// image an upgrade in place started pings as it becomes ready, so
    /// that the interval never lapses across the exec (see `watchdog`).
    pub fn ready(&self, status: &str) {
        match self.watchdog {
            Some(_) => self.send(&[
                NotifyState::Ready,
                NotifyState::Status(status),
                NotifyState::Watchdog,
            ]),
            None => self.send(&[NotifyState::Ready, NotifyState::Status(status)]),
        }
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// WATCHDOG=1, under a watchdog. Besides every half interval, sent by
    /// an image right before it executes the next one and by the next one
    /// as soon as it runs: each image's own schedule starts from its
    /// READY=1, and two upgrades within one interval must not let it lapse.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}

fn send_abstract(name: &[u8], states: &[NotifyState<'_>]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let sock = UnixDatagram::unbound()?;
    sock.connect_addr(&addr)?;
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    sock.send(msg.as_bytes())?;
    Ok(())
}
