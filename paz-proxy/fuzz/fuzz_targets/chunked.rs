//! The chunked decoder: never panics, the same answer whatever the piece size, and the
//! verbatim scanner agrees on where the body ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paz_proxy::router::fuzzing;

fuzz_target!(|data: &[u8]| {
    let (step, data) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first % 32) + 1, rest),
        None => return,
    };
    let whole = fuzzing::chunked(data, data.len().max(1));
    let pieces = fuzzing::chunked(data, step);
    if let (Some(whole), Some(pieces)) = (&whole, &pieces) {
        assert_eq!(whole, pieces);
        assert!(whole.1 <= data.len());
    }
});
