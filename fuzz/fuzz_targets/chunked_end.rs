//! The chunked scanner finds the same end however the body is split into reads.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    // The first bytes choose up to 3 cut points; the rest is the body.
    let k = usize::from(n % 4).min(rest.len());
    let (cuts, body) = rest.split_at(k);
    let cuts: Vec<usize> = cuts.iter().map(|c| usize::from(*c) * 7).collect();
    cutover::proxy::fuzzing::check_chunked_split(body, &cuts);
});
