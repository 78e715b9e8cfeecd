#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: repeatable on a busy machine.

    python3 bench/callgrind.py --cutover-bin target/release/cutover [--requests 20000]
        [--mode h1|h1tls|h2|handshake]

Why: wall-clock benchmarks on a shared machine move by ±15 % between runs, too much to
see a change of a few per cent in the proxy's own code. Callgrind counts the
instructions the daemon executes, which do not depend on the machine's load. Method:
the daemon runs under `valgrind --tool=callgrind` with its instrumentation off
(`--instr-atstart=no`); after the deploy, it is switched on and the counters zeroed
(`callgrind_control -i on`, `-z`), `h2load --h1 -n N -c 8` sends N requests through the
proxy, the counters are dumped, and the total instruction count (`Ir`) is divided by
N. The kernel's share (system calls, TCP) is not counted: this measures the proxy's
user-space code only. Set CUTOVER_PROXY_FAST_PATH=0 or CUTOVER_PROXY_AFFINE=1 in the
environment to count the other paths.

Modes: `h1` (above, plaintext), `h1tls` (the same load over TLS with ALPN http/1.1
through the listener of `harness/tls.py`: the fast path over rustls), `h2` (the TLS listener of `harness/tls.py`, h2load
`-c16 -m16` over TLS with ALPN h2: instructions per HTTP/2 request, the handshakes
amortised away) and `handshake` (the same listener, wrk `-c8` with `Connection: close`
for `--seconds`: every request a new TCP connection and full TLS 1.3 handshake, so
instructions per handshake and its one request). `--tls13-tickets N` sets the
listener's `tls13_tickets`.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import load, procs, setup, switch, tls  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cutover-bin", required=True)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--mode", choices=["h1", "h1tls", "h2", "handshake"], default="h1")
    p.add_argument("--tls13-tickets", type=int, help="h2/handshake modes: the listener's tls13_tickets")
    p.add_argument("--seconds", type=int, default=20, help="handshake mode: how long wrk runs")
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="cutover-callgrind-")
    ps = procs.Procs(d)
    try:
        env = dict(os.environ, XDG_CONFIG_HOME=f"{d}/xdg", XDG_DATA_HOME=f"{d}/xdg", RUST_LOG="warn")
        if a.mode == "h1":
            setup.write_configs(d, os.path.abspath(a.cutover_bin))
            config, api, prefix = f"{d}/cutover-general.toml", setup.GENERAL["api"], "general"
            url = f"http://127.0.0.1:{setup.GENERAL['listen']}/"
        else:
            tls.make_cert(d)
            for slot, port in (("blue", tls.BLUE), ("green", tls.GREEN)):
                with open(f"{d}/tls-backend-{slot}.conf", "w") as f:
                    f.write(setup.backend_conf(d, slot, port, f"tls-backend-{slot}"))
            with open(f"{d}/cutover-tls.toml", "w") as f:
                f.write(tls.cutover_toml(d, a.tls13_tickets))
            config, api, prefix = f"{d}/cutover-tls.toml", tls.API, "tls"
            url = tls.url("cutover")
        daemon = ps.start("cutover", [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={d}/cg.out.%p",
            os.path.abspath(a.cutover_bin), "-c", config, "serve", "--stop-on-exit",
        ], cwd=d, env=env)
        procs.wait_port(api, timeout=120, proc=daemon)
        dep = switch.deploy("web", "v1", port=api)
        assert dep["outcome"] == "succeeded", dep
        for s in switch.api("GET", "/api/v1/services/web", port=api)["slots"]:
            if s.get("handle"):
                ps.adopt(f"{prefix}-{s['slot']}", int(s["handle"].split(":")[0]))
        load_argv = {
            "h1": ["h2load", "--h1", "-n", str(a.requests), "-c", "8", url],
            "h1tls": ["h2load", "--h1", "-n", str(a.requests), "-c", "8", url],
            "h2": ["h2load", "-n", str(a.requests), "-c", "16", "-m", "16", url],
            "handshake": [*load.wrk_argv(url, 1, 8, a.seconds, timeout_s=30)],
        }[a.mode]
        if a.mode == "handshake":
            load_argv[1:1] = ["-H", "Connection: close"]
        warm = ["h2load", *(["--h1"] if a.mode in ("h1", "h1tls") else []), "-n", "200", "-c", "8", url]
        subprocess.run(warm, check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "on", str(daemon.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-z", str(daemon.pid)], check=True, capture_output=True)
        out = subprocess.run(load_argv, check=True, capture_output=True, text=True).stdout
        subprocess.run(["callgrind_control", "-i", "off", str(daemon.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(daemon.pid)], check=True, capture_output=True)
        time.sleep(1)
        if a.mode == "handshake":
            w = load.parse_wrk(out)
            ok = w["requests"] - w["non2xx"] - w["socket_errors"]
            a.requests = w["requests"]
        else:
            m = re.search(r"(\d+) succeeded, (\d+) failed", out)
            ok = int(m.group(1)) if m else 0
        total = 0
        for f in glob.glob(f"{d}/cg.out.*"):
            for line in open(f, errors="replace"):
                # `totals`: `summary` wraps around after the counters are zeroed.
                if line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
        print(f"requests succeeded: {ok} of {a.requests}")
        print(f"instructions (Ir), all threads: {total:,}")
        print(f"instructions per request{' (each a new handshake)' if a.mode == 'handshake' else ''}: "
              f"{total / max(ok, 1):,.0f}")
    finally:
        ps.stop_all()
        if os.environ.get("KEEP"):
            print(d)
        else:
            subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
