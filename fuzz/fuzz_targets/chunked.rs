//! The chunked decoder on arbitrary bytes, fed whole and then split at two
//! places taken from the input, and a byte at a time: it never panics, the
//! runs agree on everything (data, error or end, bytes used), and it never
//! yields more data than its limit.
#![no_main]

use lbaws::proto::chunked::{Decoder, Error};
use libfuzzer_sys::fuzz_target;

const MAX: u64 = 4096;

/// Feed `input` in the given pieces; the data, the outcome (with the bytes
/// used, when the body was not refused).
fn run(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<(bool, usize), Error>) {
    let mut d = Decoder::new(MAX);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut used_total = 0;
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        pending.extend_from_slice(&input[start..cut]);
        start = cut;
        while !pending.is_empty() && !d.done() {
            match d.feed(&pending) {
                Ok((used, data)) => {
                    body.extend_from_slice(data);
                    pending.drain(..used);
                    used_total += used;
                }
                Err(e) => return (body, Err(e)),
            }
        }
    }
    if d.done() {
        assert_eq!(d.total(), body.len() as u64);
    }
    assert!(body.len() as u64 <= MAX);
    (body, Ok((d.done(), used_total)))
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data {
        [a, b, ..] => (*a as usize, *b as usize),
        _ => (0, 0),
    };
    let input = data.get(2..).unwrap_or(&[]);
    let whole = run(input, &[]);
    let mut cuts = [a % (input.len() + 1), b % (input.len() + 1)];
    cuts.sort();
    let split = run(input, &cuts);
    assert_eq!(whole, split, "cut at {cuts:?}");
    let bytewise: Vec<usize> = (1..input.len().min(256)).collect();
    assert_eq!(whole, run(input, &bytewise), "a byte at a time");
});
