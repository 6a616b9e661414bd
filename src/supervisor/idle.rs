//! Idle exit under socket activation (`[server] exit_idle_after`): with no
//! request in flight, no connection waiting, parked or closing in the gate,
//! and nothing else under way for that long, the supervisor stops as on
//! SIGTERM (`STOPPING=1`, exit 0). The listening sockets are systemd's:
//! they stay open in systemd, which queues the next connection and starts
//! lbaws again for it. With its own sockets lbaws never exits for being
//! idle (nobody would start it again).

use super::Supervisor;
use std::time::Instant;

impl Supervisor {
    /// Whether idle exit applies: configured, and every listener is
    /// systemd's (at least one).
    pub(super) fn idle_exit_applies(&self) -> bool {
        self.cfg.server.exit_idle_after.is_some()
            && !self.listeners.is_empty()
            && self.listeners.iter().all(|l| l.inherited)
    }

    fn is_idle(&self) -> bool {
        self.workers.is_empty()
            && self.carried.is_empty()
            && self.upgrade.is_none()
            && self.stop.is_none()
            && self.link.held().total() == 0
            && self.link.sends() == 0
    }

    /// When the supervisor exits for being idle, if nothing happens before.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        Some(self.idle_since? + self.cfg.server.exit_idle_after?)
    }

    /// Called on every turn of the loop: start, reset or act on the idle
    /// clock.
    pub(super) fn idle_timer(&mut self, now: Instant) {
        if !self.idle_exit_applies() || !self.is_idle() {
            self.idle_since = None;
            return;
        }
        let since = *self.idle_since.get_or_insert(now);
        let Some(after) = self.cfg.server.exit_idle_after else {
            return;
        };
        if now >= since + after {
            self.idle_since = None;
            crate::info!(
                "idle for {after:?} with sockets from systemd: exiting (systemd starts lbaws again on the next connection)"
            );
            self.begin_stop(false, "idle");
        }
    }
}
