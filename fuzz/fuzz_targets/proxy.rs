//! The PROXY protocol header parser on arbitrary bytes: it never panics,
//! never claims more bytes than it was given or than a header may have, and
//! agrees with itself as the bytes arrive: every prefix of a whole header is
//! "incomplete", and what follows a header, or a refusal, changes nothing.
#![no_main]

use lbaws::proto::proxy::{parse, Parsed, MAX_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    match whole {
        Ok(Parsed::Done { consumed, .. }) => {
            assert!(consumed <= data.len() && consumed <= MAX_HEADER);
            for cut in 0..consumed.min(512) {
                assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
            }
            assert_eq!(parse(&data[..consumed]), whole, "what follows changes nothing");
        }
        Ok(Parsed::Incomplete) => {
            assert!(data.len() < MAX_HEADER);
            for cut in 0..data.len().min(512) {
                assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
            }
        }
        Err(_) => {
            // Once refused, more bytes cannot save it.
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\n");
            assert!(parse(&more).is_err(), "refused, then accepted with more");
        }
    }
});
