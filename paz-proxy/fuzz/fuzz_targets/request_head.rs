//! The fast path's request-head policy: never panics, and a head it forwards is one that
//! parses again as a single complete request with exactly one valid Host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paz_proxy::router::fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Some(upstream) = fuzzing::request_head(data) {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(&upstream).expect("the re-encoded head parses");
        assert_eq!(parsed, httparse::Status::Complete(upstream.len()));
        let hosts: Vec<_> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert!(fuzzing::values(hosts[0].value).0);
        assert!(!req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("transfer-encoding")
                || h.name.eq_ignore_ascii_case("connection")
        }));
    }
});
