//! Redirect templates and their substitution on arbitrary input: parsing
//! never panics, a parsed template shows as what was written, and whatever
//! a request brings, the expanded target is visible ASCII only (nothing
//! can split or end the Location field).
#![no_main]

use lbaws::proto::template::{Template, Vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let to = parts.next().unwrap_or("");
    let host = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let query = parts.next();
    let Ok(t) = Template::parse(to) else { return };
    assert_eq!(t.to_string(), to);
    let v = Vars { host, target, path, query, scheme: "http" };
    let out = t.expand(&v).expect("an expansion is always safe");
    assert!(out.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{out:?}");
});
