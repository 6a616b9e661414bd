//! The access line of a request whose worker died before it could write it
//! (killed mid-response by a signal, the stall backstop, an immediate
//! stop, the OOM killer): the supervisor writes it when it reaps the worker,
//! from what the worker left in its slot (the request line, the status and
//! the body bytes sent), marked `cut`. The referer and user agent are not
//! kept in a slot: they read `"-"`.

use super::{header, now_us, site_row, slot, LINE_BYTES};
use std::sync::atomic::Ordering;

/// In the supervisor, as it reaps the worker of slot `i`, which ended
/// `abnormally` (a signal, or an exit code other than 0): the access line
/// that worker owed, if it owed one (then the response is counted too). A
/// worker that exits 0 with a line owed chose not to write one (its client
/// left before a response began).
pub fn log_owed(i: usize, abnormally: bool) {
    let Some(s) = slot(i) else { return };
    if s.owed.swap(0, Ordering::Relaxed) == 0 || !abnormally {
        return;
    }
    let status = s.status.load(Ordering::Relaxed) as u16;
    let body = match status {
        0 => 0,
        _ => s
            .bytes_out
            .load(Ordering::Relaxed)
            .saturating_sub(s.body_from.load(Ordering::Relaxed)),
    };
    if let (Some(h), true) = (header(), status >= 100) {
        let class = (status / 100).min(5) as usize - 1;
        h.requests[class].fetch_add(1, Ordering::Relaxed);
        h.bytes_sent.fetch_add(body, Ordering::Relaxed);
        if let Some(r) = site_row(s.site.load(Ordering::Relaxed) as usize) {
            r.requests[class].fetch_add(1, Ordering::Relaxed);
            r.bytes_sent.fetch_add(body, Ordering::Relaxed);
        }
    }
    if !crate::log::access_enabled() {
        return;
    }
    // When the request began: its age on the monotonic clock, back from now.
    let age_s = now_us().saturating_sub(s.request_us.load(Ordering::Relaxed)) / 1_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let port = s.peer_port.load(Ordering::Relaxed);
    let host = match port >> 16 {
        1 => {
            let bits = (s.peer[0].load(Ordering::Relaxed) as u128) << 64
                | s.peer[1].load(Ordering::Relaxed) as u128;
            std::net::Ipv6Addr::from_bits(bits)
                .to_canonical()
                .to_string()
        }
        _ => "unix".to_string(),
    };
    let len = (s.line_len.load(Ordering::Relaxed) as usize).min(LINE_BYTES);
    let mut line = [0u8; LINE_BYTES];
    for (chunk, w) in line.chunks_exact_mut(8).zip(&s.line) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    let site = site_row(s.site.load(Ordering::Relaxed) as usize).map(super::label_of);
    let time = now.saturating_sub(age_s) as i64;
    let text = match crate::log::access_format() {
        crate::config::AccessFormat::Json => {
            let mut parts = line[..len].splitn(3, |&b| b == b' ');
            let mut l = crate::log::json::Line::new(crate::log::line_budget());
            l.str("time", &crate::log::Utc(time).to_string());
            l.str("client", &host);
            match &site {
                Some(label) => l.str("site", label),
                None => l.null("site"),
            }
            l.null("host");
            l.bytes("method", parts.next());
            l.bytes("target", parts.next());
            l.bytes("protocol", parts.next());
            l.num("status", status as u64);
            l.num("bytes", body);
            l.num("duration_us", age_s * 1_000_000);
            l.null("referer");
            l.null("user_agent");
            l.bool("cut", true);
            l.finish()
        }
        format => {
            let clf = crate::log::clf_line(&crate::log::Clf {
                host: &host,
                time,
                request: Some(&[&line[..len]]),
                status,
                body_bytes: body,
                referer: None,
                user_agent: None,
                cut: true,
            });
            match format {
                crate::config::AccessFormat::VhostCombined => {
                    format!("{} {clf}", site.as_deref().unwrap_or("-"))
                }
                _ => clf,
            }
        }
    };
    crate::log::access(&text);
}
