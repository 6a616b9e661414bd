//! The request-head parser on arbitrary bytes: it never panics, what it
//! accepts is well-formed, and it never refuses the beginning of a head it
//! would accept whole (heads arrive in pieces; refusing early must not cost
//! a valid request).
#![no_main]

use lbaws::proto::head::{parse, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_headers: 16,
    max_header_bytes: 4096,
    max_uri_bytes: 1024,
    max_body_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data, &LIMITS);
    if let Ok(Some(req)) = &whole {
        assert!(req.head_len <= data.len());
        assert!(req.path.starts_with('/') || req.path == "*", "{:?}", req.path);
        assert!(!req.path.contains("/../") && !req.path.contains("//"));
        assert!(req.version <= 1);
        if let Some(h) = &req.host {
            assert!(h.is_ascii() && !h.is_empty());
        }
        // Every shorter beginning is "incomplete", never a refusal.
        if data.len() <= 1024 {
            for end in 0..req.head_len {
                assert!(
                    matches!(parse(&data[..end], &LIMITS), Ok(None)),
                    "prefix of {end} bytes refused"
                );
            }
        }
    }
});
