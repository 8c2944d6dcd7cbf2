//! The response-head parser of both raw upstream readers: never panics, lengths in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paz_proxy::router::fuzzing;

fuzz_target!(|data: &[u8]| {
    let (head_request, data) = match data.split_first() {
        Some((first, rest)) => (first & 1 == 1, rest),
        None => return,
    };
    if let Some((status, len, _)) = fuzzing::response_head(data, head_request) {
        assert!((200..=999).contains(&status));
        assert!(len <= data.len());
    }
    let _ = fuzzing::values(data);
});
