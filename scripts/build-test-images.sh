#!/usr/bin/env bash
# Builds the Docker images the Docker/Compose runtime tests use (see tests/images/README.md):
# FROM scratch + a statically linked cutover binary, so nothing is pulled from a registry.
# Usage: scripts/build-test-images.sh            (builds the static binary first)
#        CUTOVER_STATIC_BIN=/path/to/cutover scripts/build-test-images.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
    echo "build-test-images: no Docker engine is reachable (docker info failed); the Docker tests need one" >&2
    exit 1
fi

bin="${CUTOVER_STATIC_BIN:-}"
if [ -z "$bin" ]; then
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --bin cutover \
        --target x86_64-unknown-linux-gnu --target-dir target/static
    bin=target/static/x86_64-unknown-linux-gnu/debug/cutover
fi
if ! ldd "$bin" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
    echo "build-test-images: $bin is dynamically linked; a FROM scratch image needs a static binary" >&2
    exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/cutover"
printf '[broken]\nexit_on_start = 3\n' > "$ctx/behaviour.toml"

# $1 tag, $2 version, $3 health path
build() {
    cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY cutover behaviour.toml /
LABEL io.cutover.test="1" io.cutover.test.variant="$1"
EXPOSE 8080
HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/cutover", "demo-app", "healthcheck", "--url", "http://127.0.0.1:8080$3"]
ENTRYPOINT ["/cutover", "demo-app", "--host", "0.0.0.0", "--port", "8080", "--behaviour", "/behaviour.toml"]
CMD ["--version", "$2"]
DOCKERFILE
    # The legacy builder (no buildx needed); its deprecation notice is noise here.
    if ! DOCKER_BUILDKIT=0 docker build --quiet -t "cutover-demo:$1" "$ctx" >/dev/null 2>"$ctx/err"; then
        cat "$ctx/err" >&2
        exit 1
    fi
    echo "built cutover-demo:$1"
}

for v in v1 v2 v3 v4; do build "$v" "$v" /health; done
build broken broken /health
build sick sick /no-such-path
