#!/usr/bin/env python3
"""The rollback test with and without the shield and the burst trigger (issue #16).

One Cutover daemon, three services running the same demo app, whose version `bad`
answers every GET / with 500 (its health check passes):
- `plain`: today's rollback, decided by the watch's analysis (error rate over 5% on a
  100 ms interval, window 1s, min 20 requests); the shield at its default (connection
  failures only, which a 500 is not);
- `trigger`: the same, plus the data plane's burst trigger (5 consecutive failures);
- `shield`: the trigger plus the shield retrying 500/502/503/504 on the previous
  release.
Each rep deploys `bad` under a steady probe load (4 keep-alive clients in a loop) and
reports the failed requests the clients saw, the time from the first failure to the
old slot answering, and (trigger) from the 5th failure (the trigger's threshold) to
the old slot answering. Fixed ports 25000-25499 (this helper's band).

    python3 bench/rollback.py [--reps 5] [--cutover-bin target/release/cutover]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import load, procs  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = 25090
TOKEN = "bench-token"
N = 5
SERVICES = {
    # name: (listen, blue, green, extra config)
    "plain": (25010, 25011, 25012, ""),
    "trigger": (25020, 25021, 25022, f"[services.trigger.burst]\nconsecutive_failures = {N}\n"),
    "shield": (25030, 25031, 25032,
               f"[services.shield.burst]\nconsecutive_failures = {N}\n\n"
               "[services.shield.shield]\nretry_on = [\"connect\", \"status\"]\n"
               "statuses = [500, 502, 503, 504]\n"),
}
CLIENTS = 4


def config(d, cutover_bin):
    out = f"""[daemon]
state_dir = "{d}/state"

[api]
listen = "127.0.0.1:{API}"
token = "{TOKEN}"

[proxy]
slot_header = true
"""
    for name, (listen, blue, green, extra) in SERVICES.items():
        out += f"""
[services.{name}]
listen = "127.0.0.1:{listen}"
warm_for = "1h"

[services.{name}.runtime]
kind = "process"
command = ["{cutover_bin}", "demo-app", "--port", "{{port}}", "--version", "{{version}}", "--behaviour", "{d}/behaviour.toml"]
ports = {{ blue = {blue}, green = {green} }}
stop_grace = "3s"

[services.{name}.health]
interval = "50ms"
healthy_threshold = 1

[services.{name}.watch]
duration = "5s"
interval = "100ms"
window = "1s"
error_rate = {{ max = "5%", for = "0s", min_requests = 20 }}
health_failures = 0

{extra}"""
    return out


def api(method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{API}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def deploy(service, version):
    dep = api("POST", f"/api/v1/services/{service}/deploy", {"version": version, "triggered_by": "bench"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        d = api("GET", f"/api/v1/deployments/{dep['deployment_id']}")["deployment"]
        if d["outcome"] is not None:
            return d
        time.sleep(0.01)
    raise RuntimeError(f"deployment {dep} did not finish")


def retries(service):
    with urllib.request.urlopen(f"http://127.0.0.1:{API}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("cutover_proxy_shield_retries_total") and f'service="{service}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def one_rep(service):
    port = SERVICES[service][0]
    old = api("GET", f"/api/v1/services/{service}")["live"]
    log, stop, lock = [], threading.Event(), threading.Lock()

    def probe():
        sock = None
        while not stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                status, headers, _ = load.get(port, "/", sock=sock)
                with lock:
                    log.append((time.monotonic(), status, headers.get("x-cutover-slot")))
                if headers.get("connection", "").lower() == "close":
                    sock.close()
                    sock = None
            except OSError:
                with lock:
                    log.append((time.monotonic(), None, None))
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.001)
        if sock is not None:
            sock.close()

    before = retries(service)
    threads = [threading.Thread(target=probe) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    d = deploy(service, "bad")
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    log.sort()
    fails = [x for x in log if x[1] != 200]
    new_answers = [x for x in log if x[2] not in (None, old)]

    def back_after(t0):
        if t0 is None:
            return None
        t = next((x[0] for x in log if x[0] > t0 and x[1] == 200 and x[2] == old), None)
        return None if t is None else round((t - t0) * 1000, 2)

    first_fail = fails[0][0] if fails else None
    nth_fail = fails[N - 1][0] if len(fails) >= N else None
    return {
        "outcome": d["outcome"],
        "reason": d["reason"],
        "probe_requests": len(log),
        "failed_requests": len(fails),
        "answered_by_new_slot": len(new_answers),
        "shield_retries": retries(service) - before,
        "first_fail_to_old_ms": back_after(first_fail),
        "nth_fail_to_old_ms": back_after(nth_fail) if service != "plain" else None,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--cutover-bin", default=os.path.join(REPO, "target", "release", "cutover"))
    p.add_argument("--out", help="JSON file (default bench/results/<date>-rollback-shield.json)")
    a = p.parse_args()
    cutover_bin = os.path.abspath(a.cutover_bin)
    d = tempfile.mkdtemp(prefix="cutover-rollback-bench-")
    with open(f"{d}/cutover.toml", "w") as f:
        f.write(config(d, cutover_bin))
    with open(f"{d}/behaviour.toml", "w") as f:
        f.write("[bad]\nerror_rate = 1.0\n")
    ps = procs.Procs(d)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "uptime_before": uptime,
           "command": "python3 bench/rollback.py " + " ".join(sys.argv[1:]), "clients": CLIENTS, "n": N,
           "results": {}}
    try:
        env = dict(os.environ, RUST_LOG="warn")
        daemon = ps.start("cutover", [cutover_bin, "-c", f"{d}/cutover.toml", "serve", "--stop-on-exit"], cwd=d, env=env)
        procs.wait_port(API, proc=daemon)
        for service in SERVICES:
            first = deploy(service, "v1")
            assert first["outcome"] == "succeeded", first
        for service in SERVICES:
            res["results"][service] = []
            for _ in range(a.reps):
                # Back to v1 on the slot the last rep left (a fresh good release).
                r = one_rep(service)
                print(service, json.dumps(r), flush=True)
                res["results"][service].append(r)
                good = deploy(service, "v1")
                assert good["outcome"] == "succeeded", good
    finally:
        ps.stop_all()
    res["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(res, indent=1))
    out = a.out or os.path.join(REPO, "bench", "results", f"{res['date'][:10]}-rollback-shield.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
