//! Any bytes as a request head: parse never panics, and a parsed head never claims more
//! bytes than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origin::http::head::{parse, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        request_line_bytes_max: 8192,
        header_bytes_max: 65536,
        header_count_max: 100,
    };
    if let Ok(Some((_, n))) = parse(data, &limits) {
        assert!(n <= data.len());
    }
});
