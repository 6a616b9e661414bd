//! The CGI response-header parser on arbitrary script output: it never
//! panics, and what it accepts can be written into a response head as it
//! is (final status, token names, values without CR, LF or other control
//! bytes, no field the server owns), the same whatever follows the header.
#![no_main]

use lbaws::proto::cgi_head::{parse, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn clean(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, start))) = parse(data) else {
        return;
    };
    assert!(start <= data.len() && start <= MAX_HEAD);
    if let Some(s) = head.status {
        assert!((200..=599).contains(&s), "status {s}");
    }
    for v in [&head.content_type, &head.location].into_iter().flatten() {
        assert!(clean(v), "{v:?}");
    }
    for (name, value) in &head.other {
        assert!(token(name), "{name:?}");
        assert!(clean(value), "{value:?}");
        assert!(!name.eq_ignore_ascii_case("transfer-encoding"));
        assert!(!name.eq_ignore_ascii_case("connection"));
    }
    // The header alone parses to the same head: the body does not change it.
    assert_eq!(parse(&data[..start]), Ok(Some((head, start))));
});
