#!/usr/bin/env bash
# Builds the statically linked release binary into dist/cutover (and, with --docker,
# the FROM scratch image `cutover:<version>` from ./Dockerfile, then checks that
# `docker run cutover:<version> --version` answers).
#
#   scripts/build-release.sh            dist/cutover
#   scripts/build-release.sh --docker   dist/cutover and the image
#
# Static how: glibc's static libraries with `crt-static` on the gnu target, the same
# way scripts/build-test-images.sh builds the demo images (no musl toolchain needed;
# SQLite is compiled in by rusqlite's `bundled`). Cutover resolves no names through
# NSS at run time except upstream host names, which a static glibc still resolves
# through /etc/hosts and DNS. The build records the commit and the compiler, shown by
# `/metrics` as cutover_build_info{version,commit,rustc}.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
export CUTOVER_GIT_COMMIT="${CUTOVER_GIT_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
export CUTOVER_RUSTC_VERSION="${CUTOVER_RUSTC_VERSION:-$(rustc --version | cut -d' ' -f2)}"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --bin cutover \
    --target "$target" --target-dir target/static
bin="target/static/$target/release/cutover"
if ! ldd "$bin" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
    echo "build-release: $bin is dynamically linked" >&2
    exit 1
fi
mkdir -p dist/state
cp "$bin" dist/cutover
# The release profile keeps line tables for backtraces; the shipped binary does not
# need them.
if command -v strip >/dev/null; then strip dist/cutover; fi
version="$(dist/cutover --version | awk '{print $2}')"
echo "build-release: dist/cutover $version (commit $CUTOVER_GIT_COMMIT, rustc $CUTOVER_RUSTC_VERSION), $(du -h dist/cutover | cut -f1), static"

if [ "${1:-}" = "--docker" ]; then
    docker info >/dev/null 2>&1 || { echo "build-release: no Docker engine reachable" >&2; exit 1; }
    # The legacy builder: no buildx needed, and nothing is pulled (FROM scratch).
    DOCKER_BUILDKIT=0 docker build --quiet -t "cutover:$version" . >/dev/null
    got="$(docker run --rm "cutover:$version" --version)"
    [ "$got" = "cutover $version" ] || { echo "build-release: the image answered '$got'" >&2; exit 1; }
    # A config error inside the image is exit 2, as outside.
    set +e
    docker run --rm "cutover:$version" -c /nonexistent.toml validate >/dev/null 2>&1
    code=$?
    set -e
    [ "$code" -eq 2 ] || { echo "build-release: validate of a missing config exited $code, not 2" >&2; exit 1; }
    echo "build-release: image cutover:$version answers --version"
fi
