//! Reading any config text never panics, and every problem names its key.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        cutover::proxy::fuzzing::check_config(text);
    }
});
