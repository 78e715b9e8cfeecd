#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: repeatable on a busy machine.

    python3 bench/callgrind.py --cutover-bin target/release/cutover [--requests 20000]

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

from harness import procs, setup, switch  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cutover-bin", required=True)
    p.add_argument("--requests", type=int, default=20000)
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="cutover-callgrind-")
    ps = procs.Procs(d)
    try:
        setup.write_configs(d, os.path.abspath(a.cutover_bin))
        env = dict(os.environ, XDG_CONFIG_HOME=f"{d}/xdg", XDG_DATA_HOME=f"{d}/xdg", RUST_LOG="warn")
        daemon = ps.start("cutover", [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={d}/cg.out.%p",
            os.path.abspath(a.cutover_bin), "-c", f"{d}/cutover-general.toml", "serve", "--stop-on-exit",
        ], cwd=d, env=env)
        procs.wait_port(setup.GENERAL["api"], timeout=120, proc=daemon)
        dep = switch.deploy("web", "v1", port=setup.GENERAL["api"])
        assert dep["outcome"] == "succeeded", dep
        for s in switch.api("GET", "/api/v1/services/web", port=setup.GENERAL["api"])["slots"]:
            if s.get("handle"):
                ps.adopt(f"general-{s['slot']}", int(s["handle"].split(":")[0]))
        url = f"http://127.0.0.1:{setup.GENERAL['listen']}/"
        subprocess.run(["h2load", "--h1", "-n", "200", "-c", "8", url], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "on", str(daemon.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-z", str(daemon.pid)], check=True, capture_output=True)
        out = subprocess.run(["h2load", "--h1", "-n", str(a.requests), "-c", "8", url],
                             check=True, capture_output=True, text=True).stdout
        subprocess.run(["callgrind_control", "-i", "off", str(daemon.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(daemon.pid)], check=True, capture_output=True)
        time.sleep(1)
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
        print(f"instructions per request: {total / max(ok, 1):,.0f}")
    finally:
        ps.stop_all()
        if os.environ.get("KEEP"):
            print(d)
        else:
            subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
