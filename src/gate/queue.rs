//! Complete requests waiting for a worker, a queue per source, oldest first.
//! The supervisor decides which source's turn it is (`Send(key)`); the gate
//! keeps each source's requests in the order they completed.
//!
//! Entries are (slot, generation) pairs; one whose connection has closed or
//! moved on stays until it reaches the front, or until a source's queue
//! holds more of them than live ones (then it is swept).

use std::collections::{HashMap, VecDeque};

#[derive(Default)]
struct Fifo {
    entries: VecDeque<(u32, u32)>,
    /// Entries still waiting (the rest are stale).
    live: usize,
}

#[derive(Default)]
pub(super) struct Queues {
    by_source: HashMap<u128, Fifo>,
}

impl Queues {
    pub(super) fn push(&mut self, key: u128, slot: u32, gen: u32) {
        let q = self.by_source.entry(key).or_default();
        q.entries.push_back((slot, gen));
        q.live += 1;
    }

    /// The oldest request of `key`'s still waiting (`waiting` says which
    /// entries are), taken off its queue.
    pub(super) fn pop(
        &mut self,
        key: u128,
        waiting: impl Fn(u32, u32) -> bool,
    ) -> Option<(u32, u32)> {
        let q = self.by_source.get_mut(&key)?;
        let mut found = None;
        while let Some((slot, gen)) = q.entries.pop_front() {
            if waiting(slot, gen) {
                found = Some((slot, gen));
                q.live -= 1;
                break;
            }
        }
        if q.live == 0 {
            self.by_source.remove(&key);
        }
        found
    }

    /// A request of `key`'s stopped waiting without a `Send` (closed,
    /// answered, handed over): its entry is stale now. `waiting` as for
    /// `pop`, for the sweep.
    pub(super) fn closed(&mut self, key: u128, waiting: impl Fn(u32, u32) -> bool) {
        let Some(q) = self.by_source.get_mut(&key) else {
            return;
        };
        q.live = q.live.saturating_sub(1);
        if q.live == 0 {
            self.by_source.remove(&key);
        } else if q.entries.len() > 2 * q.live + 16 {
            q.entries.retain(|&(s, g)| waiting(s, g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_per_source_and_stale_entries_skipped() {
        let mut q = Queues::default();
        for slot in 0..5 {
            q.push(7, slot, 0);
        }
        q.push(8, 9, 0);
        // Slot 1 closed while it waited.
        let waiting = |s: u32, _g: u32| s != 1;
        q.closed(7, waiting);
        assert_eq!(q.pop(7, waiting), Some((0, 0)));
        assert_eq!(q.pop(7, waiting), Some((2, 0)), "the closed one skipped");
        assert_eq!(q.pop(8, waiting), Some((9, 0)));
        assert_eq!(q.pop(8, waiting), None);
        assert_eq!(q.pop(7, waiting), Some((3, 0)));
        assert_eq!(q.pop(7, waiting), Some((4, 0)));
        assert_eq!(q.pop(7, waiting), None);
        assert!(q.by_source.is_empty());
    }

    #[test]
    fn stale_entries_are_swept() {
        let mut q = Queues::default();
        for slot in 0..100 {
            q.push(1, slot, 0);
        }
        let waiting = |s: u32, _g: u32| s >= 90;
        for _ in 0..90 {
            q.closed(1, waiting);
        }
        assert!(q.by_source[&1].entries.len() <= 2 * 10 + 16);
        let got: Vec<u32> = std::iter::from_fn(|| q.pop(1, waiting).map(|e| e.0)).collect();
        assert_eq!(got, (90..100).collect::<Vec<_>>());
    }
}
