"""TLS termination side by side: Cutover, nginx and HAProxy with the same ECDSA
P-256 certificate (made here with openssl), each in front of the same nginx backend.

Measured per proxy, in rounds whose order is shuffled per round (as `measure.py`):
- keep-alive TLS: wrk over HTTPS, `conns` connections: requests/s, p50/p99 and proxy
  CPU per request (utime+stime of the proxy's processes / requests served; user and
  kernel apart, and context switches per request, all threads);
- new handshakes: wrk with `Connection: close`, so every request is a new TCP
  connection and a full TLS handshake (wrk does not resume sessions): handshakes/s
  and CPU per handshake. The client's side of a handshake costs about as much CPU as
  the server's, so with everything on both cores the rate measures the client as much
  as the server. For this kind only, wrk runs pinned to CPU 0 and the proxy with both
  backends (every thread) to CPU 1 (`taskset`, the same for all three; restored
  afterwards): the server's core utilisation and its CPU per handshake are its own,
  and `per_core` = 10^6 / CPU µs per handshake is the rate one server core sustains
  (the figure the ratio is taken on when the client, not the server, saturates);
- HTTP/2: h2load over TLS (ALPN h2), 16 connections × 16 streams: requests/s and CPU
  per request.
Then `switches` blue↔green switches through Cutover's API while wrk runs over TLS:
every failed request counts.

Ports: 24100–24199 (the band of this work); all checked free before starting.
"""

import os
import random
import re
import statistics
import subprocess
import time

from . import load, procs, setup, switch

PORTS = {"cutover": 24100, "nginx": 24110, "haproxy": 24120}
BLUE, GREEN = 24101, 24102
API = 24190
ALL_PORTS = [*PORTS.values(), BLUE, GREEN, API]
HOST = "bench.test"


def make_cert(d):
    """A self-signed ECDSA P-256 certificate for bench.test: cert.pem, key.pem and
    combined.pem (HAProxy's format)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}",
         "-keyout", f"{d}/tls-key.pem", "-out", f"{d}/tls-cert.pem"],
        check=True, capture_output=True,
    )
    with open(f"{d}/tls-combined.pem", "w") as out:
        for name in ("tls-cert.pem", "tls-key.pem"):
            with open(f"{d}/{name}") as f:
                out.write(f.read())


def cutover_toml(d, tls13_tickets=None):
    tickets = "" if tls13_tickets is None else f"tls13_tickets = {tls13_tickets}\n"
    return f"""[daemon]
state_dir = "{d}/cutover-tls-state"

[api]
listen = "127.0.0.1:{API}"
token = "{setup.TOKEN}"

[proxy]
drain_timeout = "5s"
slot_header = true

[[proxy.tls]]
listen = "127.0.0.1:{PORTS['cutover']}"
certificates = [{{ cert = "{d}/tls-cert.pem", key = "{d}/tls-key.pem" }}]
{tickets}
[services.web]
listen = "127.0.0.1:{PORTS['cutover']}"
warm_for = "1h"

[services.web.runtime]
kind = "process"
command = ["nginx", "-p", "{d}/", "-e", "{d}/tls-backend-{{slot}}-error.log", "-c", "{d}/tls-backend-{{slot}}.conf", "-g", "daemon off;"]
ports = {{ blue = {BLUE}, green = {GREEN} }}
stop_grace = "3s"

[services.web.health]
interval = "{setup.HEALTH_INTERVAL}"
healthy_threshold = 1

[services.web.watch]
duration = "0s"
"""


def nginx_conf(d):
    return f"""worker_processes auto;
pid {d}/nginx-tls.pid;
error_log {d}/nginx-tls-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {d}/nginx-tmp;
  proxy_temp_path {d}/nginx-tmp;
  upstream app {{
    server 127.0.0.1:{BLUE};
    keepalive 128;
    keepalive_requests 1000000;
  }}
  server {{
    # `listen ... http2`: nginx 1.22 (Debian 12) predates the `http2 on;` directive.
    listen 127.0.0.1:{PORTS['nginx']} ssl http2 backlog=4096;
    ssl_certificate {d}/tls-cert.pem;
    ssl_certificate_key {d}/tls-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def haproxy_conf(d):
    return f"""global
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']} ssl crt {d}/tls-combined.pem alpn h2,http/1.1
  default_backend app
backend app
  http-reuse always
  server blue 127.0.0.1:{BLUE}
"""


def url(name):
    return f"https://127.0.0.1:{PORTS[name]}/"


CLIENT_CPU, SERVER_CPU = "0", "1"


def _pin(pids, cpus):
    """Every thread of `pids` onto `cpus` (a taskset list)."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def _all_cpus():
    return f"0-{os.cpu_count() - 1}"


def backend_pids(ps):
    """The backends' processes (Cutover's slots, which nginx and HAProxy use too)."""
    out = []
    for name, pid in ps.extra_pids:
        if name.startswith("tls-") and procs.pid_alive(pid):
            out += procs.tree(pid, True)
    return out


def _wrk(name, threads, conns, duration_s, close=False, cpu=None):
    argv = load.wrk_argv(url(name), threads, conns, duration_s)
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=True).stdout
    return load.parse_wrk(out)


def _h2load(name, duration_s, clients=16, streams=16):
    argv = ["h2load", f"-c{clients}", f"-m{streams}", f"-D{duration_s}", "-T5", url(name)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    done, ok, failed, errored = (int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6))) if m else (0, 0, 0, 0)
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    proto = re.search(r"Application protocol: (\S+)", out)
    return {"requests": done, "succeeded": ok, "failed": failed + errored,
            "rps": float(m.group(2)) if m else 0.0, "protocol": proto.group(1) if proto else None}


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def start(ps, d, cutover_bin, log, tls13_tickets=None):
    busy = [p for p in ALL_PORTS if not procs.port_free(p)]
    if busy:
        raise RuntimeError(f"TLS bench ports in use on 127.0.0.1: {busy}")
    os.makedirs(f"{d}/nginx-tmp", exist_ok=True)
    make_cert(d)
    files = {
        "tls-backend-blue.conf": setup.backend_conf(d, "blue", BLUE, "tls-backend-blue"),
        "tls-backend-green.conf": setup.backend_conf(d, "green", GREEN, "tls-backend-green"),
        "cutover-tls.toml": cutover_toml(d, tls13_tickets),
        "nginx-tls.conf": nginx_conf(d),
        "haproxy-tls.cfg": haproxy_conf(d),
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    env = dict(os.environ, RUST_LOG="warn")
    started = {
        "cutover": (ps.start("cutover-tls", [cutover_bin, "-c", f"{d}/cutover-tls.toml", "serve", "--stop-on-exit"], cwd=d, env=env), False),
        "nginx": (ps.start("nginx-tls", ["nginx", "-p", f"{d}/", "-e", f"{d}/nginx-tls-error.log", "-c", f"{d}/nginx-tls.conf", "-g", "daemon off;"]), True),
        "haproxy": (ps.start("haproxy-tls", ["haproxy", "-db", "-f", f"{d}/haproxy-tls.cfg"]), False),
    }
    procs.wait_port(API, proc=started["cutover"][0])
    for v in ("v1", "v2"):
        dep = switch.deploy("web", v, port=API)
        assert dep["outcome"] == "succeeded", dep
    for s in switch.api("GET", "/api/v1/services/web", port=API)["slots"]:
        if s.get("handle"):
            ps.adopt(f"tls-{s['slot']}", int(s["handle"].split(":")[0]))
    for name in ("nginx", "haproxy"):
        procs.wait_port(PORTS[name], proc=started[name][0])
    log(f"TLS: started cutover, nginx, haproxy on {PORTS}")
    return started


def measure(started, rounds, duration_s, threads, conns, log, backends=()):
    targets = list(PORTS)
    pids = {n: procs.tree(p.pid, kids) for n, (p, kids) in started.items()}
    if (os.cpu_count() or 1) < 2:
        raise RuntimeError("the TLS handshake measurement pins client and server to different CPUs: needs 2 or more")
    for n in targets:  # warm-up
        _wrk(n, threads, conns, 1)
    kinds = {"keepalive": [], "handshake": [], "h2": []}
    per = {k: {n: [] for n in targets} for k in kinds}
    for r in range(rounds):
        for n in random.Random(2000 + r).sample(targets, len(targets)):
            for kind in kinds:
                pinned = kind == "handshake"
                if pinned:
                    _pin([*pids[n], *backends], SERVER_CPU)
                try:
                    (u0, k0), cs0 = procs.cpu_split(pids[n]), procs.context_switches(pids[n])
                    t0 = time.monotonic()
                    if kind == "h2":
                        res = _h2load(n, duration_s)
                        served = res["succeeded"]
                        errors = res["failed"]
                    else:
                        res = _wrk(n, threads, conns, duration_s, close=pinned,
                                   cpu=CLIENT_CPU if pinned else None)
                        served = res["requests"]
                        errors = res["non2xx"] + res["socket_errors"]
                    (u1, k1), cs1 = procs.cpu_split(pids[n]), procs.context_switches(pids[n])
                    cpu, wall = (u1 - u0) + (k1 - k0), time.monotonic() - t0
                finally:
                    if pinned:
                        _pin([*pids[n], *backends], _all_cpus())
                res["cpu_us_per_req"] = cpu / served * 1e6 if served else None
                res["user_us_per_req"] = (u1 - u0) / served * 1e6 if served else None
                res["sys_us_per_req"] = (k1 - k0) / served * 1e6 if served else None
                res["cs_per_req"] = (cs1 - cs0) / served if served else None
                res["server_core_util"] = cpu / wall if wall else None
                res["per_core"] = 1e6 / res["cpu_us_per_req"] if res["cpu_us_per_req"] else None
                res["errors"] = errors
                per[kind][n].append(res)
                log(f"  TLS round {r + 1}/{rounds} {kind:9} {n:8} {res['rps']:>9.0f} req/s  "
                    f"p99 {res.get('p99_ms') or 0:.2f} ms  cpu {res['cpu_us_per_req'] or 0:.1f} µs/req  "
                    f"proxy cpu {100 * (res['server_core_util'] or 0):.0f}%  errors {errors}")
    out = {}
    for kind in kinds:
        out[kind] = {
            n: {
                "rps": _med([x["rps"] for x in runs]),
                "p50_ms": _med([x.get("p50_ms") for x in runs]),
                "p99_ms": _med([x.get("p99_ms") for x in runs]),
                "cpu_us_per_req": _med([x["cpu_us_per_req"] for x in runs]),
                "user_us_per_req": _med([x["user_us_per_req"] for x in runs]),
                "sys_us_per_req": _med([x["sys_us_per_req"] for x in runs]),
                "cs_per_req": _med([x["cs_per_req"] for x in runs]),
                "server_core_util": _med([x["server_core_util"] for x in runs]),
                "per_core": _med([x["per_core"] for x in runs]),
                "errors": sum(x["errors"] for x in runs),
                "rounds": [x["rps"] for x in runs],
                **({"protocol": runs[0].get("protocol")} if kind == "h2" else {}),
            }
            for n, runs in per[kind].items()
        }
    for kind, by in out.items():
        best_other = max(by["nginx"]["rps"] or 0, by["haproxy"]["rps"] or 0)
        by["ratio_vs_faster"] = (by["cutover"]["rps"] / best_other) if best_other else None
        best_core = max(by["nginx"]["per_core"] or 0, by["haproxy"]["per_core"] or 0)
        by["per_core_ratio_vs_faster"] = (by["cutover"]["per_core"] or 0) / best_core if best_core else None
    out["handshake"]["pinned"] = {"client_cpu": CLIENT_CPU, "server_cpu": SERVER_CPU}
    return out


def switches_over_tls(n, threads, conns, log):
    """`n` rollbacks (each a blue↔green switch) while wrk runs over TLS."""
    wrk = load.BackgroundWrk(url("cutover"), threads, conns, 3600)
    ms = []
    try:
        time.sleep(1.0)
        for _ in range(n):
            t0 = time.perf_counter()
            dep = switch.api("POST", "/api/v1/services/web/rollback", {"triggered_by": "bench"}, port=API)
            d = switch.wait_deployment(dep["deployment_id"], port=API)
            assert d["outcome"] == "succeeded", d
            ms.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        res = wrk.stop()
    out = {"switches": n, "requests": res["requests"], "rps": res["rps"],
           "failed": res["non2xx"] + res["socket_errors"], "socket_errors_detail": res["socket_errors_detail"],
           "rollback_ms_p50": statistics.median(ms)}
    log(f"  TLS switches: {out}")
    return out


def markdown(res):
    t = res["tls"]
    lines = ["| measurement | Cutover | nginx | HAProxy | Cutover ÷ faster |", "|---|---|---|---|---|"]
    names = {"keepalive": "keep-alive TLS (wrk, req/s)", "handshake": "new TLS handshakes (wrk `Connection: close`, /s)",
             "h2": "HTTP/2 over TLS (h2load -c16 -m16, req/s)"}
    for kind, label in names.items():
        by = t[kind]
        cells = [f"{by[n]['rps']:.0f}" for n in ("cutover", "nginx", "haproxy")]
        lines.append(f"| {label} | {' | '.join(cells)} | {by['ratio_vs_faster']:.2f}× |")
    for kind in ("keepalive", "handshake", "h2"):
        by = t[kind]
        cells = [f"{by[n]['cpu_us_per_req'] or 0:.1f}" for n in ("cutover", "nginx", "haproxy")]
        lines.append(f"| CPU µs per request: {kind} | {' | '.join(cells)} | |")
        cells = [f"{by[n].get('user_us_per_req') or 0:.1f} / {by[n].get('sys_us_per_req') or 0:.1f}"
                 for n in ("cutover", "nginx", "haproxy")]
        lines.append(f"| of which user / kernel: {kind} | {' | '.join(cells)} | |")
        cells = [f"{by[n].get('cs_per_req') or 0:.3f}" for n in ("cutover", "nginx", "haproxy")]
        lines.append(f"| context switches per request: {kind} | {' | '.join(cells)} | |")
    by = t["handshake"]
    cells = [f"{by[n]['per_core'] or 0:.0f}" for n in ("cutover", "nginx", "haproxy")]
    lines.append(f"| handshakes per server core-second (10^6 / CPU µs) | {' | '.join(cells)} | "
                 f"{by['per_core_ratio_vs_faster'] or 0:.2f}× |")
    cells = [f"{100 * (by[n]['server_core_util'] or 0):.0f} %" for n in ("cutover", "nginx", "haproxy")]
    lines.append(f"| proxy's share of its core during handshakes | {' | '.join(cells)} | |")
    by = t["keepalive"]
    cells = [f"{by[n]['p99_ms'] or 0:.2f}" for n in ("cutover", "nginx", "haproxy")]
    lines.append(f"| p99 ms, keep-alive TLS | {' | '.join(cells)} | |")
    return "\n".join(lines)
