//! The fast path's request-head parser against httparse, and what it forwards.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cutover::proxy::fuzzing::check_request_head(data);
});
