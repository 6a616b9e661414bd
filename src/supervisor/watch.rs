//! What the supervisor tells and watches besides its loop: the STATUS
//! line for the service manager, its own counts copied into the scoreboard
//! for the status page, the stall backstop over the workers' progress, and
//! access-log lines lost by workers.

use super::*;

impl Supervisor {
    /// What the status page shows of the supervisor's own counts, into the
    /// scoreboard (a few stores, every loop iteration).
    pub(super) fn publish(&self) {
        use crate::scoreboard::{set, Sup};
        let (waiting, parked) = self
            .gate
            .as_ref()
            .map_or((0, 0), |g| (g.new + g.closing, g.parked));
        let c = &self.counters;
        set(Sup::Waiting, waiting as u64);
        set(Sup::Parked, parked as u64);
        set(Sup::RefusedNoWorker, c.refused);
        set(Sup::RefusedPerSource, c.over_limit);
        set(Sup::RefusedGateFull, c.shed);
        set(Sup::Parks, c.parked);
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
        let (waiting, parked) = self
            .gate
            .as_ref()
            .map_or((0, 0), |g| (g.new + g.closing, g.parked));
        let c = &self.counters;
        let _ = write!(
            s,
            "{} active, {waiting} waiting, {parked} parked; {} served, {} refused",
            self.workers.len(),
            c.served,
            c.refused + c.over_limit + c.shed + c.proxy_refused
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
        if self.gate.is_none() && self.stop.is_none() {
            s.push_str("; gate down");
        }
        if self.lost_lines > 0 {
            let _ = write!(s, "; access log: {} line(s) lost", self.lost_lines);
        }
        if let Some(e) = &self.reload_error {
            let _ = write!(s, "; {e}");
        }
        if let Some(e) = &self.upgrade_error {
            let _ = write!(s, "; {e}");
        }
        s
    }

    /// Once a second while there are workers: the stall backstop, and the
    /// access log's losses.
    pub(super) fn check_workers(&mut self, now: Instant) {
        let backstop = self.cfg.stall_backstop();
        let now_ms = crate::scoreboard::now_ms();
        for w in self.workers.as_mut_slice() {
            match w.stalled {
                None => {
                    let idle =
                        now_ms.saturating_sub(crate::scoreboard::last_progress(w.slot as usize));
                    if idle > backstop.as_millis() as u64 {
                        crate::warn!(
                            "worker {} (peer {}) made no progress for {:.1}s (stall_timeout): terminating it",
                            w.pid,
                            w.peer,
                            idle as f64 / 1000.0
                        );
                        let _ = nix::sys::signal::kill(w.pid, nix::sys::signal::Signal::SIGTERM);
                        w.stalled = Some(now);
                    }
                }
                Some(t) if now >= t + lifecycle::KILL_GRACE => {
                    let _ = nix::sys::signal::kill(w.pid, nix::sys::signal::Signal::SIGKILL);
                    w.stalled = Some(now + Duration::from_secs(3600));
                }
                Some(_) => {}
            }
        }
        self.report_lost_lines(now);
        self.next_check = (!self.workers.is_empty()).then(|| now + Duration::from_secs(1));
    }

    /// Access-log lines the workers could not write: in STATUS at once, in
    /// the error log at most once a minute (with how many and why).
    pub(super) fn report_lost_lines(&mut self, now: Instant) {
        const EVERY: Duration = Duration::from_secs(60);
        if self.lost_logged.is_some_and(|t| now < t + EVERY) {
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
}
