#!/usr/bin/env bash
# Coverage-guided fuzzing of the proxy's HTTP/1.1 parsers and the config reader, a
# bounded run: each target for SECONDS (default 60) seconds, starting from the seed
# corpus in seeds/. A failure leaves the input in artifacts/<target>/ and exits 1.
#
# cargo-fuzz needs nightly compiler flags (-Zsanitizer=address); on a stable
# toolchain RUSTC_BOOTSTRAP=1 enables them. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build
for target in request_head response_head chunked_end config; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    # -timeout: one input may take at most 10 s; the outer timeout bounds the run.
    timeout $((seconds + 120)) cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1
done
