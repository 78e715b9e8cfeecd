# Sourced by scripts/schemathesis.sh and scripts/check-examples.sh: a Cutover daemon on
# loopback in a temporary directory, serving one service, `web`, a quick local process
# (`cutover demo-app`, whose behaviour file makes version `broken` exit at start).
# The caller's EXIT trap must call stop_local_daemon (it stops the daemon by its PID).

# start_local_daemon BIN DIR API_ADDR PROXY_ADDR TOKEN; sets $daemon_pid.
start_local_daemon() {
    local bin="$1" dir="$2" api="$3" proxy="$4" token="$5"
    printf '[broken]\nexit_on_start = 3\n' > "$dir/behaviour.toml"
    cat > "$dir/cutover.toml" <<TOML
[daemon]
state_dir = "state"

[api]
listen = "$api"
token = "$token"

[services.web]
listen = "$proxy"
warm_for = "5s"

[services.web.runtime]
kind = "process"
command = ["$bin", "demo-app", "--port", "{port}", "--version", "{version}", "--behaviour", "$dir/behaviour.toml"]
stop_grace = "2s"

[services.web.health]
interval = "100ms"
deadline = "10s"

[[services.web.health.checks]]
name = "live"
http = { path = "/health" }

[services.web.watch]
duration = "1s"
TOML
    "$bin" -c "$dir/cutover.toml" validate
    "$bin" -c "$dir/cutover.toml" serve --stop-on-exit 2>"$dir/daemon.log" &
    daemon_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "http://$api/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$dir/daemon.log" >&2; return 1; }
        sleep 0.1
    done
    echo "local-daemon: the API did not answer within 10s" >&2
    cat "$dir/daemon.log" >&2
    return 1
}

stop_local_daemon() {
    if [ -n "${daemon_pid:-}" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=
    fi
}
