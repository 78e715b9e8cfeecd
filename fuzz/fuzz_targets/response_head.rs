//! The fast path's response-head parser against httparse and RFC 9112 §6.3 framing.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    cutover::proxy::fuzzing::check_response_head(buf, flags & 1 == 1);
});
