//! The virtual host matcher on arbitrary names and hosts: a configured name
//! either is refused or matches itself (in any case, with a port and a
//! trailing dot); a lookup never panics, and what it finds is a site whose
//! name fits the host.
#![no_main]

use lbaws::proto::vhost::{pattern, Found, Names, Pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(2, '\n');
    let name = parts.next().unwrap_or("");
    let host = parts.next().unwrap_or("");
    let mut names = Names::default();
    let p = pattern(name);
    if let Ok(p) = &p {
        assert!(names.insert(p, 7).is_ok());
        assert_eq!(names.insert(p, 8), Err(7), "a name belongs to one site");
        let shown = p.to_string();
        let probe = match p {
            Pattern::Wildcard(s) => format!("X.{s}"),
            _ => shown.to_ascii_uppercase(),
        };
        for h in [probe.clone(), format!("{probe}:8080"), format!("{probe}.")] {
            if matches!(p, Pattern::V6(_)) && h.ends_with('.') {
                continue;
            }
            assert_eq!(names.lookup(&h).map(|f| f.0), Some(7), "{h:?} for {shown:?}");
        }
    }
    if let Some((site, how)) = names.lookup(host) {
        assert_eq!(site, 7);
        if let (Ok(Pattern::Exact(n)), Found::Exact) = (&p, how) {
            let h = host.rsplit_once(':').map_or(host, |x| x.0);
            assert!(h.trim_end_matches('.').eq_ignore_ascii_case(n) || h.strip_suffix('.').is_some_and(|h| h.eq_ignore_ascii_case(n)));
        }
    }
});
