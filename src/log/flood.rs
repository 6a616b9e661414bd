//! Failures that come in floods: a fork failing at a process limit, new
//! connections refused for their source's share, the gate full. One log
//! line each would be thousands a second under load; instead each kind is
//! logged at most once a second, with how many there were since its last
//! line and the last one's detail. The first of a quiet spell is logged at
//! once. (s6-tcpserverd's rule: one line per event, but not a flood.)

use std::time::{Duration, Instant};

/// At most one line a second per kind.
const EVERY: Duration = Duration::from_secs(1);

pub struct Flood<D: Copy> {
    unlogged: u64,
    /// When the next line is due (while `unlogged` > 0), or may come.
    next: Option<Instant>,
    last: Option<D>,
}

impl<D: Copy> Flood<D> {
    pub const fn new() -> Flood<D> {
        Flood {
            unlogged: 0,
            next: None,
            last: None,
        }
    }

    /// One more; `detail` is what the line will name.
    pub fn note(&mut self, detail: D, now: Instant) {
        if self.unlogged == 0 {
            self.next = Some(self.next.map_or(now, |t| t.max(now)));
        }
        self.unlogged += 1;
        self.last = Some(detail);
    }

    /// When a line is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        (self.unlogged > 0).then_some(self.next).flatten()
    }

    /// The count and the last detail, if a line is due now.
    pub fn take(&mut self, now: Instant) -> Option<(u64, D)> {
        if self.due().is_none_or(|t| now < t) {
            return None;
        }
        let n = std::mem::take(&mut self.unlogged);
        self.next = Some(now + EVERY);
        self.last.map(|d| (n, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_a_line_a_second() {
        let t0 = Instant::now();
        let mut f: Flood<i32> = Flood::new();
        assert_eq!(f.due(), None);
        f.note(1, t0);
        assert_eq!(f.take(t0), Some((1, 1)), "the first at once");
        for i in 2..=100 {
            f.note(i, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(
            f.take(t0 + Duration::from_millis(500)),
            None,
            "not within the second"
        );
        assert_eq!(f.due(), Some(t0 + EVERY));
        assert_eq!(
            f.take(t0 + EVERY),
            Some((99, 100)),
            "then the count and the last"
        );
        assert_eq!(f.due(), None);
        // A new one long after is logged at once again.
        let later = t0 + Duration::from_secs(10);
        f.note(7, later);
        assert_eq!(f.take(later), Some((1, 7)));
    }
}
