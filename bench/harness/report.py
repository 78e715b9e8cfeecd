"""Target verdicts, the printed table, the JSON file and the BENCHMARKS.md section.

The verdicts restate issue #6's targets as checks on this run's own numbers; a target
whose measurement is missing is "not measured", never "holds".
"""

import json
import os
import re

MARK_BEGIN = "<!-- bench:results:begin -->"
MARK_END = "<!-- bench:results:end -->"


def _f(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def idle_verdict(res):
    """Memory per idle connection against the lower of nginx's and HAProxy's."""
    idle = res.get("idle", {})
    if not all(n in idle for n in ("cutover", "nginx", "haproxy")):
        return []
    c, n, h = (idle[x]["kib_per_conn"] for x in ("cutover", "nginx", "haproxy"))
    return [{"target": "memory per idle connection ≤ the lower of nginx's and HAProxy's",
             "verdict": "holds" if c <= min(n, h) else "missed",
             "detail": f"Cutover {_f(c, 2)} KiB vs nginx {_f(n, 2)} KiB, HAProxy {_f(h, 2)} KiB"}]


def verdicts(res):
    if "saturation" not in res:
        return idle_verdict(res)
    sat, cpu, sw, rb = res["saturation"], res.get("fixed_rate_cpu", {}), res.get("switch", {}), res.get("rollback", [])
    c = sat["cutover"]
    best = max(("nginx", "haproxy"), key=lambda n: sat[n]["rps"])
    v = []

    def add(name, ok, detail):
        v.append({"target": name, "verdict": "not measured" if ok is None else ("holds" if ok else "missed"), "detail": detail})

    ratio = c["rps"] / sat[best]["rps"]
    add("throughput ≥ 1.1× the faster of nginx/HAProxy", ratio >= 1.1,
        f"Cutover {_f(c['rps'], 0)} req/s vs {best} {_f(sat[best]['rps'], 0)} = {ratio:.3f}×")
    worst = min(sat["nginx"]["p99_ms"], sat["haproxy"]["p99_ms"])
    add("p99 no worse than nginx's and HAProxy's", c["p99_ms"] <= worst,
        f"Cutover {_f(c['p99_ms'], 2)} ms vs nginx {_f(sat['nginx']['p99_ms'], 2)} ms, HAProxy {_f(sat['haproxy']['p99_ms'], 2)} ms")
    if cpu.get("cutover") and cpu.get("nginx"):
        a, b = cpu["cutover"]["cpu_us_per_req"], cpu["nginx"]["cpu_us_per_req"]
        add(f"CPU per request at {res['config']['fixed_rate']} req/s below nginx's", a < b,
            f"Cutover {_f(a)} µs vs nginx {_f(b)} µs")
    else:
        add("CPU per request at a fixed rate below nginx's", None, "fixed-rate run skipped")
    s = sw.get("cutover")
    if s:
        add(f"zero failed requests across {s['switches']} switches", s["failed"] == 0,
            f"{s['failed']} failed of {s['requests']:,} ({s['non2xx']} non-2xx, {s['socket_errors_detail']})")
        ip = s.get("in_process")
        if ip and ip["count"]:
            add("switch-to-effect < 1 ms inside the process", ip["under_1ms"] == ip["count"],
                f"{ip['under_1ms']} of {ip['count']} switches took ≤ 1 ms from the decision to the new route "
                f"in effect (the routing table swapped; the step is persisted after it), mean {_f(ip['mean_us'], 0)} µs, "
                f"all ≤ {_f(ip['max_bound_us'], 0)} µs (Cutover's `cutover_switch_duration_seconds` histogram)")
        else:
            add("switch-to-effect < 1 ms inside the process", None, "no switch histogram in /metrics")
        idle = res.get("switch_api_idle")
        idle_text = (f"without load: p50 {_f(idle['p50_ms'], 2)} ms, max {_f(idle['max_ms'], 2)} ms over {idle['calls']} calls; "
                     if idle else "")
        add("whole switch API call < 5 ms (judged under the load)", s["api_call_ms_p50"] < 5 and s["api_call_ms_max"] < 5,
            f"POST rollback answered under the load in p50 {_f(s['api_call_ms_p50'], 2)} ms, p99 {_f(s.get('api_call_ms_p99'), 2)} ms, "
            f"max {_f(s['api_call_ms_max'], 2)} ms (raw-socket client, connect to last byte); {idle_text}"
            f"command to first response from the new slot: p50 {_f(s['effect_ms_p50'], 2)} ms, p99 {_f(s['effect_ms_p99'], 2)} ms")
    if rb:
        limit = res["config"]["rollback_watch"]["interval_ms"] + 100
        worst_rb = max((x["rollback_ms"] or 1e9) for x in rb)
        add(f"rollback within one analysis interval + 100 ms (≤ {limit} ms)",
            worst_rb <= limit and all(x["outcome"] == "rolled_back" for x in rb),
            f"first failed request → old slot answering: {', '.join(_f(x['rollback_ms'], 0) + ' ms' for x in rb)}")
    idle, peak = c["rss_idle_kib"] / 1024, c["rss_load_kib"] / 1024
    add("idle resident memory < 20 MiB", idle < 20, f"{idle:.1f} MiB (the whole daemon: proxy, controller, API, SQLite)")
    add("resident memory at load < 30 MiB", peak < 30, f"{peak:.1f} MiB peak under {res['config']['conns']} connections")
    return v + idle_verdict(res)


def tables(res):
    if "saturation" not in res:
        # `--idle-only`: nothing else was measured.
        rows = ["| target | verdict | numbers |", "|---|---|---|"]
        rows += [f"| {v['target']} | **{v['verdict']}** | {v['detail']} |" for v in res["verdicts"]]
        return idle_table(res).lstrip("\n") + "\n\n" + "\n".join(rows)
    sat, cpu, sw = res["saturation"], res.get("fixed_rate_cpu", {}), res.get("switch", {})
    n_ref = sat["nginx"]["rps"]
    d_ref = sat["direct"]["rps"]
    rows = ["| target | req/s | ×nginx | ×direct | p50 ms | p99 ms | CPU µs/req saturated | CPU µs/req at fixed rate | RSS idle MiB | RSS load MiB | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in sat.items():
        fr = cpu.get(name, {}).get("cpu_us_per_req")
        rows.append(
            f"| {name} | {_f(s['rps'], 0)} | {s['rps'] / n_ref:.2f} | {s['rps'] / d_ref:.2f} | {_f(s['p50_ms'], 2)} | "
            f"{_f(s['p99_ms'], 2)} | {_f(s['cpu_us_per_req_saturated'])} | {_f(fr)} | "
            f"{_f(s['rss_idle_kib'] and s['rss_idle_kib'] / 1024)} | {_f(s['rss_load_kib'] and s['rss_load_kib'] / 1024)} | {s['errors']} |")
    out = "\n".join(rows)
    if sw:
        rows = ["| router | switches | requests | failed (non-2xx + socket errors) | switch → first new-slot response p50 / p99 / max ms | slow request across a switch | WebSocket across a switch |",
                "|---|---:|---:|---:|---:|---|---|"]
        for name, s in sw.items():
            slow = res.get("slow", {}).get(name, {})
            ws = res.get("websocket", {}).get(name, {})
            rows.append(
                f"| {name} | {s['switches']} | {s['requests']:,} | {s['failed']} ({s['non2xx']} non-2xx; {s['socket_errors_detail']}) | "
                f"{_f(s['effect_ms_p50'], 2)} / {_f(s['effect_ms_p99'], 2)} / {_f(s['effect_ms_max'], 2)} | "
                f"{'completed' if slow.get('ok') else 'FAILED: ' + str(slow)} | {'stayed open' if ws.get('ok') else 'FAILED: ' + str(ws)} |")
        out += "\n\n" + "\n".join(rows)
    if res.get("rollback"):
        rows = ["| rollback rep | outcome | first 500 → old slot answering | failed requests seen | reason |", "|---:|---|---:|---:|---|"]
        for i, r in enumerate(res["rollback"], 1):
            rows.append(f"| {i} | {r['outcome']} | {_f(r['rollback_ms'], 0)} ms | {r['failed_requests']} of {r['probe_requests']} | {r['reason']} |")
        out += "\n\n" + "\n".join(rows)
    out += share_table(res) + paths_table(res) + idle_table(res)
    rows = ["| target | verdict | numbers |", "|---|---|---|"]
    for v in res["verdicts"]:
        rows.append(f"| {v['target']} | **{v['verdict']}** | {v['detail']} |")
    return out + "\n\n" + "\n".join(rows)


def write_json(res, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=2)


def markdown_section(res, json_rel):
    m, c = res["machine"], res["config"]
    vers = "\n".join(f"- {k}: {v}" for k, v in res["versions"].items())
    return f"""{MARK_BEGIN}
### Run of {res['date']} ({res['mode']})

Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}.
Load average before: `{res['uptime_before']}`; after: `{res['uptime_after']}`.
Command: `{res['command']}` — {c['rounds']} alternating rounds × {c['duration_s']} s of `wrk -t{c['threads']} -c{c['conns']}`
per target (medians), fixed-rate CPU with `h2load --h1 -c{c['fixed_clients']} --rps` at {c['fixed_rate']} req/s
for {c['fixed_duration_s']} s × {c['fixed_rounds']} rounds, {c['switches']} switches per router. Raw numbers: [{json_rel}]({json_rel}).

Versions:
{vers}

{tables(res)}
{MARK_END}"""


def update_benchmarks_md(path, section):
    text = open(path).read() if os.path.exists(path) else ""
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: section, text, flags=re.S)
    else:
        text += "\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def paths_table(res):
    """Issue #16's decision rule: connection-affine hyper within 5% of the fast path in
    throughput and in CPU per request (saturated and at the fixed rate)?"""
    sat, cpu = res["saturation"], res.get("fixed_rate_cpu", {})
    if "cutover-affine" not in sat:
        return ""
    f, g = sat["cutover"], sat["cutover-affine"]
    rows = ["| affine hyper ÷ fast path | ratio | within 5%? |", "|---|---:|---|"]
    tp = g["rps"] / f["rps"]
    rows.append(f"| throughput | {tp:.3f} | {'yes' if tp >= 0.95 else 'no'} |")
    for label, a, b in (
        ("CPU per request, saturated", g["cpu_us_per_req_saturated"], f["cpu_us_per_req_saturated"]),
        ("CPU per request, fixed rate", cpu.get("cutover-affine", {}).get("cpu_us_per_req"),
         cpu.get("cutover", {}).get("cpu_us_per_req")),
    ):
        if a and b:
            rows.append(f"| {label} | {a / b:.3f} | {'yes' if a / b <= 1.05 else 'no'} |")
    return "\n\n" + "\n".join(rows)


def share_table(res):
    """The proxies' shares of the machine's CPU under saturation, and what they imply.

    With wrk, the proxy and the backend on the same cores and the cores never idle,
    req/s = cores ÷ (proxy's CPU per request + the rest's), so a proxy's cost relative
    to the rest is s ÷ (1 − s) for its share s, and at equal machine speed (the same
    rest for all, an assumption: the rest is wrk and the same backend) throughput
    ratios follow from the shares alone. They move far less between rounds than req/s
    do, which move with the machine. Derived from measured CPU times, not measured
    throughput: a model, printed as one, never a verdict."""
    sat = res["saturation"]
    shares = {n: s.get("machine_share_saturated") for n, s in sat.items()}
    shares = {n: v for n, v in shares.items() if v and 0 < v < 1}
    anchors = [n for n in ("nginx", "haproxy") if n in shares]
    if "cutover" not in shares or not anchors:
        return ""
    cost = {n: v / (1 - v) for n, v in shares.items()}  # proxy ÷ rest
    rows = ["| target | share of the machine's CPU | proxy ÷ rest | throughput at equal machine speed ÷ the faster anchor (model) |",
            "|---|---:|---:|---:|"]
    best = min(cost[n] for n in anchors)
    for n in shares:
        rows.append(f"| {n} | {100 * shares[n]:.1f} % | {cost[n]:.3f} | {(1 + best) / (1 + cost[n]):.3f} |")
    user = sat["cutover"].get("user_us_per_req_saturated")
    total = sat["cutover"].get("cpu_us_per_req_saturated")
    if user and total:
        bare = cost["cutover"] * (1 - user / total)
        rows.append(f"| cutover with no user-space time (bound) | | {bare:.3f} | {(1 + best) / (1 + bare):.3f} |")
    return "\n\n" + "\n".join(rows)


def _why(r):
    why = r.get("failed_why") or {}
    return ": " + ", ".join(f"{k} {v}" for k, v in sorted(why.items())) if why else ""


def idle_table(res):
    idle = res.get("idle")
    if not idle:
        return ""
    rows = ["| target | idle connections held | KiB per idle connection | VmRSS before → held, MiB | req/s through others while held | p99 ms | errors | held still served (of 100) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in idle.items():
        rows.append(f"| {name} | {r['held']:,} (failed {r['failed_to_open']}{_why(r)}) | {_f(r['kib_per_conn'], 2)} | "
                    f"{_f(r['rss_before_kib'] / 1024, 1)} → {_f(r['rss_held_kib'] / 1024, 1)} | {_f(r['rps'], 0)} | "
                    f"{_f(r['p99_ms'], 2)} | {r['errors']} | {r['sample_still_served']} |")
    return "\n\n" + "\n".join(rows)
