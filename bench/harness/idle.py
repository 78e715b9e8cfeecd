"""Memory per idle keep-alive connection, and throughput while many are held.

Why: a proxy in front of browsers holds far more idle keep-alive connections than busy
ones, so what an idle connection costs decides how many a machine can hold. Method,
per target: VmRSS of the proxy's processes (nginx: master + workers) before; open
`n` keep-alive connections, one `GET /` each (answered 200), then held without a
byte; wait `settle_s` (Cutover lets go of an idle connection's upstream connection
after its idle limit); VmRSS again. (after - before) / n is the memory per idle
connection. Then `wrk` loads the proxy through a separate set of `load_conns`
connections while all of them are still held, and a sample of the held connections
each sends one more request, to show they are still served.

The harness raises its own open-file limit to the hard limit (`resource.setrlimit`);
`n` must stay below it.
"""

import resource
import selectors
import socket
import time

from . import load, procs

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, need + 1024)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _answered(buf):
    """Whether `buf` holds a whole response with a Content-Length body."""
    if b"\r\n\r\n" not in buf:
        return False
    head, rest = buf.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(rest) >= int(v.strip())
    return True


def open_idle(port, n, batch=500, timeout_s=60.0):
    """`n` connections that each got one answer and stay open. Returns (socks, failed),
    `failed` a dict of why: `error` (connect, send or recv failed: refused or reset),
    `closed` (closed before a whole answer), `status NNN` (answered, not 200), `timeout`
    (no whole answer by the deadline)."""
    held, failed = [], {}

    def fail(why):
        failed[why] = failed.get(why, 0) + 1

    deadline = time.monotonic() + timeout_s
    while len(held) + sum(failed.values()) < n and time.monotonic() < deadline:
        want = min(batch, n - len(held) - sum(failed.values()))
        sel = selectors.DefaultSelector()
        pending = {}
        for _ in range(want):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            pending[s] = b""
            sel.register(s, selectors.EVENT_WRITE)
        sent = set()
        while pending and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=1.0):
                s = key.fileobj
                why = None
                try:
                    if s not in sent:
                        s.send(REQUEST)
                        sent.add(s)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    chunk = s.recv(4096)
                    if not chunk:
                        why = "closed"
                except OSError as e:
                    why = f"error {e.errno}"
                if why:
                    sel.unregister(s)
                    s.close()
                    del pending[s]
                    fail(why)
                    continue
                pending[s] += chunk
                if _answered(pending[s]):
                    status = pending[s].split(b" ", 2)[1]
                    sel.unregister(s)
                    del pending[s]
                    if status == b"200":
                        held.append(s)
                    else:
                        s.close()
                        fail(f"status {status.decode(errors='replace')}")
        for s in pending:
            s.close()
            fail("timeout")
        sel.close()
    return held, failed


def still_served(socks, sample):
    """One more request on each of `sample` held connections; how many got a 200."""
    ok = 0
    for s in socks[:sample]:
        try:
            s.setblocking(True)
            s.settimeout(5.0)
            status, _, _ = load.get(0, sock=s)
            ok += status == 200
        except OSError:
            pass
    return ok


def measure(target, n, settle_s, load_conns, duration_s, log):
    pids = target.pids()
    before = procs.rss_kib(pids)
    t0 = time.monotonic()
    socks, why = open_idle(target.port, n)
    failed = sum(why.values())
    opened = time.monotonic()
    opened_s = opened - t0
    try:
        # VmRSS over time as well: how fast the memory of the opening burst is
        # returned. The headline figure is the one at `settle_s`, once every
        # connection has gone idle and the allocator has had time to give back.
        series = {}
        for at in (1.0, 2.0, 3.0, 6.0, settle_s):
            wait = opened + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            series[f"{at:g}s"] = procs.rss_kib(target.pids())
        after = series[f"{settle_s:g}s"]
        res = {
            "held": len(socks), "failed_to_open": failed, "failed_why": why, "open_s": round(opened_s, 2),
            "rss_before_kib": before, "rss_held_kib": after, "settle_s": settle_s,
            "kib_per_conn": (after - before) / len(socks) if socks else None,
            "kib_per_conn_over_time": {
                k: round((v - before) / len(socks), 3) for k, v in series.items()
            } if socks else None,
        }
        w = load.run_wrk(target.url, 2, load_conns, duration_s)
        res.update({
            "load_conns": load_conns, "rps": w["rps"], "p99_ms": w["p99_ms"],
            "errors": w["non2xx"] + w["socket_errors"],
            "rss_load_kib": procs.rss_kib(target.pids()),
        })
        res["sample_still_served"] = still_served(socks, 100)
    finally:
        for s in socks:
            s.close()
    log(f"  {target.name:16} held {res['held']} (failed {failed} {why or ''}, {opened_s:.1f} s), "
        f"{res['kib_per_conn'] or 0:.2f} KiB/conn (RSS {before} -> {after} KiB), under load {res['rps']:.0f} req/s p99 {res['p99_ms']} ms, "
        f"{res['sample_still_served']}/100 held still served; over time {res['kib_per_conn_over_time']}")
    return res
