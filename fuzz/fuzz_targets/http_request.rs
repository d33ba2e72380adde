#![no_main]
//! See `lovebeat::fuzz_targets::http_request`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lovebeat::fuzz_targets::http_request(data));
