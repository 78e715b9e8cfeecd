#!/usr/bin/env bash
# The proof that tests/kube/standin.py is an API server, kubelet and kube-proxy the real
# kubectl (1.20, Debian's kubernetes-client) can drive, and the list of what Cutover
# relies on it for: each kubectl command below is one Cutover's Kubernetes runtime or
# router runs, or one its tests need. Stops at the first mismatch, exit 1.
#
#   bash tests/kube/check.sh        (KUBECTL=/path/to/kubectl to try another kubectl)
#
# Needs python3, curl, openssl and kubectl; uses ports in 20000-31999 on 127.0.0.1.
set -Eeuo pipefail

here=$(cd "$(dirname "$0")" && pwd)
KUBECTL=${KUBECTL:-kubectl}
work=$(mktemp -d)
marker="standin-check-$$-$RANDOM"  # in every pod's command line, to find its processes
passed=0
standin_pid=

cleanup() {
    if [[ -n $standin_pid ]] && kill -0 "$standin_pid" 2>/dev/null; then
        kill -TERM "$standin_pid"
        wait "$standin_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "--- the stand-in's stderr:" >&2
    tail -n 30 "$work/standin.err" >&2 || true
    echo "check.sh: $passed passed, 1 failed" >&2
    exit 1
}
trap 'fail "line $LINENO: a command failed"' ERR

ok() {
    passed=$((passed + 1))
    echo "ok $passed - $*"
}

# check WHAT WANT COMMAND...: COMMAND prints exactly WANT.
check() {
    local what=$1 want=$2 got
    shift 2
    got=$("$@" 2>&1) || true
    [[ $got == "$want" ]] || fail "$what: wanted «$want», got «$got»"
    ok "$what"
}

# check_within SECONDS WHAT WANT COMMAND...: COMMAND prints exactly WANT within SECONDS.
check_within() {
    local limit=$1 what=$2 want=$3 got
    shift 3
    local end=$((SECONDS + limit))
    while got=$("$@" 2>&1) || true; [[ $got != "$want" ]]; do
        ((SECONDS < end)) || fail "$what: wanted «$want» within ${limit}s, last got «$got»"
        sleep 0.2
    done
    ok "$what"
}

k() { "$KUBECTL" --cache-dir "$work/cache" "$@"; }

# py EXPR: EXPR of d, the JSON on stdin (and cond(obj, type): a condition's status).
py() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
cond = lambda o, t: next((c["status"] for c in o["status"].get("conditions", []) if c["type"] == t), None)
print(eval(sys.argv[1]))' "$1"
}

get() { k get "$1" "$2" -o json | py "$3"; }  # get KIND NAME EXPR

# exit_and_output COMMAND...: its exit code, a space, and what it printed (stdout and stderr).
exit_and_output() {
    local out rc
    out=$("$@" 2>&1) && rc=0 || rc=$?
    echo "$rc $out"
}

free_ports() { # free_ports COUNT LOW HIGH
    python3 - "$@" <<'EOF'
import random, socket, sys
count, low, high = map(int, sys.argv[1:])
found = set()
while len(found) < count:
    port = random.randint(low, high)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    found.add(port)
print(*found)
EOF
}

start_standin() { # start_standin KUBECONFIG [ARGS...]: runs it in the background, waits until ready
    local port
    read -r port < <(free_ports 1 20000 29999)
    python3 "$here/standin.py" --listen "127.0.0.1:$port" --kubeconfig "$1" "${@:2}" \
        >"$work/standin.out" 2>"$work/standin.err" &
    standin_pid=$!
    export KUBECONFIG=$1
    check_within 15 "the stand-in says it is ready" "standin ready" cat "$work/standin.out"
}

processes() { pgrep -fc -- "$1" || true; }  # how many processes have $1 in their command line

# The pods' program: GET /health is 200, GET / says its VERSION and pod, anything else 404.
cat >"$work/app.py" <<'EOF'
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/health":
            code, body = 200, "ok\n"
        elif self.path == "/":
            code, body = 200, f"{os.environ['VERSION']} {os.environ['POD_NAME']}\n"
        else:
            code, body = 404, "no\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass

port = int(sys.argv[sys.argv.index("--port") + 1])
print(f"app {os.environ['VERSION']} listening on {port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
EOF

# deployment NAME APP SLOT VERSION [COMMAND] [PROBE_PATH]: a Deployment as Cutover writes one
# (the default command is app.py on the pod's $(PORT)).
deployment() {
    local name=$1 app=$2 slot=$3 version=$4
    local command=${5:-"[\"python3\", \"$work/app.py\", \"--port\", \"\$(PORT)\", \"--marker=$marker-$name\"]"}
    local labels="{\"app.kubernetes.io/name\": \"$app\", \"cutover.dev/slot\": \"$slot\"}"
    cat <<EOF
{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "$name", "labels": $labels},
 "spec": {"replicas": 1, "selector": {"matchLabels": $labels},
  "template": {
   "metadata": {"labels": $labels, "annotations": {"cutover.dev/version": "$version"}},
   "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
     "name": "app", "image": "registry.invalid/$app:$version", "command": $command,
     "ports": [{"name": "http", "containerPort": 8080}],
     "env": [{"name": "VERSION", "value": "$version"}],
     "readinessProbe": {"httpGet": {"path": "${6:-/health}", "port": 8080}, "periodSeconds": 2}}]}}}}
EOF
}

# Cutover's server-side apply, from stdin.
apply() { k apply --server-side --force-conflicts --field-manager=cutover --validate=false -o json -f -; }
applied() { py 'd["kind"] + "/" + d["metadata"]["name"]'; }
apply_deployment() { deployment "$@" | apply | applied; }
apply_json() { apply <<<"$1" | applied; }

server_version() { k version -o json 2>/dev/null | py 'd["serverVersion"]["gitVersion"]'; }
rollout() {
    get deployment "$1" 'str(d["status"].get("readyReplicas")) + " ready, Available " + str(cond(d, "Available"))'
}
pods_of() { k get pods -l "$1" -o json | py '" ".join(p["metadata"]["name"] for p in d["items"])'; }
restart_counts() {
    k get pods -l "$1" -o json | py '[c["restartCount"] for p in d["items"] for c in p["status"]["containerStatuses"]]'
}
pid_of() { get pod "$1" 'd["status"]["containerStatuses"][0]["containerID"].split("//")[1]'; }
port_of() { get pod "$1" 'd["metadata"]["annotations"]["standin.cutover.dev/port"]'; }
alive() { if kill -0 "$1" 2>/dev/null; then echo alive; else echo gone; fi; }
# last_request TEXT: its line in --log (without the fieldValidation that kubectl 1.25+
# adds to every write).
last_request() { grep -F "$1" "$work/api.log" | tail -n 1 | sed 's/fieldValidation=[A-Za-z]*&//'; }
like() { if [[ $1 =~ $2 ]]; then echo yes; else echo "$1"; fi; }  # like TEXT REGEX

# answers PORT N: how many of N requests, each on a new connection, each VERSION answered.
answers() {
    local i
    for ((i = 0; i < $2; i++)); do
        curl -sS --max-time 2 "http://127.0.0.1:$1/" | cut -d' ' -f1
    done | sort | uniq -c | awk '{print $2 "=" $1}' | paste -sd' '
}

# endpoints SERVICE: its EndpointSlices' endpoints as pod:ready, and their port.
endpoints() {
    k get endpointslices -l "kubernetes.io/service-name=$1" -o json |
        py '" ".join(e["targetRef"]["name"] + ":" + str(e["conditions"]["ready"]) for s in d["items"] for e in s["endpoints"]) + " port " + " ".join(str(p["port"]) for s in d["items"] for p in s["ports"])'
}

blue="app.kubernetes.io/name=web,cutover.dev/slot=blue"
green="app.kubernetes.io/name=web,cutover.dev/slot=green"
read -r node_port gateway_port < <(free_ports 2 30000 31999)

# --- Start, with a token (so over HTTPS: kubectl sends a token to https servers only) -----

start_standin "$work/kubeconfig" --token "token-$RANDOM$RANDOM" --log "$work/api.log"
check "the kubeconfig is private" 600 stat -c %a "$KUBECONFIG"
check "kubectl version shows the stand-in's" v1.20.2-cutover-standin server_version
# kubectl 1.20 says "(Unauthorized)"; newer ones "(the server has asked for the
# client to provide credentials)", after retrying discovery: the exit code and the
# last line's start are what they share.
unauthorized() {
    local out rc
    out=$("$@" 2>&1) && rc=0 || rc=$?
    local last=${out##*$'\n'}
    echo "$rc ${last%% (*}"
}
check "a wrong token: 401, kubectl says Unauthorized" \
    "1 error: You must be logged in to the server" unauthorized k --token=wrong get pods
check "--log has a line per request" "GET /api?timeout=32s - -> 401" last_request " -> 401"

# --- Deployments: server-side apply, rollout, status, logs ------------------------------------

check "server-side apply of a Deployment from stdin (-o json)" Deployment/web-blue \
    apply_deployment web-blue web blue v1
check "kubectl sent it as PATCH, content type application/apply-patch+yaml" \
    "PATCH /apis/apps/v1/namespaces/default/deployments/web-blue?fieldManager=cutover&force=true application/apply-patch+yaml -> 201" \
    last_request "PATCH /apis/apps/v1/namespaces/default/deployments/web-blue?"
check_within 10 "get deployment -o json: readyReplicas 1, Available True" "1 ready, Available True" rollout web-blue
first_pod=$(pods_of "$blue")
check "its pod is named <deployment>-<template hash>-<suffix>" yes \
    like "$first_pod" '^web-blue-[0-9a-f]{10}-[a-z0-9]{5}$'
check "the pod has the template's labels and annotations and is owned by the Deployment" \
    "blue v1 Deployment/web-blue" \
    get pod "$first_pod" 'd["metadata"]["labels"]["cutover.dev/slot"] + " " + d["metadata"]["annotations"]["cutover.dev/version"] + " " + d["metadata"]["ownerReferences"][0]["kind"] + "/" + d["metadata"]["ownerReferences"][0]["name"]'
check "its process serves the pod's PORT, given as \$(PORT) in its command" "v1 $first_pod" \
    curl -sS --max-time 2 "http://127.0.0.1:$(port_of "$first_pod")/"
first_pid=$(pid_of "$first_pod")

check "applying it again with another env" Deployment/web-blue apply_deployment web-blue web blue v1.1
new_pod() { local p; p=$(pods_of "$blue"); [[ -n $p && $p != *"$first_pod"* && $p != *" "* ]] && echo new || echo "$p"; }
check_within 15 "makes a new pod and removes the old one" new new_pod
check "the old pod's process really exited" gone alive "$first_pid"
check_within 10 "the Deployment is ready and available again" "1 ready, Available True" rollout web-blue
check "generation and observedGeneration follow the spec" "(2, 2)" \
    get deployment web-blue '(d["metadata"]["generation"], d["status"]["observedGeneration"])'
blue_pod=$(pods_of "$blue")
check "get pods -l ... -o json shows restartCount" "[0]" restart_counts "$blue"
check "logs -l ... --tail=5 --prefix=true --all-containers=true prints the pod's output" \
    "[pod/$blue_pod/app] app v1.1 listening on $(port_of "$blue_pod")" \
    k logs -l "$blue" --tail=5 --prefix=true --all-containers=true

apply_deployment crash crash loop v1 \
    "[\"python3\", \"-c\", \"import sys; print('crashing'); sys.exit(1)\", \"$marker-crash\"]" >/dev/null
crash_state() { # its container's waiting reason, last exit code and, at least $1, restarts
    k get pods -l app.kubernetes.io/name=crash -o json | py "[(c['state'].get('waiting', {}).get('reason'), c['lastState']['terminated']['exitCode'], min(c['restartCount'], $1)) for p in d['items'] for c in p['status']['containerStatuses'] if c['lastState']]"
}
check_within 10 "a command that exits 1: CrashLoopBackOff, last exit code 1" "[('CrashLoopBackOff', 1, 0)]" crash_state 0
check_within 10 "and its restartCount goes up (1)" "[('CrashLoopBackOff', 1, 1)]" crash_state 1
check_within 10 "and up (2)" "[('CrashLoopBackOff', 1, 2)]" crash_state 2
check "kubectl delete deployment" 'deployment.apps "crash" deleted' k delete deployment crash
crash_left() { echo "pods: $(pods_of app.kubernetes.io/name=crash), processes: $(processes "$marker-crash")"; }
check_within 5 "takes its pods with it" "pods: , processes: 0" crash_left

check "NotFound: exit 1 and the real server's words" \
    '1 Error from server (NotFound): deployments.apps "web-nope" not found' \
    exit_and_output k get deployment web-nope -o json

# --- Services: NodePort forwarding, selector moves, EndpointSlices ------------------------------

check "a second Deployment (green)" Deployment/web-green apply_deployment web-green web green v2
check_within 10 "is ready" "1 ready, Available True" rollout web-green
green_pod=$(pods_of "$green")
check "a NodePort Service selecting blue" Service/web apply_json "{
  \"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"web\"},
  \"spec\": {\"type\": \"NodePort\", \"selector\": {\"app.kubernetes.io/name\": \"web\", \"cutover.dev/slot\": \"blue\"},
           \"ports\": [{\"name\": \"http\", \"port\": 80, \"targetPort\": 8080, \"nodePort\": $node_port}]}}"
check "forwards each curl to the blue pod" "v1.1=5" answers "$node_port" 5
check "get endpointslices -l kubernetes.io/service-name=web: the blue pod, ready" \
    "$blue_pod:True port 8080" endpoints web

# A connection established before the selector moves stays with its pod (as with conntrack).
python3 - "$node_port" "$work/held" "$work/go-on" <<'EOF' &
import http.client, os, sys, time
port, out, go_on = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
with open(out, "w") as f:
    for _ in range(2):
        conn.request("GET", "/")
        f.write(conn.getresponse().read().decode().split()[0] + " ")
        f.flush()
        while not os.path.exists(go_on):
            time.sleep(0.05)
EOF
held_pid=$!
check_within 5 "a connection held open got its first answer from blue" "v1.1 " cat "$work/held"
select_slot() { # select_slot SLOT: Cutover's merge patch of the Service's selector
    k patch service web --type=merge -p "{\"spec\":{\"selector\":{\"cutover.dev/slot\":\"$1\"}}}" -o json |
        py 'd["spec"]["selector"]["cutover.dev/slot"]'
}
check "kubectl patch service web --type=merge: the selector to green" green select_slot green
check "new connections go to the green pod at once" "v2=5" answers "$node_port" 5
touch "$work/go-on"
wait "$held_pid"
check "the connection established before stays with the blue pod" "v1.1 v1.1 " cat "$work/held"
check "the EndpointSlice follows the selector" "$green_pod:True port 8080" endpoints web

check "a Deployment whose readiness probe fails" Deployment/unready apply_deployment unready probe gray v1 "" /not-there
check "and a ClusterIP Service for it" Service/probe apply_json '{
  "apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe"},
  "spec": {"selector": {"app.kubernetes.io/name": "probe"}, "ports": [{"port": 80, "targetPort": 8080}]}}'
unready_pod=$(pods_of app.kubernetes.io/name=probe)
sleep 1.5  # two probes
check "its EndpointSlice shows the pod not ready" "$unready_pod:False port 8080" endpoints probe
check "a ClusterIP Service gets no nodePort" "null" get service probe 'json.dumps(d["spec"]["ports"][0].get("nodePort"))'

rv=$(get service web 'd["metadata"]["resourceVersion"]')
check "a JSON patch whose test of resourceVersion fails is refused (exit 1)" \
    "1 The request is invalid: : testing value /metadata/resourceVersion failed: test failed" \
    exit_and_output k patch service web --type=json -o json \
    -p '[{"op":"test","path":"/metadata/resourceVersion","value":"1"},{"op":"replace","path":"/spec/selector/cutover.dev~1slot","value":"blue"}]'
check "and changes nothing" "$rv green" get service web 'd["metadata"]["resourceVersion"] + " " + d["spec"]["selector"]["cutover.dev/slot"]'
stale=$(get service web 'json.dumps(dict(d, metadata=dict(d["metadata"], resourceVersion="1")))')
check "a PUT with a stale resourceVersion is a Conflict" \
    '1 Error from server (Conflict): error when replacing "STDIN": Operation cannot be fulfilled on services "web": the object has been modified; please apply your changes to the latest version and try again' \
    exit_and_output k replace --validate=false -f - <<<"$stale"
check "a nodePort another Service holds is Invalid" \
    "1 The Service \"taken\" is invalid: spec.ports[0].nodePort: Invalid value: $node_port: provided port is already allocated" \
    exit_and_output apply <<<"{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"taken\"},
      \"spec\": {\"type\": \"NodePort\", \"selector\": {\"a\": \"b\"}, \"ports\": [{\"port\": 80, \"nodePort\": $node_port}]}}"

# --- Gateway API: an HTTPRoute's weights ----------------------------------------------------

for slot in blue green; do
    check "a ClusterIP Service web-$slot" "Service/web-$slot" apply_json "{
      \"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"web-$slot\"},
      \"spec\": {\"selector\": {\"app.kubernetes.io/name\": \"web\", \"cutover.dev/slot\": \"$slot\"},
               \"ports\": [{\"port\": 80, \"targetPort\": 8080}]}}"
done
check "a Gateway" Gateway/edge apply_json "{
  \"apiVersion\": \"gateway.networking.k8s.io/v1\", \"kind\": \"Gateway\", \"metadata\": {\"name\": \"edge\"},
  \"spec\": {\"gatewayClassName\": \"standin\",
           \"listeners\": [{\"name\": \"http\", \"protocol\": \"HTTP\", \"port\": $gateway_port}]}}"
check "an HTTPRoute on it weighted 100/0" HTTPRoute/web apply_json '{
  "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
  "spec": {"parentRefs": [{"name": "edge"}],
           "rules": [{"backendRefs": [{"name": "web-blue", "port": 80, "weight": 100},
                                      {"name": "web-green", "port": 80, "weight": 0}]}]}}'
check "sends every connection to blue" "v1.1=10" answers "$gateway_port" 10
reweigh() { # reweigh BLUE GREEN: the JSON patch Cutover's router sends, guarded by resourceVersion
    local rv
    rv=$(get httproute web 'd["metadata"]["resourceVersion"]')
    k patch httproute web --type=json -o json -p "[
      {\"op\": \"test\", \"path\": \"/metadata/resourceVersion\", \"value\": \"$rv\"},
      {\"op\": \"replace\", \"path\": \"/spec/rules/0/backendRefs\", \"value\": [
        {\"name\": \"web-blue\", \"port\": 80, \"weight\": $1}, {\"name\": \"web-green\", \"port\": 80, \"weight\": $2}]}]" |
        py '" ".join(str(r["weight"]) for r in d["spec"]["rules"][0]["backendRefs"])'
}
check "a guarded JSON patch to 0/100" "0 100" reweigh 0 100
check "sends every connection to green" "v2=10" answers "$gateway_port" 10
check "and to 50/50" "50 50" reweigh 50 50
split=$(answers "$gateway_port" 40)
check "which over 40 connections reaches both ($split)" yes like "$split" '^v1\.1=[0-9]+ v2=[0-9]+$'
# kubectl 1.20 prints the server's Status as "Error from server (UnsupportedMediaType):
# ..."; newer ones name the patch type first: the server's words are what both show.
refused_format() { exit_and_output "$@" | sed 's/^\(1\) .*: \(the body of the request\)/\1 \2/'; }
check "a strategic merge patch of a CRD is refused, as by the real server" \
    "1 the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml" \
    refused_format k patch httproute web -p '{"spec":{}}'

# --- Stopping slots: replicas 0 by patch and by scale -----------------------------------------

check "web-blue and web-green each have a process" "1 1" \
    echo "$(processes "$marker-web-blue") $(processes "$marker-web-green")"
no_replicas() { # Cutover's way to stop a slot
    k patch deployment "$1" --type=merge -p '{"spec":{"replicas":0}}' -o json | py 'd["spec"]["replicas"]'
}
check "kubectl patch deployment web-blue --type=merge: replicas 0" 0 no_replicas web-blue
check_within 6 "stops web-blue's process" 0 processes "$marker-web-blue"
check "kubectl scale deployment/web-green --replicas=0" "deployment.apps/web-green scaled" \
    k scale deployment/web-green --replicas=0
check "goes through the scale subresource" \
    "PATCH /apis/apps/v1/namespaces/default/deployments/web-green/scale application/merge-patch+json -> 200" \
    last_request "/deployments/web-green/scale "
check_within 6 "stops web-green's process" 0 processes "$marker-web-green"
closed() { # closed PORT: whether a connection there is closed without an answer
    local rc=0
    curl -sS --max-time 2 "http://127.0.0.1:$1/" >/dev/null 2>&1 || rc=$?
    case $rc in
        52 | 56) echo closed ;;  # empty reply, or reset
        *) echo "curl exit $rc" ;;
    esac
}
check "a NodePort Service without a ready pod closes connections at once" closed closed "$node_port"

# --- Stopping the stand-in ----------------------------------------------------------------------

check "the unready pod's process still runs" 1 processes "$marker-unready"
kill -TERM "$standin_pid"
rc=0
wait "$standin_pid" || rc=$?
standin_pid=
check "SIGTERM stops the stand-in, exit 0" 0 echo "$rc"
check "no pod process is left" 0 processes "$marker"

# Without --token it serves plain HTTP. Killed with SIGKILL, it takes its pods' processes
# with it, and what they started too.
start_standin "$work/plain"
check "without a token it serves plain HTTP" "server: http://127.0.0.1" \
    grep -o "server: http[s]*://127.0.0.1" "$KUBECONFIG"
check "and kubectl needs no token for it" namespace/default k get namespace default -o name
shell='["sh", "-c", "python3 -c \"import time; time.sleep(300)\" \"$0\" & wait", "'"$marker-shell"'"]'
check "a pod whose shell starts a child" Deployment/shell apply_deployment shell shell loop v1 "$shell"
check_within 5 "runs both" 2 processes "$marker-shell"
{ kill -KILL "$standin_pid" && wait "$standin_pid"; } 2>/dev/null || true  # (quiet "Killed")
standin_pid=
check_within 5 "SIGKILL of the stand-in ends them both" 0 processes "$marker-shell"

echo "check.sh: $passed passed, 0 failed (${SECONDS}s)"
