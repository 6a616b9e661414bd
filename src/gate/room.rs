//! Room at `max_pending`: which connection goes when the gate is full, and
//! the refusals, logged at most once a second each.
//!
//! The cheapest goes first, oldest first within its class:
//! 1. one answered already and lingering (its answer is on its way);
//! 2. a new connection that sent nothing (it is not a request yet);
//! 3. a parked connection, idle (its client may come back later: a new
//!    connection then);
//! 4. one with half a head: answered 408 (at once: what has arrived is
//!    read, so the close is not a reset).
//!
//! A complete request (queued, or on its way to a worker) is never closed
//! to make room: when nothing else is left, the newcomer is refused instead
//! (503, if it sent anything).

use super::*;
use crate::listen::Peer;
use crate::log::flood::Flood;
use crate::scoreboard::Sup;
use std::collections::VecDeque;

/// What a connection would cost to close, in eviction order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Lingering = 0,
    Silent = 1,
    Idle = 2,
    Partial = 3,
    /// Never evicted.
    Kept = 4,
}

const ORDER: [Class; 4] = [Class::Lingering, Class::Silent, Class::Idle, Class::Partial];

/// The connections of each class, oldest first; an entry whose connection
/// has since closed or changed class is skipped (and swept when they pile
/// up).
#[derive(Default)]
pub(super) struct Room {
    fifos: [VecDeque<(u32, u32)>; 4],
}

impl Room {
    /// (slot, gen) has just entered `class`.
    pub(super) fn entered(&mut self, slot: u32, gen: u32, class: Class) {
        if class != Class::Kept {
            self.fifos[class as usize].push_back((slot, gen));
        }
    }

    fn len(&self) -> usize {
        self.fifos.iter().map(VecDeque::len).sum()
    }
}

/// The gate's refusals and evictions, for the log.
pub(super) struct Refusals {
    full: Flood<Peer>,
    evicted: Flood<Peer>,
    queue_timeout: Flood<Peer>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            full: Flood::new(),
            evicted: Flood::new(),
            queue_timeout: Flood::new(),
        }
    }
}

impl Refusals {
    pub(super) fn queue_timeout(&mut self, peer: Peer, now: Instant) {
        self.queue_timeout.note(peer, now);
    }

    /// When a line is due.
    pub(super) fn due(&self) -> Option<Instant> {
        [
            self.full.due(),
            self.evicted.due(),
            self.queue_timeout.due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn log(&mut self, now: Instant) {
        if let Some((n, peer)) = self.full.take(now) {
            crate::warn!(
                "gate: full (max_pending) of complete requests: {n} new connection(s) refused (503), the last from {}",
                peer.host()
            );
        }
        if let Some((n, peer)) = self.evicted.take(now) {
            crate::warn!(
                "gate: full (max_pending): {n} connection(s) closed to make room (idle, or half a head: 408), the last from {}",
                peer.host()
            );
        }
        if let Some((n, peer)) = self.queue_timeout.take(now) {
            crate::warn!(
                "gate: {n} request(s) waited queue_timeout for a worker: answered 503, the last from {}",
                peer.host()
            );
        }
    }
}

impl Gate {
    pub(super) fn class_of(&self, slot: u32) -> Class {
        let h = self.held(slot);
        match h.state {
            State::Lingering => Class::Lingering,
            State::Waiting if h.seen == 0 && h.meta.kind == Kind::Parked => Class::Idle,
            State::Waiting if h.seen == 0 => Class::Silent,
            State::Waiting | State::Body => Class::Partial,
            State::Queued | State::Sending | State::Returning | State::Tail => Class::Kept,
        }
    }

    /// At `max_pending`: close the cheapest connection; false if there is
    /// none that may go.
    pub(super) fn make_room(&mut self) -> bool {
        if self.room.len() > 4 * self.live + 1024 {
            self.sweep_room();
        }
        for class in ORDER {
            while let Some((slot, gen)) = self.room.fifos[class as usize].pop_front() {
                if self.is_live(slot, gen) && self.class_of(slot) == class {
                    self.evict(slot, class);
                    return true;
                }
            }
        }
        false
    }

    fn evict(&mut self, slot: u32, class: Class) {
        let h = self.held(slot);
        let (fd, peer) = (raw(h), h.meta.peer);
        crate::scoreboard::add(Sup::Evicted, 1);
        self.refusals.evicted.note(peer, Instant::now());
        if class == Class::Partial {
            let sh = self.limits.server_header;
            answer::refuse_now(fd, peer, 408, sh, &mut self.peek);
        }
        self.close(slot);
    }

    /// No room, and nothing may go to make some: the newcomer is refused.
    pub(super) fn refuse_newcomer(&mut self, fd: OwnedFd, meta: Meta) {
        crate::scoreboard::add(Sup::RefusedGateFull, 1);
        self.refusals.full.note(meta.peer, Instant::now());
        if meta.kind != Kind::Closing {
            let sh = self.limits.server_header;
            answer::refuse_now(fd.as_raw_fd(), meta.peer, 503, sh, &mut self.peek);
        }
        drop(fd);
        self.out
            .note(handoff::meta_key(&meta), meta.kind, Note::Closed);
    }

    /// Drop the entries of connections gone or moved on.
    fn sweep_room(&mut self) {
        for class in ORDER {
            let fifo = std::mem::take(&mut self.room.fifos[class as usize]);
            self.room.fifos[class as usize] = fifo
                .into_iter()
                .filter(|&(s, g)| self.is_live(s, g) && self.class_of(s) == class)
                .collect();
        }
    }
}
