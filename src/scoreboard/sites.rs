//! The scoreboard's per-site rows: a label (a site's first name, or
//! `other` in row 0) and its counters (responses by class, body bytes, the
//! duration histogram), between the header and the slots. The supervisor
//! gives each site of a configuration its row ([`label_sites`]); workers
//! count into the row their slot names.

use super::{header, BUCKETS_US, HEADER, MAP};
use std::sync::atomic::{AtomicU64, Ordering};

/// Rows of per-site counters (row 0 is `other`).
pub const SITE_ROWS: usize = 256;
/// Bytes of a site's label a row keeps (longer labels are cut).
pub const LABEL_BYTES: usize = 256;
/// The label of row 0.
pub const OTHER: &str = "other";

crate::sys::shared::shared_struct! {
/// One site's counters.
#[repr(C, align(64))]
pub(super) struct SiteRow {
    pub(super) label_len: AtomicU64,
    pub(super) label: [AtomicU64; LABEL_BYTES / 8],
    /// Responses by status class, 1xx to 5xx.
    pub(super) requests: [AtomicU64; 5],
    pub(super) bytes_sent: AtomicU64,
    pub(super) duration_us: AtomicU64,
    pub(super) buckets: [AtomicU64; BUCKETS_US.len() + 1],
}
}
pub(super) const SITES: usize = SITE_ROWS * std::mem::size_of::<SiteRow>();
const _: () = assert!(std::mem::size_of::<SiteRow>() <= 512);

/// The site rows follow the header.
pub(super) fn site_row(i: usize) -> Option<&'static SiteRow> {
    if i >= SITE_ROWS {
        return None;
    }
    MAP.get()?.get(HEADER + i * std::mem::size_of::<SiteRow>())
}

pub(super) fn set_label(row: &SiteRow, label: &str) {
    let b = &label.as_bytes()[..label.len().min(LABEL_BYTES)];
    let mut buf = [0u8; LABEL_BYTES];
    buf[..b.len()].copy_from_slice(b);
    for (w, chunk) in row.label.iter().zip(buf.chunks_exact(8)) {
        w.store(
            u64::from_le_bytes(chunk.try_into().expect("8")),
            Ordering::Relaxed,
        );
    }
    row.label_len.store(b.len() as u64, Ordering::Relaxed);
}

pub(super) fn label_of(row: &SiteRow) -> String {
    let len = (row.label_len.load(Ordering::Relaxed) as usize).min(LABEL_BYTES);
    let mut buf = Vec::with_capacity(LABEL_BYTES);
    for w in &row.label {
        buf.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    buf.truncate(len);
    String::from_utf8_lossy(&buf).into_owned()
}

/// In the supervisor, as it takes a configuration into use: each site's
/// row (its label's, made if new; `other`'s when the table is full).
pub fn label_sites(cfg: &mut crate::config::Config) {
    let Some(h) = header() else { return };
    for site in &mut cfg.sites {
        let used = (h.site_rows.load(Ordering::Relaxed) as usize).min(SITE_ROWS);
        let label = &site.label.as_bytes()[..site.label.len().min(LABEL_BYTES)];
        let found =
            (1..used).find(|&i| site_row(i).is_some_and(|r| label_of(r).as_bytes() == label));
        site.row = match found {
            Some(i) => i as u32,
            None if used < SITE_ROWS => {
                if let Some(r) = site_row(used) {
                    set_label(r, &site.label);
                }
                h.site_rows.store(used as u32 + 1, Ordering::Relaxed);
                used as u32
            }
            None => 0,
        };
    }
}
