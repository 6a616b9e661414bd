//! The gate's life, seen from the supervisor: starting it (again, if it
//! dies), its end, and what it is told (limits, stop, hand-over).

use super::lifecycle::GATE_RESTART;
use super::{GateProc, Supervisor};
use crate::handoff::{self, GateLimits, Msg};
use crate::signals;
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

impl Supervisor {
    /// Start the gate (at start-up, and again if it dies). Without it, new
    /// connections without a complete head are closed and idle ones are not
    /// parked; serving goes on.
    pub(super) fn spawn_gate(&mut self) {
        let pairs =
            crate::sys::seqpacket_pair().and_then(|a| Ok((a, crate::sys::seqpacket_pair()?)));
        let ((ctl, gate_ctl), (ready, gate_ready)) = match pairs {
            Ok(p) => p,
            Err(e) => return self.gate_failed(&format!("socketpair: {e}")),
        };
        let limits = self.gate_limits();
        let logs = self.log_fds;
        // SAFETY: single-threaded; the child only closes descriptors, resets
        // signals and runs the gate's loop, leaving through _exit.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Everything of the supervisor's goes but the gate's own ends
                // and the logs (connections the supervisor held too).
                let mut keep = [
                    gate_ctl.as_raw_fd(),
                    gate_ready.as_raw_fd(),
                    logs[0],
                    logs[1],
                ];
                crate::sys::close_all_but(&mut keep);
                std::mem::forget((ctl, ready)); // closed just now
                if signals::set_up_child().is_err() {
                    // SAFETY: _exit is always safe.
                    unsafe { libc::_exit(crate::http::EXIT_OSERR) };
                }
                crate::gate::run(gate_ctl, gate_ready, limits, self.cfg.server.server_header)
            }
            Ok(ForkResult::Parent { child }) => {
                drop((gate_ctl, gate_ready));
                crate::debug!("gate started: pid {child}");
                self.gate = Some(GateProc {
                    pid: child,
                    ctl,
                    ready,
                    new: 0,
                    parked: 0,
                    closing: 0,
                    gone: false,
                });
                self.gate_started = Some(Instant::now());
                self.status_dirty = true;
            }
            Err(e) => self.gate_failed(&format!("fork: {e}")),
        }
    }

    pub(super) fn gate_failed(&mut self, why: &str) {
        crate::error!("cannot start the gate ({why}); trying again in {GATE_RESTART:?}");
        self.gate_restart_at = Some(Instant::now() + GATE_RESTART);
    }

    pub(super) fn gate_ended(&mut self, code: i32, signal: Option<(Signal, bool)>) {
        // Complete heads it sent just before it ended are still queued on
        // its ready channel, each the last reference to its connection:
        // take them before the channel goes.
        let mut late = Vec::new();
        while let Some(r) = self.next_ready() {
            late.push(r);
        }
        let g = self.gate.take().expect("the gate");
        self.sources.clear_gate();
        self.status_dirty = true;
        if self.handing_over() {
            // An upgrade in place: it has handed everything back.
            for (conn, meta, _) in late {
                self.carry(conn, meta);
            }
            let left = g.new + g.parked + g.closing;
            if signal.is_some() && left > 0 {
                crate::warn!("upgrade: {left} waiting connection(s) lost with the gate");
            }
            return self.exec_upgrade();
        }
        let mut waiting = Vec::new();
        for (conn, meta, key) in late {
            if self.workers.len() < self.cfg.server.max_connections {
                self.fork_worker(conn, meta, key);
            } else {
                waiting.push((conn, meta, key));
            }
        }
        // What waited for room on its channel waits for the next gate.
        waiting.extend(self.outbox.drain(..));
        if self.stop.is_some() {
            crate::debug!("gate {} ended", g.pid);
            self.counters.shed += waiting.len() as u64;
            return;
        }
        let how = match signal {
            Some((sig, _)) => format!("killed by {sig}"),
            None => format!("exited with code {code}"),
        };
        let lost = g.new + g.parked + g.closing;
        // Restarted at once, unless it just was: then after a pause.
        let soon = self
            .gate_started
            .is_some_and(|t| t.elapsed() < GATE_RESTART);
        crate::error!(
            "gate {} {how}; {lost} waiting connection(s) lost; restarting it{}",
            g.pid,
            if soon { " in 1s" } else { "" }
        );
        if soon {
            self.gate_restart_at = Some(Instant::now() + GATE_RESTART);
        } else {
            self.spawn_gate();
        }
        // The new gate finds their heads complete and sends them back.
        for (conn, meta, key) in waiting {
            self.hand_to_gate(conn, meta, key);
        }
    }

    /// What the gate needs of the configuration.
    pub(super) fn gate_limits(&self) -> GateLimits {
        let l = &self.cfg.limits;
        GateLimits {
            header_timeout: l.header_timeout,
            idle_timeout: l.keepalive_timeout.saturating_sub(l.park_after),
            max_header_bytes: l.max_header_bytes,
            max_line_bytes: super::conns::max_line_bytes(&self.cfg),
            max_pending: self.max_pending,
        }
    }

    pub(super) fn tell_gate(&mut self, msg: &Msg) {
        if let Some(g) = self.gate.as_ref().filter(|g| !g.gone) {
            let mut buf = [0u8; 64]; // Limits and Stop are short
            let n = handoff::encode(msg, &mut buf);
            if let Err(e) = crate::sys::send_with_fd(g.ctl.as_fd(), &buf[..n], None) {
                crate::error!("cannot tell the gate {msg:?}: {e}");
            }
        }
    }
}
