//! What the supervisor tells and watches besides its loop: the STATUS
//! line for the service manager, its own counts copied into the scoreboard
//! for the status page, failures logged at most once a second, and
//! access-log lines lost by workers. (The stall backstop over the workers'
//! progress is the worker table's: `workers.rs`.)

use super::*;

impl Supervisor {
    /// What the status page shows of the supervisor's own counts, into the
    /// scoreboard (a few stores, every loop iteration).
    pub(super) fn publish(&self) {
        use crate::scoreboard::{set, Sup};
        let held = self.link.held();
        set(Sup::Waiting, (held.new + held.closing) as u64);
        set(Sup::Parked, held.parked as u64);
    }

    /// e.g. "lbaws 0.2.0: 3 active, 120 waiting, 40 parked; 10412 served,
    /// 0 refused; listening on 0.0.0.0:8080 (http)".
    pub(super) fn status_line(&self) -> String {
        let mut s = String::with_capacity(160);
        let _ = write!(s, "lbaws {}: ", crate::VERSION);
        if self.stop.is_some() {
            s.push_str("stopping: ");
        } else if self.upgrade.is_some() {
            s.push_str("upgrading: ");
        }
        let held = self.link.held();
        let _ = write!(
            s,
            "{} active, {} waiting, {} parked; {} served, {} refused",
            self.workers.len(),
            held.new + held.closing,
            held.parked,
            self.counters.served,
            refused_total()
        );
        if !self.listeners.is_empty() {
            s.push_str("; listening on ");
            for (i, l) in self.listeners.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{}", l.local);
            }
        }
        if !self.link.exists() && self.stop.is_none() {
            s.push_str("; gate down");
        }
        let lost = self.lost_lines + crate::scoreboard::lost_pending();
        if lost > 0 {
            let _ = write!(s, "; access log: {lost} line(s) lost");
        }
        if let Some(e) = &self.reload_error {
            let _ = write!(s, "; {e}");
        }
        if let Some(e) = &self.upgrade_error {
            let _ = write!(s, "; {e}");
        }
        s
    }

    /// Access-log lines the workers could not write: in STATUS at once, in
    /// the error log at most once a minute (with how many and why).
    /// Called on every turn of the loop, whether or not workers live (the
    /// gate writes lines too): a look at one counter.
    pub(super) fn report_lost_lines(&mut self, now: Instant) {
        let due = self.lost_logged.is_none_or(|t| now >= t + LOST_EVERY);
        if !due || crate::scoreboard::lost_pending() == 0 {
            return;
        }
        if let Some((n, errno)) = crate::scoreboard::take_lost() {
            self.lost_lines += n;
            crate::error!(
                "access log: {n} line(s) lost ({}); {} lost since start",
                Errno::from_raw(errno),
                self.lost_lines
            );
            self.lost_logged = Some(now);
            self.status_dirty = true;
        }
    }

    /// When lines lost and not yet reported may be (at most once a minute;
    /// `report_lost_lines` runs on every turn of the loop anyway).
    pub(super) fn lost_report_due(&self) -> Option<Instant> {
        match crate::scoreboard::lost_pending() {
            0 => None,
            _ => self.lost_logged.map(|t| t + LOST_EVERY),
        }
    }
}

/// Lost access-log lines are logged at most this often.
const LOST_EVERY: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Failures that come in floods, logged at most once a second each.
    pub(super) fn log_floods(&mut self, now: Instant) {
        let live = self.workers.len();
        if let Some((n, e)) = self.fork_failures.take(now) {
            crate::error!("fork failed {n} time(s) ({e}): answered 503; {live} workers live");
        }
        if let Some((n, (why, peer))) = self.refusals.take(now) {
            let why = match why {
                Refused::SourceShare => format!(
                    "its source held its share of the gate (max_pending_per_source = {})",
                    self.pending_per_source
                ),
                Refused::GateFull => "the gate could not take it".to_string(),
            };
            crate::warn!(
                "{n} connection(s) refused (503 where a request had come); the last from {}: {why}; {live} workers live",
                peer.host()
            );
        }
        if let Some((n, (peer, why))) = self.proxy_refusals.take(now) {
            let from = peer.map_or_else(
                || "waiting in the gate".into(),
                |p| format!("from {}", p.host()),
            );
            crate::warn!(
                "{n} connection(s) refused on a proxy_protocol listener; the last {from}: {why}"
            );
        }
    }
}

/// Connections refused so far, for every reason (the scoreboard's counts:
/// the gate adds its own, and they outlive an upgrade in place).
pub(super) fn refused_total() -> u64 {
    use crate::scoreboard::{get, Sup};
    [
        Sup::RefusedNoWorker,
        Sup::RefusedPerSource,
        Sup::RefusedGateFull,
        Sup::RefusedQueueTimeout,
        Sup::RefusedProxy,
    ]
    .into_iter()
    .map(get)
    .sum()
}
