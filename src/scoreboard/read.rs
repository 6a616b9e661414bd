//! Reading the scoreboard whole, for the status page: the counters, and the
//! live workers' slots (those below the high-water mark with a pid, and the
//! reading worker's own).

use super::{header, label_of, site_row, slot, State, Sup, BUCKETS_US, SITE_ROWS, SUP_COUNT};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;

/// The header's counters at one moment (each read on its own: they may be
/// a request apart from each other).
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Responses by status class, 1xx to 5xx.
    pub requests: [u64; 5],
    pub bytes_sent: u64,
    /// Request bytes read from clients.
    pub bytes_received: u64,
    /// Access-log lines lost since the scoreboard was made.
    pub lines_lost: u64,
    pub duration_us: u64,
    /// Per bucket, not cumulative; the last is +Inf.
    pub buckets: [u64; BUCKETS_US.len() + 1],
    sup: [u64; SUP_COUNT],
}

impl Totals {
    pub fn get(&self, what: Sup) -> u64 {
        self.sup[what as usize]
    }
}

/// One site's counters (a row of the table: `other` first).
#[derive(Debug, Default, Clone)]
pub struct SiteTotals {
    pub label: String,
    /// Responses by status class, 1xx to 5xx.
    pub requests: [u64; 5],
    pub bytes_sent: u64,
    pub duration_us: u64,
    /// Per bucket, not cumulative; the last is +Inf.
    pub buckets: [u64; BUCKETS_US.len() + 1],
}

/// Every site row in use.
pub fn sites() -> Vec<SiteTotals> {
    let Some(h) = header() else {
        return Vec::new();
    };
    let used = (h.site_rows.load(Ordering::Relaxed) as usize).min(SITE_ROWS);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    (0..used)
        .filter_map(site_row)
        .map(|r| {
            let mut t = SiteTotals {
                label: label_of(r),
                bytes_sent: load(&r.bytes_sent),
                duration_us: load(&r.duration_us),
                ..SiteTotals::default()
            };
            for (v, a) in t.requests.iter_mut().zip(&r.requests) {
                *v = load(a);
            }
            for (v, a) in t.buckets.iter_mut().zip(&r.buckets) {
                *v = load(a);
            }
            t
        })
        .collect()
}

/// One live worker.
#[derive(Debug, Clone)]
pub struct Worker {
    pub slot: usize,
    pub pid: u32,
    pub state: State,
    /// `None` for a Unix socket peer.
    pub peer: Option<(IpAddr, u16)>,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Milliseconds since the worker was forked, and since its last progress.
    pub age_ms: u64,
    pub idle_ms: u64,
    /// Microseconds since its current request began (0: none yet).
    pub request_us: u64,
    /// The request line it is answering (empty while the head is read).
    pub line: Vec<u8>,
    /// The site of that request (`other` until it is known).
    pub site: String,
}

pub fn totals() -> Totals {
    let mut t = Totals::default();
    let Some(h) = header() else { return t };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    for (v, a) in t.requests.iter_mut().zip(&h.requests) {
        *v = load(a);
    }
    t.bytes_sent = load(&h.bytes_sent);
    t.bytes_received = load(&h.bytes_received);
    t.lines_lost = load(&h.lost_total);
    t.duration_us = load(&h.duration_us);
    for (v, a) in t.buckets.iter_mut().zip(&h.buckets) {
        *v = load(a);
    }
    for (v, a) in t.sup.iter_mut().zip(&h.sup) {
        *v = load(a);
    }
    t
}

/// The live workers, by slot.
pub fn workers() -> Vec<Worker> {
    let high = header().map_or(0, |h| {
        h.sup[Sup::HighWater as usize].load(Ordering::Relaxed)
    });
    let now_ms = super::now_ms();
    let now_us = super::now_us();
    // The worker reading this (the status page's) is live, whether or not
    // the supervisor has stored its pid yet: a worker may answer before its
    // parent, back from fork, gets to that store.
    let mine = super::MINE.with(std::cell::Cell::get);
    let mut out = Vec::new();
    for i in 0..high as usize {
        let Some(s) = slot(i) else { break };
        let pid = match s.pid.load(Ordering::Relaxed) {
            0 if mine == i + 1 => std::process::id(),
            0 => continue,
            pid => pid,
        };
        let port = s.peer_port.load(Ordering::Relaxed);
        let peer = match port >> 16 {
            1 => {
                let bits = (s.peer[0].load(Ordering::Relaxed) as u128) << 64
                    | s.peer[1].load(Ordering::Relaxed) as u128;
                Some((Ipv6Addr::from_bits(bits).to_canonical(), port as u16))
            }
            _ => None,
        };
        let len = (s.line_len.load(Ordering::Relaxed) as usize).min(super::LINE_BYTES);
        let mut line = Vec::with_capacity(len);
        for w in &s.line {
            line.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        line.truncate(len);
        let began = s.request_us.load(Ordering::Relaxed);
        out.push(Worker {
            slot: i,
            pid,
            state: State::from(s.state.load(Ordering::Relaxed)),
            peer,
            requests: s.requests.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            age_ms: now_ms.saturating_sub(s.forked_ms.load(Ordering::Relaxed)),
            idle_ms: now_ms.saturating_sub(s.progress_ms.load(Ordering::Relaxed)),
            request_us: if began == 0 {
                0
            } else {
                now_us.saturating_sub(began)
            },
            line,
            site: site_row(s.site.load(Ordering::Relaxed) as usize)
                .map_or_else(String::new, label_of),
        });
    }
    out
}
