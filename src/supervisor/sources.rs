//! Connections per source (`[server] max_connections_per_ip`): how many each
//! IPv4 address or IPv6 /64 has in workers and in the gate. The key comes from
//! `handoff::source_key`.
//!
//! An open-addressing table (linear probing, deletion by backward shift, so
//! no tombstones) in memory workers do not inherit (`SupervisorTable`): it
//! holds only sources with a live connection and grows by doubling, so ten
//! thousand sources cost about 0.5 MB here and nothing in any worker.

use crate::alloc::SupervisorTable;
use crate::handoff::NO_KEY;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Worker,
    Gate,
}

#[derive(Clone, Copy)]
struct Entry {
    key: u128,
    workers: u32,
    gate: u32,
}

/// A free slot's key (never a real key: those have a zero half).
const EMPTY: u128 = NO_KEY;

pub struct Sources {
    slots: SupervisorTable<Entry>,
    used: usize,
}

impl Sources {
    /// `None` when even the first small table cannot be had.
    pub fn new() -> Option<Sources> {
        Some(Sources {
            slots: table(256)?,
            used: 0,
        })
    }

    /// Connections from `key`, wherever they are.
    pub fn total(&self, key: u128) -> u32 {
        match self.find(key) {
            Ok(i) => {
                let e = &self.slots.as_slice()[i];
                e.workers + e.gate
            }
            Err(_) => 0,
        }
    }

    pub fn add(&mut self, key: u128, place: Place) {
        if key == NO_KEY {
            return;
        }
        if (self.used + 1) * 2 > self.slots.len()
            && !self.grow()
            && self.used + 1 >= self.slots.len()
        {
            // Full, and no memory for a larger table: this connection is not
            // counted (the limit is approximate until memory is back).
            return;
        }
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                self.slots.as_mut_slice()[i] = Entry {
                    key,
                    workers: 0,
                    gate: 0,
                };
                self.used += 1;
                i
            }
        };
        let e = &mut self.slots.as_mut_slice()[i];
        match place {
            Place::Worker => e.workers += 1,
            Place::Gate => e.gate += 1,
        }
    }

    pub fn remove(&mut self, key: u128, place: Place) {
        if key == NO_KEY {
            return;
        }
        let Ok(i) = self.find(key) else { return };
        let e = &mut self.slots.as_mut_slice()[i];
        match place {
            Place::Worker => e.workers = e.workers.saturating_sub(1),
            Place::Gate => e.gate = e.gate.saturating_sub(1),
        }
        if e.workers == 0 && e.gate == 0 {
            self.delete(i);
        }
    }

    /// The gate died and its connections with it.
    pub fn clear_gate(&mut self) {
        let n = self.slots.len();
        let Some(fresh) = table(n) else {
            // No memory for a copy: clear the gate's counts in place.
            let keys: Vec<u128> = self
                .slots
                .as_slice()
                .iter()
                .filter(|e| e.key != EMPTY && e.workers == 0)
                .map(|e| e.key)
                .collect();
            for e in self.slots.as_mut_slice() {
                e.gate = 0;
            }
            for k in keys {
                if let Ok(i) = self.find(k) {
                    self.delete(i);
                }
            }
            return;
        };
        let old = std::mem::replace(&mut self.slots, fresh);
        self.used = 0;
        for e in old.as_slice().iter().filter(|e| e.key != EMPTY) {
            for _ in 0..e.workers {
                self.add(e.key, Place::Worker);
            }
        }
    }

    /// Sources with at least one connection.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.used
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
    };
    // The mapping may round up; use exactly n (a power of two) slots.
    for _ in 0..n {
        t.push(free);
    }
    Some(t)
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
        assert_eq!((s.total(1), s.total(2), s.total(3), s.len()), (2, 1, 0, 2));
        s.remove(1, Place::Gate);
        s.remove(1, Place::Gate); // never below zero
        assert_eq!(s.total(1), 1);
        s.remove(1, Place::Worker);
        assert_eq!(
            (s.total(1), s.len()),
            (0, 1),
            "a source with nothing left is gone"
        );
        s.add(3, Place::Worker);
        s.clear_gate();
        assert_eq!((s.total(2), s.total(3), s.len()), (0, 1, 1));
    }

    #[test]
    fn many_sources_grow_and_shrink() {
        let mut s = Sources::new().unwrap();
        let keys: Vec<u128> = (0..20_000u128)
            .map(|i| 0xffff_0000_0000 | (i * 7919))
            .collect();
        for (n, k) in keys.iter().enumerate() {
            s.add(
                *k,
                if n % 2 == 0 {
                    Place::Worker
                } else {
                    Place::Gate
                },
            );
        }
        assert_eq!(s.len(), keys.len());
        // Delete every other one: the rest must still be found (backward shift).
        for k in keys.iter().step_by(2) {
            s.remove(*k, Place::Worker);
        }
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(s.total(*k), (n % 2) as u32, "key {n}");
        }
        for k in keys.iter().skip(1).step_by(2) {
            s.remove(*k, Place::Gate);
        }
        assert_eq!(s.len(), 0);
    }
}
