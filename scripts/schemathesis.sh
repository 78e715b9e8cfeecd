#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a real daemon from its own OpenAPI document:
# no 5xx, every answer conforming to its schema, content type and documented status.
#
#   scripts/schemathesis.sh [path/to/cutover]     (default target/debug/cutover)
#   SCHEMATHESIS_MAX_EXAMPLES=50 scripts/schemathesis.sh
#
# The daemon runs in a temporary directory on loopback ports 26510/26511 with one
# service, `web`, a quick local process (`cutover demo-app`): the deploys, rollbacks
# and checks schemathesis sends are real and harmless. v1 is deployed first so reads
# have a live service and a deployment to describe.
# Excluded, with the reason: GET /api/v1/events, the live feed, is an endless
# Server-Sent-Events stream (a test client would wait for its end forever); its
# parameters are covered by tests/e2e_events.rs. GET /api/v1/services/{name}/logs with
# `follow=true` is an endless stream too (tests/e2e_cli_ci.rs covers it).
# The daemon is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/local-daemon.sh
. scripts/lib/local-daemon.sh
bin="$(realpath "${1:-target/debug/cutover}")"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
command -v schemathesis >/dev/null || {
    echo "schemathesis.sh: install schemathesis (pip install schemathesis)" >&2; exit 1; }
[ -x "$bin" ] || { echo "schemathesis.sh: no cutover binary at $bin (cargo build)" >&2; exit 1; }

api=127.0.0.1:26510
proxy=127.0.0.1:26511
token=schemathesis-token
dir="$(mktemp -d)"
daemon_pid=
cleanup() {
    stop_local_daemon
    rm -rf "$dir"
}
trap cleanup EXIT

start_local_daemon "$bin" "$dir" "$api" "$proxy" "$token"
curl -fsS -X POST -H "Authorization: Bearer $token" -d '{"version":"v1"}' \
    "http://$api/api/v1/services/web/deploy"
echo

# Two passes: generated service names (mostly unknown: the 404 paths), then every
# `{name}` pinned to `web` so deploys, rollbacks, checks and reads reach the real
# service (a pinned parameter comes from a schemathesis.toml).
printf '[parameters]\n"path.name" = "web"\n' > "$dir/pinned.toml"
status=0
for pass in generated pinned; do
    config=()
    if [ "$pass" = pinned ]; then config=(--config-file "$dir/pinned.toml"); fi
    echo "--- schemathesis: $pass service names"
    schemathesis "${config[@]}" run "http://$api/api/v1/openapi.json" \
        --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
        --header "Authorization: Bearer $token" \
        --exclude-path /api/v1/events \
        --exclude-path '/api/v1/services/{name}/logs' \
        --max-examples "$max_examples" \
        --request-timeout 20 \
        --workers 1 \
        --seed 1515 || status=$?
done
if [ "$status" -ne 0 ]; then
    echo "--- daemon log (last 50 lines)" >&2
    tail -50 "$dir/daemon.log" >&2
fi
exit "$status"
