//! Between the gate and the workers: what the gate reports (into the
//! per-source ledger), which waiting request gets the next free worker (the
//! ledger decides, `sources::next`), and the gate's start and end.

use super::gate_link::{Event, Pending};
use super::sources::{Answer, Place};
use super::Supervisor;
use crate::handoff::{GateLimits, Kind};
use crate::scoreboard::Sup;
use nix::sys::signal::Signal;
use std::time::Instant;

impl Supervisor {
    /// Everything the gate has said since the last look.
    pub(super) fn gate_events(&mut self) {
        while let Some(ev) = self.link.next_event() {
            self.status_dirty = true;
            match ev {
                Event::Conn { p, answer } => self.take_from_gate(p, answer),
                Event::Queued(key) => self.sources.queued(key),
                Event::Unqueued(key) => self.sources.unqueued(key),
                Event::Empty(key) => self.sources.answered(key, Answer::Empty),
                Event::Dropped(key) => self.sources.answered(key, Answer::Dropped),
                Event::Closed { key, proxy_refused } => {
                    self.sources.remove(key, Place::Gate);
                    if proxy_refused {
                        self.note_proxy_refused(
                            None,
                            "no valid PROXY header within header_timeout",
                        );
                    }
                }
                Event::Vanished { key, answer } => match answer {
                    true => self.sources.answered(key, Answer::Conn),
                    false => self.sources.remove(key, Place::Gate),
                },
                Event::Lost(p) => self.lost(p),
            }
        }
    }

    /// A connection from the gate: the request a worker was asked for, or
    /// (unasked) one whose PROXY header the gate read.
    fn take_from_gate(&mut self, p: Pending, answer: bool) {
        if self.handing_over() {
            return self.carry(p);
        }
        if answer {
            self.sources.answered(p.key, Answer::Conn);
            return self.fork_worker(p);
        }
        match p.meta.kind {
            // Its PROXY header was read in the gate: admitted only now,
            // under the client's address.
            Kind::Proxied => self.admit(p.conn, p.meta.peer, false),
            // Not asked for (the gate hands back only at an upgrade):
            // back to wait.
            _ => {
                self.sources.remove(p.key, Place::Gate);
                self.hand_to_gate(p);
            }
        }
    }

    /// Free workers to waiting requests, a source at a time in turn (see
    /// `sources`), while the ledger finds one that may have a worker.
    pub(super) fn dispatch(&mut self) {
        if self.handing_over() || !self.link.is_up() {
            return;
        }
        let reserve = self.cfg.server.worker_reserve;
        loop {
            let free = self.free_workers();
            if free == 0 {
                break;
            }
            let Some(key) = self.sources.next(free, reserve) else {
                break;
            };
            if !self.link.send(key) {
                // The link is full: it stays queued, for the next turn.
                self.sources.answered(key, Answer::Empty);
                break;
            }
        }
        crate::scoreboard::set(Sup::Queued, self.sources.queued_total());
    }

    /// Start the gate with the running configuration's settings.
    pub(super) fn spawn_gate(&mut self) {
        let limits = self.gate_limits();
        self.link
            .spawn(limits, self.log_fds, &self.cfg.server.temp_dir);
        self.status_dirty = true;
    }

    /// What the gate needs of the configuration.
    pub(super) fn gate_limits(&self) -> GateLimits {
        let l = &self.cfg.limits;
        GateLimits {
            header_timeout: l.header_timeout,
            idle_timeout: l.keepalive_timeout.saturating_sub(l.park_after),
            queue_timeout: l.queue_timeout,
            max_header_bytes: l.max_header_bytes,
            max_line_bytes: super::conns::max_line_bytes(&self.cfg),
            max_pending: self.max_pending,
            server_header: self.cfg.server.server_header,
            max_body_bytes: l.max_body_bytes,
            body_timeout: l.body_timeout,
            min_body_rate: l.min_body_rate,
            body_in_memory: l.cgi_body_in_memory,
            min_send_rate: l.min_send_rate,
        }
    }

    /// The gate was reaped. What it had not taken, or had sent, is still
    /// ours: complete requests get workers where they may, the rest waits
    /// for the next gate (started at once, or after a pause if this one
    /// died young).
    pub(super) fn gate_ended(&mut self, code: i32, signal: Option<Signal>) {
        let how = match signal {
            Some(sig) => format!("killed by {sig}"),
            None => format!("exited with code {code}"),
        };
        let pid = self.link.pid();
        let left = self.link.ended();
        self.sources.clear_gate();
        self.status_dirty = true;
        let mut back = left.back;
        if self.handing_over() {
            // An upgrade in place: it has handed everything back.
            for p in left.complete.into_iter().chain(back) {
                self.carry(p);
            }
            if left.lost > 0 && signal.is_some() {
                crate::warn!(
                    "upgrade: {} waiting connection(s) lost with the gate",
                    left.lost
                );
            }
            return self.exec_upgrade();
        }
        if self.stop.is_some() {
            // Stopping: what it left is answered (503) and closed.
            crate::debug!("gate ended ({how})");
            for p in left.complete.into_iter().chain(back) {
                if p.meta.kind != Kind::Closing {
                    self.refuse(p.conn, p.meta.peer, super::Refused::GateFull);
                }
            }
            return;
        }
        let reserve = self.cfg.server.worker_reserve;
        for p in left.complete {
            match p.meta.kind {
                Kind::Proxied => self.admit(p.conn, p.meta.peer, false),
                _ if self.sources.may_take(p.key, self.free_workers(), reserve) => {
                    self.fork_worker(p)
                }
                _ => back.push(p),
            }
        }
        crate::error!(
            "gate {} {how}; {} waiting connection(s) lost; restarting it{}",
            pid.map_or(0, |p| p.as_raw()),
            left.lost,
            if left.young { " in 1s" } else { "" }
        );
        if left.young {
            self.link.restart_later();
        } else {
            self.spawn_gate();
        }
        // The new gate takes them (without a gate yet: refused, answered).
        for p in back {
            self.hand_to_gate(p);
        }
    }

    /// The gate's timer: started again after a pause.
    pub(super) fn gate_timer(&mut self, now: Instant) {
        if self.link.restart_due().is_some_and(|t| now >= t) {
            self.spawn_gate();
        }
    }
}
