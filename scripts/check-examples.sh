#!/usr/bin/env bash
# Checks the packaging examples (run by .ci/run):
# 1. the GitHub Actions workflow and composite action parse as YAML and have the
#    shape GitHub needs (manual dispatch with service/version/environment inputs, a
#    composite action whose steps all name their shell);
# 2. the composite action's steps, run as one bash script each (as GitHub runs
#    `shell: bash`: `bash --noprofile --norc -eo pipefail`), against a local daemon
#    through CUTOVER_API_URL and CUTOVER_TOKEN only (no config file in reach): v1 ends
#    live (exit 0, outcome succeeded), `broken` fails (exit 1, outcome failed);
# 3. the systemd unit has the keys the README promises.
#
#   scripts/check-examples.sh [path/to/cutover]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/local-daemon.sh
. scripts/lib/local-daemon.sh
bin="$(realpath "${1:-target/debug/cutover}")"
python3 -c "import yaml" 2>/dev/null || { echo "check-examples: pip install pyyaml" >&2; exit 1; }

python3 - <<'PY'
import yaml
wf = yaml.safe_load(open("examples/github-actions/deploy.yml"))
on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
inputs = on["workflow_dispatch"]["inputs"]
assert {"service", "version", "environment"} <= set(inputs), inputs
assert inputs["environment"]["options"] == ["staging", "production"], inputs["environment"]
job = wf["jobs"]["deploy"]
assert job["environment"] == "${{ inputs.environment }}", "the job must run in the chosen environment (its approval is the confirmation)"
uses = [s for s in job["steps"] if s.get("uses") == "./examples/github-actions/action"]
assert uses and "production" in str(uses[0]["with"]["confirm"]), "confirm only for production"
act = yaml.safe_load(open("examples/github-actions/action/action.yml"))
assert act["runs"]["using"] == "composite"
for step in act["runs"]["steps"]:
    assert step.get("shell") == "bash", f"step {step.get('name')} must name its shell"
for name in ("service", "version", "api-url", "token"):
    assert act["inputs"][name]["required"] is True, name
print("check-examples: deploy.yml and action.yml parse and have the expected shape")
PY

for key in NoNewPrivileges=yes ProtectSystem=strict StateDirectory=cutover LimitNOFILE= \
    'ExecReload=/bin/kill -HUP $MAINPID' KillMode=process; do
    grep -qF "$key" examples/systemd/cutover.service \
        || { echo "check-examples: cutover.service lacks $key" >&2; exit 1; }
done

api=127.0.0.1:26520
proxy=127.0.0.1:26521
token=check-examples-token-0123456789abcdef
dir="$(mktemp -d)"
daemon_pid=
trap 'stop_local_daemon; rm -rf "$dir"' EXIT
start_local_daemon "$bin" "$dir" "$api" "$proxy" "$token"

# run_action VERSION: runs the action's steps with the inputs substituted; prints the
# exit code and leaves the step outputs in $dir/outputs.
run_action() {
    local version="$1" runner
    runner="$(mktemp -d)"
    : > "$dir/outputs"
    python3 - "$runner" "$version" "$bin" "$api" "$token" <<'PY'
import os, re, shlex, sys, yaml
runner, version, binary, api, token = sys.argv[1:]
values = {"inputs.service": "web", "inputs.version": version, "inputs.api-url": f"http://{api}",
          "inputs.token": token, "inputs.confirm": "false", "inputs.cutover": binary,
          "github.actor": "check-examples"}
def sub(text):
    return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: values[m.group(1)], str(text))
act = yaml.safe_load(open("examples/github-actions/action/action.yml"))
for i, step in enumerate(act["runs"]["steps"]):
    with open(os.path.join(runner, f"{i:02}.sh"), "w") as f:
        for k, v in step.get("env", {}).items():
            f.write(f"export {k}={shlex.quote(sub(v))}\n")
        f.write(sub(step["run"]))
PY
    local code=0
    for step in "$runner"/*.sh; do
        # No config file in reach: the CLI must find the daemon through the environment.
        (cd "$runner" && env -u CUTOVER_CONFIG GITHUB_OUTPUT="$dir/outputs" \
            bash --noprofile --norc -eo pipefail "$step") || { code=$?; break; }
    done
    rm -rf "$runner"
    echo "$code"
}

code="$(run_action v1 | tail -1)"
grep -q '^outcome=succeeded$' "$dir/outputs" && [ "$code" = 0 ] || {
    echo "check-examples: the action deploying v1 exited $code with outputs:" >&2
    cat "$dir/outputs" "$dir/daemon.log" >&2; exit 1; }
echo "check-examples: the action deployed v1 (exit 0, outcome succeeded)"
code="$(run_action broken | tail -1)"
grep -q '^outcome=failed$' "$dir/outputs" && [ "$code" = 1 ] || {
    echo "check-examples: the action deploying a broken version exited $code with outputs:" >&2
    cat "$dir/outputs" >&2; exit 1; }
echo "check-examples: the action refused a broken version (exit 1, outcome failed)"
