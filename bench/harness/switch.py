"""Blue↔green switches under load, requests across a switch, and rollback latency.

A "switch" is each router's own zero-downtime mechanism:
- Cutover: `POST /api/v1/services/web/rollback`; both releases are warm, so a
  rollback is one health round (healthy_threshold 1, TCP) and an atomic route swap;
- nginx: rewrite the upstream include, then SIGHUP to the master (a reload);
- HAProxy: the runtime API (`set server app/<new> state ready; ... <old> state maint`).
"Switch to effect" is from just before the command to the arrival of the first
response from the new slot, probed on new connections one after the other.
"""

import json
import os
import signal
import socket
import statistics
import threading
import time
import urllib.request

from . import load, setup


def api(method, path, body=None, timeout=10, port=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port or setup.API}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {setup.TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def post_timed(path, body, port=None):
    """POST on a new connection with a raw socket, timed from before the connect to the
    last byte of the answer; returns (milliseconds, status, JSON body). The switch call
    is timed this way so that the figure is the API's, not urllib's own overhead."""
    data = json.dumps(body).encode()
    req = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {setup.TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port or setup.API), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(req)
        status, _, answer, _ = load._read_response(sock)
    ms = (time.perf_counter() - t0) * 1000
    return ms, status, json.loads(answer or b"null")


def wait_deployment(dep_id, timeout=60, port=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = api("GET", f"/api/v1/deployments/{dep_id}", port=port)["deployment"]
        if d["outcome"] is not None:
            return d
        time.sleep(0.01)
    raise RuntimeError(f"deployment #{dep_id} did not finish within {timeout}s")


def deploy(service, version, timeout=60, port=None):
    dep = api("POST", f"/api/v1/services/{service}/deploy", {"version": version, "triggered_by": "bench"}, port=port)
    return wait_deployment(dep["deployment_id"], timeout, port=port)


def switch_histogram(service="web"):
    """Cutover's own `cutover_switch_duration_seconds` histogram for `service` from
    /metrics: {"count", "sum_s", "buckets": {le_seconds: cumulative count}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{setup.API}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {"count": 0, "sum_s": 0.0, "buckets": {}}
    name = "cutover_switch_duration_seconds"
    for line in text.splitlines():
        if not line.startswith(name) or f'service="{service}"' not in line:
            continue
        series, value = line.rsplit(" ", 1)
        if series.startswith(name + "_count"):
            out["count"] = int(float(value))
        elif series.startswith(name + "_sum"):
            out["sum_s"] = float(value)
        elif series.startswith(name + "_bucket"):
            le = series.split('le="', 1)[1].split('"', 1)[0]
            out["buckets"][float("inf") if le == "+Inf" else float(le)] = int(float(value))
    return out


def histogram_delta(before, after):
    """The switches made between two scrapes: count, mean, and per bound how many."""
    n = after["count"] - before["count"]
    buckets = {le: c - before["buckets"].get(le, 0) for le, c in after["buckets"].items()}
    return {
        "count": n,
        "mean_us": (after["sum_s"] - before["sum_s"]) / n * 1e6 if n else None,
        "under_1ms": buckets.get(0.001),
        # The smallest bucket bound holding every switch: an upper bound on the max.
        "max_bound_us": min((le for le, c in buckets.items() if c == n), default=None) * 1e6 if n else None,
    }


def rollback_timed():
    """`POST .../web/rollback`, timed by `post_timed`; returns (milliseconds, deployment id)."""
    ms, status, answer = post_timed("/api/v1/services/web/rollback", {"triggered_by": "bench"})
    if status != 202:
        raise RuntimeError(f"rollback answered {status}: {answer}")
    return ms, answer["deployment_id"]


def wait_succeeded(dep_id):
    d = wait_deployment(dep_id, 30)
    if d["outcome"] != "succeeded":
        raise RuntimeError(f"rollback #{dep_id} ended {d['outcome']}: {d['reason']}")


def api_calls_without_load(n):
    """`n` switches (rollbacks between two warm releases) with no load running, one after
    the other: how long the API call itself takes when the machine is not saturated.
    `n` is rounded up to even, so traffic ends on the slot it started on."""
    ms = []
    for _ in range(n + n % 2):
        t, dep_id = rollback_timed()
        ms.append(t)
        wait_succeeded(dep_id)
        time.sleep(0.05)
    return {"calls": len(ms), "p50_ms": statistics.median(ms), "p99_ms": _pctl(ms, 0.99), "max_ms": max(ms)}


class CutoverSwitch:
    name = "cutover"

    def __init__(self):
        self.api_ms = []
        self.live = api("GET", "/api/v1/services/web")["live"]
        self.histogram_before = switch_histogram()

    def switch(self):
        ms, self.pending = rollback_timed()
        self.api_ms.append(ms)
        self.live = "green" if self.live == "blue" else "blue"
        return self.live

    def settle(self):
        wait_succeeded(self.pending)


class NginxSwitch:
    name = "nginx"

    def __init__(self, d, master_pid):
        self.d, self.pid, self.live = d, master_pid, "blue"

    def switch(self):
        self.live = "green" if self.live == "blue" else "blue"
        port = setup.BLUE if self.live == "blue" else setup.GREEN
        path = f"{self.d}/nginx-upstream.conf"
        with open(path + ".new", "w") as f:
            f.write(setup.nginx_upstream(port))
        os.replace(path + ".new", path)
        os.kill(self.pid, signal.SIGHUP)
        return self.live

    def settle(self):
        pass


class HaproxySwitch:
    name = "haproxy"

    def __init__(self, d):
        self.sock_path, self.live = f"{d}/haproxy.sock", "blue"

    def command(self, cmd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.sock_path)
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while chunk := s.recv(4096):
                out += chunk
        return out.decode()

    def switch(self):
        old = self.live
        self.live = "green" if old == "blue" else "blue"
        out = self.command(f"set server app/{self.live} state ready; set server app/{old} state maint")
        if out.strip():
            raise RuntimeError(f"haproxy runtime API: {out.strip()}")
        return self.live

    def settle(self):
        pass


def _pctl(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


def switches_under_load(port, switcher, n, gap_s, threads, conns):
    """`n` switches while wrk runs at `conns` connections; failures are wrk's non-2xx
    plus socket errors."""
    wrk = load.BackgroundWrk(f"http://127.0.0.1:{port}/", threads, conns, 3600)
    try:
        time.sleep(1.0)
        effects = []
        for _ in range(n):
            t0 = time.monotonic()
            target = switcher.switch()
            t1, _ = load.probe_until(port, target)
            effects.append((t1 - t0) * 1000)
            switcher.settle()
            time.sleep(gap_s)
        time.sleep(0.5)
    finally:
        res = wrk.stop()
    out = {
        "switches": n,
        "requests": res["requests"],
        "rps": res["rps"],
        "non2xx": res["non2xx"],
        "socket_errors": res["socket_errors"],
        "socket_errors_detail": res["socket_errors_detail"],
        "failed": res["non2xx"] + res["socket_errors"],
        "effect_ms_p50": statistics.median(effects),
        "effect_ms_p99": _pctl(effects, 0.99),
        "effect_ms_max": max(effects),
    }
    if isinstance(switcher, CutoverSwitch):
        out["api_call_ms_p50"] = statistics.median(switcher.api_ms)
        out["api_call_ms_p99"] = _pctl(switcher.api_ms, 0.99)
        out["api_call_ms_max"] = max(switcher.api_ms)
        out["in_process"] = histogram_delta(switcher.histogram_before, switch_histogram())
        switcher.api_ms.clear()
    return out


def slow_across_switch(port, switcher, ms=3000):
    """A GET /aux/slow?ms=... in flight while the route flips must complete (200)
    on the slot it started on."""
    old = switcher.live
    result = {}

    def slow():
        try:
            status, _, body = load.get(port, f"/aux/slow?ms={ms}", timeout=ms / 1000 + 10)
            result.update(status=status, body=body.decode().strip())
        except OSError as e:
            result.update(status=None, body=f"error: {e}")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(min(0.5, ms / 4000))
    target = switcher.switch()
    load.probe_until(port, target)
    switcher.settle()
    t.join(timeout=ms / 1000 + 15)
    ok = result.get("status") == 200 and result.get("body", "").startswith(f"{old} slept")
    return {"ok": ok, "status": result.get("status"), "body": result.get("body"), "switched_to": target}


def websocket_across_switch(port, switcher):
    """A WebSocket opened before a switch keeps working after it, on its old slot,
    while new requests reach the new slot."""
    old = switcher.live
    try:
        ws = load.WebSocket(port, "/aux/ws")
        ws.send_text("before")
        before = ws.recv_text()
        target = switcher.switch()
        load.probe_until(port, target)
        switcher.settle()
        time.sleep(0.2)
        ws.send_text("after")
        after = ws.recv_text()
        ws.close()
    except (OSError, ConnectionError) as e:
        return {"ok": False, "error": str(e)}
    ok = before == f"{old}:before" and after == f"{old}:after"
    return {"ok": ok, "before": before, "after": after, "switched_to": target}


def rollback_latency(reps):
    """Deploys version `bad` (every GET / answers 500) of service `rb` under a steady
    probe load; measures from the first 500 the probe received to the first answer
    from the old slot after it."""
    out = []
    for _ in range(reps):
        old = api("GET", "/api/v1/services/rb")["live"]
        log, stop = [], threading.Event()

        def probe():
            sock = None
            while not stop.is_set():
                try:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", setup.RB_LISTEN), timeout=5)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    status, headers, _ = load.get(setup.RB_LISTEN, "/", sock=sock)
                    log.append((time.monotonic(), status, headers.get("x-cutover-slot")))
                    if headers.get("connection", "").lower() == "close":
                        sock.close()
                        sock = None
                except OSError:
                    log.append((time.monotonic(), None, None))
                    if sock is not None:
                        sock.close()
                    sock = None
                    time.sleep(0.001)
            if sock is not None:
                sock.close()

        t = threading.Thread(target=probe)
        t.start()
        time.sleep(0.3)
        d = deploy("rb", "bad")
        time.sleep(0.3)
        stop.set()
        t.join()
        fails = [x for x in log if x[1] != 200]
        first_fail = fails[0][0] if fails else None
        back = next((x[0] for x in log if first_fail is not None and x[0] > first_fail and x[1] == 200 and x[2] == old), None)
        out.append({
            "outcome": d["outcome"],
            "reason": d["reason"],
            "failed_requests": len(fails),
            "probe_requests": len(log),
            "rollback_ms": None if back is None else (back - first_fail) * 1000,
        })
    return out
