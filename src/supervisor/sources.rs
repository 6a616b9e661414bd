//! The per-source ledger, and fair admission's policy (the one owner of both).
//!
//! A *source* is an IPv4 address, an IPv6 /64, every Unix-socket peer
//! together, or the client a PROXY header names (`handoff::source_key`). For
//! each source with anything under way the ledger counts its connections in
//! the gate, its workers, its complete requests waiting for a worker
//! (*queued*, in the gate) and the workers asked of the gate for it (*sent*:
//! a `Send` whose connection has not arrived yet). From those counts it
//! answers the three questions of admission:
//!
//! - May a new connection from this source wait in the gate? While the
//!   source holds fewer than `max_pending_per_source` there.
//! - May this source have a free worker? Always while more than
//!   `worker_reserve` workers are free; the last `worker_reserve` go only to
//!   sources that hold fewer than `worker_reserve` workers. So one source
//!   alone may use all but `worker_reserve` workers, and any other source
//!   still finds one however long the first holds its workers (large
//!   downloads, slow scripts).
//! - Which waiting request gets the next free worker? The sources with
//!   queued requests take turns (round robin, a request each), skipping a
//!   source the reserve rule refuses; within a source, oldest first (the
//!   gate keeps each source's requests in order).
//!
//! Memory: an open-addressing table (linear probing, deletion by backward
//! shift, so no tombstones) and a ring of the sources with queued requests,
//! both in memory workers do not inherit (`SupervisorTable`), holding only
//! sources with something under way and growing by doubling: ten thousand
//! sources cost about 1 MB here and nothing in any worker.

use crate::alloc::SupervisorTable;
use crate::handoff::NO_KEY;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Worker,
    Gate,
}

/// How the gate answered a `Send`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// With the connection: it leaves the gate for a worker.
    Conn,
    /// With nothing: the request it was for had closed (its `Unqueued`
    /// came first, and counted it off once too often); or the `Send`
    /// could not be made (the request still waits).
    Empty,
    /// With nothing: the request was taken for it and closed before it
    /// could be sent (it closes as a plain connection).
    Dropped,
}

#[derive(Clone, Copy)]
struct Entry {
    key: u128,
    workers: u32,
    gate: u32,
    /// Queued in the gate as far as the supervisor knows: may dip below
    /// zero for a moment when a request closes while a `Send` for it is on
    /// its way (the gate's `Empty` answer evens it out).
    queued: i32,
    sent: u32,
    /// In the ring (at most once).
    in_ring: bool,
}

impl Entry {
    fn idle(&self) -> bool {
        self.workers == 0 && self.gate == 0 && self.queued == 0 && self.sent == 0 && !self.in_ring
    }
}

/// A free slot's key (never a real key).
const EMPTY: u128 = NO_KEY;

pub struct Sources {
    slots: SupervisorTable<Entry>,
    used: usize,
    /// Sources that had queued requests when they entered, in turn order.
    ring: Ring,
    /// Requests queued in all, as far as the supervisor knows.
    queued: i64,
}

impl Sources {
    /// `None` when even the first small tables cannot be had.
    pub fn new() -> Option<Sources> {
        Some(Sources {
            slots: table(256)?,
            used: 0,
            ring: Ring::new(256)?,
            queued: 0,
        })
    }

    fn entry(&self, key: u128) -> Option<&Entry> {
        self.find(key).ok().map(|i| &self.slots.as_slice()[i])
    }

    /// The source's connections in the gate (queued ones included).
    pub fn in_gate(&self, key: u128) -> u32 {
        self.entry(key).map_or(0, |e| e.gate)
    }

    /// The source's workers, and those asked of the gate for it.
    pub fn workers(&self, key: u128) -> u32 {
        self.entry(key).map_or(0, |e| e.workers + e.sent)
    }

    /// Complete requests waiting for a worker, in all.
    pub fn queued_total(&self) -> u64 {
        self.queued.max(0) as u64
    }

    /// Whether `key` may have one of `free` free workers, `reserve` of
    /// which are kept for sources that hold fewer than `reserve`.
    pub fn may_take(&self, key: u128, free: usize, reserve: usize) -> bool {
        free > 0 && (free > reserve || (self.workers(key) as usize) < reserve)
    }

    pub fn add(&mut self, key: u128, place: Place) {
        self.update(key, |e| match place {
            Place::Worker => e.workers += 1,
            Place::Gate => e.gate += 1,
        });
    }

    pub fn remove(&mut self, key: u128, place: Place) {
        self.update(key, |e| match place {
            Place::Worker => e.workers = e.workers.saturating_sub(1),
            Place::Gate => e.gate = e.gate.saturating_sub(1),
        });
    }

    /// The gate says: a request of `key`'s is complete and waits.
    pub fn queued(&mut self, key: u128) {
        self.queued += 1;
        self.update(key, |e| e.queued += 1);
        self.enter_ring(key);
    }

    /// A request of `key`'s stopped waiting in the gate (answered 503 at
    /// `queue_timeout`, or closed; its connection's end comes as its own
    /// `remove`).
    pub fn unqueued(&mut self, key: u128) {
        self.queued -= 1;
        self.update(key, |e| e.queued -= 1);
    }

    /// The gate answered a `Send` for `key`.
    pub fn answered(&mut self, key: u128, how: Answer) {
        if how == Answer::Empty {
            self.queued += 1;
        }
        self.update(key, |e| {
            e.sent = e.sent.saturating_sub(1);
            match how {
                Answer::Conn => e.gate = e.gate.saturating_sub(1),
                Answer::Empty => e.queued += 1,
                Answer::Dropped => {}
            }
        });
        if how == Answer::Empty {
            self.enter_ring(key);
        }
    }

    /// The next source whose oldest queued request gets one of `free`
    /// workers (see the module docs), counted as sent; `None` if no queued
    /// request may have one.
    pub fn next(&mut self, free: usize, reserve: usize) -> Option<u128> {
        for _ in 0..self.ring.len() {
            let key = self.ring.pop()?;
            let Ok(i) = self.find(key) else { continue };
            let e = self.slots.as_slice()[i];
            if e.queued <= 0 {
                self.update(key, |e| e.in_ring = false);
                continue;
            }
            if !self.may_take(key, free, reserve) {
                self.ring.push(key); // its turn comes again
                continue;
            }
            self.queued -= 1;
            let e = &mut self.slots.as_mut_slice()[i];
            e.queued -= 1;
            e.sent += 1;
            if e.queued > 0 {
                self.ring.push(key); // to the back: the others go first
            } else {
                e.in_ring = false;
            }
            return Some(key);
        }
        None
    }

    /// The gate died and what it held with it: only workers remain.
    pub fn clear_gate(&mut self) {
        let Some(fresh) = table(self.slots.len()) else {
            return self.clear_gate_in_place();
        };
        let old = std::mem::replace(&mut self.slots, fresh);
        self.used = 0;
        self.ring.clear();
        self.queued = 0;
        for e in old.as_slice().iter().filter(|e| e.key != EMPTY) {
            for _ in 0..e.workers {
                self.add(e.key, Place::Worker);
            }
        }
    }

    /// `clear_gate` without the memory for a fresh table.
    fn clear_gate_in_place(&mut self) {
        self.ring.clear();
        self.queued = 0;
        for e in self.slots.as_mut_slice() {
            (e.gate, e.queued, e.sent, e.in_ring) = (0, 0, 0, false);
        }
        let mut i = 0;
        while i < self.slots.len() {
            let e = self.slots.as_slice()[i];
            if e.key != EMPTY && e.idle() {
                self.delete(i); // may move a later entry into i: look again
            } else {
                i += 1;
            }
        }
    }

    /// Sources with something under way.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.used
    }

    fn enter_ring(&mut self, key: u128) {
        let Ok(i) = self.find(key) else { return };
        let e = &mut self.slots.as_mut_slice()[i];
        if e.queued > 0 && !e.in_ring {
            e.in_ring = true;
            if !self.ring.push(key) {
                // No memory for a larger ring: it waits for the next change.
                self.slots.as_mut_slice()[i].in_ring = false;
            }
        }
    }

    /// Change `key`'s entry (made if need be), then drop it if nothing is
    /// left under way for it.
    fn update(&mut self, key: u128, f: impl FnOnce(&mut Entry)) {
        if key == NO_KEY {
            return;
        }
        let i = match self.find(key) {
            Ok(i) => i,
            Err(_) => {
                let mut fresh = Entry {
                    key,
                    workers: 0,
                    gate: 0,
                    queued: 0,
                    sent: 0,
                    in_ring: false,
                };
                f(&mut fresh);
                if fresh.idle() {
                    return; // e.g. a removal of what was never counted
                }
                if (self.used + 1) * 2 > self.slots.len()
                    && !self.grow()
                    && self.used + 1 >= self.slots.len()
                {
                    // Full, and no memory for a larger table: not counted
                    // (admission is approximate until memory is back).
                    return;
                }
                let Err(i) = self.find(key) else {
                    unreachable!("absent above")
                };
                self.slots.as_mut_slice()[i] = fresh;
                self.used += 1;
                return;
            }
        };
        let e = &mut self.slots.as_mut_slice()[i];
        f(e);
        if e.idle() {
            self.delete(i);
        }
    }

    fn home(&self, key: u128) -> usize {
        let h = ((key as u64) ^ ((key >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & (self.slots.len() - 1)
    }

    /// `Ok(slot)` of `key`, or `Err(free slot)` where it would go.
    fn find(&self, key: u128) -> Result<usize, usize> {
        let s = self.slots.as_slice();
        let mut i = self.home(key);
        loop {
            if s[i].key == key {
                return Ok(i);
            }
            if s[i].key == EMPTY {
                return Err(i);
            }
            i = (i + 1) & (s.len() - 1);
        }
    }

    /// Empty slot `i`, moving back later entries of the same run that would
    /// no longer be found past the hole.
    fn delete(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        self.used -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.slots.as_slice()[j];
            if e.key == EMPTY {
                break;
            }
            let home = self.home(e.key);
            // Entry j may fill the hole at i unless its home lies cyclically
            // in (i, j].
            let between = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !between {
                self.slots.as_mut_slice()[i] = e;
                i = j;
            }
        }
        self.slots.as_mut_slice()[i].key = EMPTY;
    }

    /// Double the table; false if the memory cannot be had.
    fn grow(&mut self) -> bool {
        let n = self.slots.len() * 2;
        let Some(bigger) = table(n) else {
            return false;
        };
        let old = std::mem::replace(&mut self.slots, bigger);
        self.used = 0;
        for e in old.as_slice().iter().filter(|e| e.key != EMPTY) {
            let Err(i) = self.find(e.key) else {
                unreachable!("keys are unique")
            };
            self.slots.as_mut_slice()[i] = *e;
            self.used += 1;
        }
        true
    }
}

/// `n` (a power of two) free slots.
fn table(n: usize) -> Option<SupervisorTable<Entry>> {
    let mut t = SupervisorTable::try_with_capacity(n)?;
    let free = Entry {
        key: EMPTY,
        workers: 0,
        gate: 0,
        queued: 0,
        sent: 0,
        in_ring: false,
    };
    // The mapping may round up; use exactly n (a power of two) slots.
    for _ in 0..n {
        t.push(free);
    }
    Some(t)
}

/// A queue of keys in a circular buffer that doubles when full.
struct Ring {
    buf: SupervisorTable<u128>,
    head: usize,
    len: usize,
}

impl Ring {
    fn new(n: usize) -> Option<Ring> {
        let mut buf = SupervisorTable::try_with_capacity(n)?;
        for _ in 0..n {
            buf.push(EMPTY);
        }
        Some(Ring {
            buf,
            head: 0,
            len: 0,
        })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        (self.head, self.len) = (0, 0);
    }

    fn pop(&mut self) -> Option<u128> {
        if self.len == 0 {
            return None;
        }
        let k = self.buf.as_slice()[self.head];
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(k)
    }

    /// False if it is full and no memory can be had for a larger one.
    fn push(&mut self, key: u128) -> bool {
        let cap = self.buf.len();
        if self.len == cap {
            let Some(mut bigger) = Ring::new(cap * 2) else {
                return false;
            };
            while let Some(k) = self.pop() {
                bigger.push(k);
            }
            *self = bigger;
        }
        let cap = self.buf.len();
        let at = (self.head + self.len) % cap;
        self.buf.as_mut_slice()[at] = key;
        self.len += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_connections() {
        let mut s = Sources::new().unwrap();
        s.add(1, Place::Worker);
        s.add(1, Place::Gate);
        s.add(2, Place::Gate);
        s.add(NO_KEY, Place::Worker);
        assert_eq!(
            (s.workers(1), s.in_gate(1), s.in_gate(2), s.len()),
            (1, 1, 1, 2)
        );
        s.remove(1, Place::Gate);
        s.remove(1, Place::Gate); // never below zero
        assert_eq!(s.in_gate(1), 0);
        s.remove(1, Place::Worker);
        assert_eq!(s.len(), 1, "a source with nothing left is gone");
        s.add(3, Place::Worker);
        s.clear_gate();
        assert_eq!((s.in_gate(2), s.workers(3), s.len()), (0, 1, 1));
    }

    #[test]
    fn many_sources_grow_and_shrink() {
        let mut s = Sources::new().unwrap();
        let keys: Vec<u128> = (0..20_000u128)
            .map(|i| 0xffff_0000_0000 | (i * 7919))
            .collect();
        for (n, k) in keys.iter().enumerate() {
            let place = if n % 2 == 0 {
                Place::Worker
            } else {
                Place::Gate
            };
            s.add(*k, place);
        }
        assert_eq!(s.len(), keys.len());
        // Delete every other one: the rest must still be found (backward shift).
        for k in keys.iter().step_by(2) {
            s.remove(*k, Place::Worker);
        }
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(s.in_gate(*k), (n % 2) as u32, "key {n}");
        }
        for k in keys.iter().skip(1).step_by(2) {
            s.remove(*k, Place::Gate);
        }
        assert_eq!(s.len(), 0);
    }

    /// A request of `key`'s completes in the gate.
    fn arrive(s: &mut Sources, key: u128) {
        s.add(key, Place::Gate);
        s.queued(key);
    }

    /// The gate answers a `Send` with the connection, and a worker is forked.
    fn serve(s: &mut Sources, key: u128) {
        s.answered(key, Answer::Conn);
        s.add(key, Place::Worker);
    }

    #[test]
    fn queued_sources_take_turns() {
        let mut s = Sources::new().unwrap();
        for _ in 0..3 {
            arrive(&mut s, 1);
        }
        arrive(&mut s, 2);
        arrive(&mut s, 3);
        arrive(&mut s, 2);
        assert_eq!(s.queued_total(), 6);
        let order: Vec<u128> = std::iter::from_fn(|| s.next(100, 0)).collect();
        assert_eq!(order, [1, 2, 3, 1, 2, 1], "a request each, in turn");
        assert_eq!(s.queued_total(), 0);
        assert_eq!(s.workers(1), 3, "sent counts as taken");
        for k in order {
            serve(&mut s, k);
        }
        assert_eq!((s.workers(1), s.in_gate(1), s.workers(2)), (3, 0, 2));
    }

    #[test]
    fn the_reserve_is_kept_for_the_light_sources() {
        let mut s = Sources::new().unwrap();
        // Source 1 holds 4 workers; the reserve is 2.
        for _ in 0..4 {
            s.add(1, Place::Worker);
        }
        assert!(s.may_take(1, 3, 2), "more free than the reserve");
        assert!(
            !s.may_take(1, 2, 2),
            "the reserve is not for a heavy source"
        );
        assert!(s.may_take(2, 1, 2), "a light source takes the last one");
        assert!(!s.may_take(2, 0, 2), "none free");
        assert!(s.may_take(1, 1, 0), "no reserve: anyone");
        arrive(&mut s, 1);
        arrive(&mut s, 2);
        assert_eq!(s.next(2, 2), Some(2), "the heavy source is skipped");
        assert_eq!(s.next(2, 2), None, "and waits");
        assert_eq!(s.next(3, 2), Some(1), "until more are free");
    }

    #[test]
    fn a_request_closed_on_the_way_is_evened_out() {
        let mut s = Sources::new().unwrap();
        arrive(&mut s, 5);
        assert_eq!(s.next(1, 0), Some(5));
        // It timed out in the gate before the Send arrived...
        s.unqueued(5);
        s.remove(5, Place::Gate);
        assert_eq!(s.queued_total(), 0);
        assert_eq!(s.next(1, 0), None);
        // ...so the gate answers Empty.
        s.answered(5, Answer::Empty);
        assert_eq!((s.queued_total(), s.workers(5), s.len()), (0, 0, 0));
        // Taken for the Send, then closed before it went: Dropped.
        arrive(&mut s, 4);
        assert_eq!(s.next(1, 0), Some(4));
        s.answered(4, Answer::Dropped);
        s.remove(4, Place::Gate);
        assert_eq!((s.queued_total(), s.len()), (0, 0));
        // And a Send answered Empty while another waits puts it back.
        arrive(&mut s, 6);
        arrive(&mut s, 6);
        assert_eq!(s.next(2, 0), Some(6));
        s.answered(6, Answer::Empty);
        assert_eq!(s.queued_total(), 2);
        assert_eq!(s.next(2, 0), Some(6));
        assert_eq!(s.next(2, 0), Some(6));
        assert_eq!(s.next(2, 0), None);
    }

    #[test]
    fn the_ring_grows() {
        let mut s = Sources::new().unwrap();
        let n = 1000u128;
        for k in 0..n {
            arrive(&mut s, 0xffff_0000_0000 | k);
        }
        let got: Vec<u128> = std::iter::from_fn(|| s.next(usize::MAX, 0)).collect();
        assert_eq!(got.len() as u128, n);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "first come, first turn"
        );
    }
}
