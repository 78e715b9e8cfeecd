"""Throughput, latency, memory and CPU per request, in alternating rounds.

Each round runs every target once, in an order shuffled per round (seeded), so slow
drifts of a shared machine and the after-effects of one target's run hit every
target alike; medians over rounds are reported. Memory is
VmRSS summed over the proxy's processes (nginx: master + workers), idle after a
warm-up and the peak sampled every 0.25 s under load. CPU per request is the change
of utime+stime over a run divided by the requests it served (also recorded apart, user
and kernel, with the context switches per request of all the proxy's threads), and
the proxy's share of all the CPU the machine used in the run (`machine_share`; see
`report.share_table`).
"""

import random
import statistics
import threading
import time

from . import load, procs, setup


class Target:
    def __init__(self, name, port, pid=None, with_children=False):
        self.name, self.port, self.pid, self.with_children = name, port, pid, with_children

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def pids(self):
        return procs.tree(self.pid, self.with_children) if self.pid else []


class RssSampler:
    def __init__(self, target):
        self.target, self.peak, self.stop = target, 0, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.wait(0.25):
            self.peak = max(self.peak, procs.rss_kib(self.target.pids()))

    def finish(self):
        self.stop.set()
        self.t.join()
        return self.peak


def round_order(targets, r):
    """The order of round `r`: a permutation seeded by the round, so a run can be
    repeated. Not a rotation: rotating keeps every target behind the same neighbour in
    every round, and a run after the direct one (the backend alone at twice the rate)
    measured lower than the same daemon run elsewhere in the order."""
    return random.Random(1000 + r).sample(targets, len(targets))


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def saturation(targets, rounds, duration_s, threads, conns, log):
    per = {t.name: [] for t in targets}
    for t in targets:  # warm-up: connections, pools, lazy allocations
        load.run_wrk(t.url, threads, conns, 1)
    idle = {t.name: procs.rss_kib(t.pids()) for t in targets if t.pid}
    for r in range(rounds):
        order = round_order(targets, r)
        for t in order:
            (u0, k0), cs0 = procs.cpu_split(t.pids()), procs.context_switches(t.pids())
            m0 = procs.machine_busy()
            sampler = RssSampler(t) if t.pid else None
            res = load.run_wrk(t.url, threads, conns, duration_s)
            res["rss_peak_kib"] = sampler.finish() if sampler else None
            (u1, k1), cs1 = procs.cpu_split(t.pids()), procs.context_switches(t.pids())
            m1 = procs.machine_busy()
            n = res["requests"] if t.pid else 0
            res["cpu_us_per_req"] = ((u1 - u0) + (k1 - k0)) / n * 1e6 if n else None
            # The proxy's share of all the CPU the machine used in the run (wrk, the
            # proxy, the backend; anything else running shows as a larger rest).
            busy = m1 - m0
            res["machine_share"] = ((u1 - u0) + (k1 - k0)) / busy if n and busy > 0 else None
            res["user_us_per_req"] = (u1 - u0) / n * 1e6 if n else None
            res["sys_us_per_req"] = (k1 - k0) / n * 1e6 if n else None
            res["cs_per_req"] = (cs1 - cs0) / n if n else None
            per[t.name].append(res)
            log(f"  round {r + 1}/{rounds} {t.name:8} {res['rps']:>9.0f} req/s  p50 {res['p50_ms']:.2f} ms  "
                f"p99 {res['p99_ms']:.2f} ms  errors {res['non2xx'] + res['socket_errors']}"
                + (f"  cpu {res['user_us_per_req']:.1f}+{res['sys_us_per_req']:.1f} µs/req (user+kernel)"
                   f"  {res['cs_per_req']:.3f} cs/req  share {100 * (res['machine_share'] or 0):.1f}%"
                   if res["cpu_us_per_req"] is not None else ""))
            if t.name == "direct":
                time.sleep(2)  # after the backend alone at full rate, let the machine settle
    out = {}
    for t in targets:
        runs = per[t.name]
        out[t.name] = {
            "rps": _med([x["rps"] for x in runs]),
            "p50_ms": _med([x["p50_ms"] for x in runs]),
            "p99_ms": _med([x["p99_ms"] for x in runs]),
            "errors": sum(x["non2xx"] + x["socket_errors"] for x in runs),
            "cpu_us_per_req_saturated": _med([x["cpu_us_per_req"] for x in runs]),
            "user_us_per_req_saturated": _med([x["user_us_per_req"] for x in runs]),
            "sys_us_per_req_saturated": _med([x["sys_us_per_req"] for x in runs]),
            "cs_per_req_saturated": _med([x["cs_per_req"] for x in runs]),
            "machine_share_saturated": _med([x["machine_share"] for x in runs]),
            "rss_idle_kib": idle.get(t.name),
            "rss_load_kib": max((x["rss_peak_kib"] or 0) for x in runs) or None,
            "rounds": [{k: x[k] for k in ("rps", "p50_ms", "p99_ms", "requests")} for x in runs],
        }
    return out


def fixed_rate_cpu(targets, rounds, duration_s, rate, clients, log):
    per = {t.name: [] for t in targets}
    for r in range(rounds):
        order = round_order(targets, r)
        for t in order:
            cpu0 = procs.cpu_seconds(t.pids())
            res = load.run_h2load(t.url, rate, clients, duration_s)
            cpu = procs.cpu_seconds(t.pids()) - cpu0
            us = cpu / res["succeeded"] * 1e6 if res["succeeded"] else None
            per[t.name].append({"cpu_us_per_req": us, "rps": res["rps"], "failed": res["failed"]})
            log(f"  round {r + 1}/{rounds} {t.name:8} {res['rps']:>7.0f} req/s  cpu {us or 0:.1f} µs/req  failed {res['failed']}")
    return {
        name: {
            "cpu_us_per_req": _med([x["cpu_us_per_req"] for x in runs]),
            "achieved_rps": _med([x["rps"] for x in runs]),
            "failed": sum(x["failed"] for x in runs),
        }
        for name, runs in per.items()
    }
