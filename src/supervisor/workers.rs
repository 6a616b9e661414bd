//! The worker table, its one owner: the live workers and their scoreboard
//! slots, the slots free for the next ones, the stall watch over them (once
//! a second while any live), and how a worker's end reads in the log.
//!
//! Every table is in memory workers do not inherit (`SupervisorTable`),
//! sized for `max_connections` at start and grown only by a reload (before
//! it changes anything, so that a reload short of memory is refused whole).

use crate::alloc::SupervisorTable;
use crate::listen::Peer;
use crate::scoreboard::Sup;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// After SIGTERM to a stalled worker, time until SIGKILL.
const KILL_GRACE: Duration = super::lifecycle::KILL_GRACE;

#[derive(Clone, Copy)]
pub(super) struct Worker {
    pub pid: Pid,
    pub peer: Peer,
    pub started: Instant,
    /// Its connection's source key; `NO_KEY` once the connection was parked
    /// (it is counted in the gate then).
    pub key: u128,
    /// Its scoreboard slot.
    pub slot: u32,
    /// When the stall backstop sent it SIGTERM.
    pub stalled: Option<Instant>,
}

pub(super) struct Workers {
    live: SupervisorTable<Worker>,
    /// Scoreboard slots free for the next workers, and the first never used.
    free_slots: SupervisorTable<u32>,
    next_slot: u32,
    /// The next stall watch, while there are workers.
    next_check: Option<Instant>,
}

/// The larger tables a new `max_connections` needs (`None`: the present
/// ones will do), made before anything changes.
pub(super) struct Grown {
    live: Option<SupervisorTable<Worker>>,
    free_slots: Option<SupervisorTable<u32>>,
}

impl Workers {
    /// Room for `max` workers; `None` without the memory.
    pub(super) fn new(max: usize) -> Option<Workers> {
        Some(Workers {
            live: SupervisorTable::try_with_capacity(max)?,
            free_slots: SupervisorTable::try_with_capacity(max)?,
            next_slot: 0,
            next_check: None,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub(super) fn all(&self) -> &[Worker] {
        self.live.as_slice()
    }

    pub(super) fn is_worker(&self, pid: Pid) -> bool {
        self.live.as_slice().iter().any(|w| w.pid == pid)
    }

    /// The scoreboard slot the next worker gets.
    pub(super) fn next_slot(&self) -> u32 {
        match self.free_slots.len() {
            0 => self.next_slot,
            n => self.free_slots.as_slice()[n - 1],
        }
    }

    /// A worker was forked in [`next_slot`](Self::next_slot).
    pub(super) fn forked(&mut self, w: Worker) {
        // Cannot be full: nothing forks at max_connections (a reload may
        // lower it below the live count; the table keeps its room).
        self.live.push(w);
        if self.free_slots.is_empty() {
            self.next_slot += 1;
        } else {
            self.free_slots.pop();
        }
        if self.next_check.is_none() {
            self.next_check = Some(Instant::now() + Duration::from_secs(1));
        }
    }

    /// Worker `pid` handed its connection back (parked): its end no longer
    /// ends a connection. Returns the source key it held.
    pub(super) fn parked(&mut self, pid: u32) -> Option<u128> {
        let w = self
            .live
            .as_mut_slice()
            .iter_mut()
            .find(|w| w.pid.as_raw() as u32 == pid)?;
        Some(std::mem::replace(&mut w.key, crate::handoff::NO_KEY))
    }

    /// Worker `pid` was reaped: out of the table, its slot free again.
    pub(super) fn reaped(&mut self, pid: Pid) -> Option<Worker> {
        let i = self.live.as_slice().iter().position(|w| w.pid == pid)?;
        let w = self.live.swap_remove(i);
        self.free_slots.push(w.slot);
        crate::scoreboard::set_pid(w.slot as usize, 0);
        Some(w)
    }

    pub(super) fn signal_all(&self, sig: Signal) {
        for w in self.live.as_slice() {
            let _ = kill(w.pid, sig);
        }
    }

    /// When the stall watch is next due.
    pub(super) fn check_due(&self) -> Option<Instant> {
        self.next_check
    }

    /// The stall backstop (when due): a worker with no progress for
    /// `backstop` is sent SIGTERM, and SIGKILL `KILL_GRACE` later.
    pub(super) fn watch(&mut self, now: Instant, backstop: Duration) {
        if self.next_check.is_none_or(|t| now < t) {
            return;
        }
        let now_ms = crate::scoreboard::now_ms();
        for w in self.live.as_mut_slice() {
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
                        let _ = kill(w.pid, Signal::SIGTERM);
                        w.stalled = Some(now);
                    }
                }
                Some(t) if now >= t + KILL_GRACE => {
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.stalled = Some(now + Duration::from_secs(3600));
                }
                Some(_) => {}
            }
        }
        self.next_check = (!self.live.is_empty()).then(|| now + Duration::from_secs(1));
    }

    /// The tables `max` workers need, if larger than these.
    pub(super) fn grown_for(&self, max: usize) -> Result<Grown, String> {
        let nomem = |what: &str| format!("cannot allocate the {what} table: out of memory");
        let live = match self.live.capacity() < max {
            true => {
                let mut bigger =
                    SupervisorTable::try_with_capacity(max).ok_or_else(|| nomem("worker"))?;
                for w in self.live.as_slice() {
                    bigger.push(*w);
                }
                Some(bigger)
            }
            false => None,
        };
        let free_slots = match self.free_slots.capacity() < max {
            true => {
                let mut bigger =
                    SupervisorTable::try_with_capacity(max).ok_or_else(|| nomem("slot"))?;
                for s in self.free_slots.as_slice() {
                    bigger.push(*s);
                }
                Some(bigger)
            }
            false => None,
        };
        Ok(Grown { live, free_slots })
    }

    /// Take the tables `grown_for` made.
    pub(super) fn grow(&mut self, g: Grown) {
        if let Some(t) = g.live {
            self.live = t;
        }
        if let Some(t) = g.free_slots {
            self.free_slots = t;
        }
    }

    /// For an upgrade in place: the slots' state.
    pub(super) fn slots(&self) -> (u32, Vec<u32>) {
        (self.next_slot, self.free_slots.as_slice().to_vec())
    }

    /// After an upgrade in place: the workers and slots the previous image
    /// had.
    pub(super) fn adopt(&mut self, workers: &[Worker], next_slot: u32, free_slots: &[u32]) {
        for w in workers {
            self.live.push(*w);
        }
        for s in free_slots {
            if self.free_slots.len() < self.free_slots.capacity() {
                self.free_slots.push(*s);
            }
        }
        self.next_slot = next_slot;
        if !self.live.is_empty() {
            self.next_check = Some(Instant::now() + Duration::from_secs(1));
        }
    }
}

/// The log line of a worker's end (abnormal ones; a clean exit says
/// nothing), and its count on the status page. `stopping`: lbaws is
/// terminating its workers, so a signal is expected.
pub(super) fn log_end(w: &Worker, code: i32, signal: Option<(Signal, bool)>, stopping: bool) {
    crate::scoreboard::add(exit_cause(code, signal, w.stalled.is_some(), w.slot), 1);
    let (pid, peer) = (w.pid, w.peer);
    let age = w.started.elapsed().as_secs_f64();
    match signal {
        // Killed by us while stopping: expected.
        Some((sig, _)) if stopping => {
            crate::info!("worker {pid} (peer {peer}) ended by {sig} at shutdown after {age:.3}s")
        }
        Some((Signal::SIGSYS, _)) if crate::scoreboard::denied_call(w.slot as usize).is_some() => {
            let nr = crate::scoreboard::denied_call(w.slot as usize).unwrap_or(-1);
            crate::warn!(
                "worker {pid} (peer {peer}) killed by its sandbox: system call {} ({nr}) refused after {age:.3}s",
                crate::sandbox::syscall_name(nr).unwrap_or("unknown")
            )
        }
        Some((sig, core)) => crate::warn!(
            "worker {pid} (peer {peer}) killed by signal {} ({sig}){} after {age:.3}s",
            sig as i32,
            if core { ", core dumped" } else { "" }
        ),
        None if code != 0 => crate::warn!(
            "worker {pid} (peer {peer}) exited with code {code} ({}) after {age:.3}s",
            exit_meaning(code)
        ),
        None => {}
    }
}

fn exit_meaning(code: i32) -> &'static str {
    match code {
        crate::http::EXIT_SOFTWARE => "internal error",
        crate::http::EXIT_OSERR => "post-fork set-up failed",
        crate::http::EXIT_IOERR => "I/O error on the connection",
        _ => "unknown",
    }
}

/// How a worker ended, for the status page's count of worker exits.
fn exit_cause(code: i32, signal: Option<(Signal, bool)>, stalled: bool, slot: u32) -> Sup {
    match signal {
        Some(_) if stalled => Sup::ExitStalled,
        Some((Signal::SIGSYS, _)) if crate::scoreboard::denied_call(slot as usize).is_some() => {
            Sup::ExitSandbox
        }
        Some(_) => Sup::ExitSignal,
        None if code == 0 => Sup::ExitOk,
        None => Sup::ExitError,
    }
}
