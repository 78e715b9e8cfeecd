"""Load generators (wrk, h2load) and the small clients the switch measurements use.

wrk saturates (closed loop: 64 keep-alive connections, each sends its next request
when the previous answer arrives). h2load with `--rps` sends at a fixed rate, which is
how proxy CPU per request is compared at the same work (wrk cannot rate-limit).
The probe and WebSocket clients are raw sockets so that nothing between the harness
and the proxy (no client library pool) hides which backend answered.
"""

import base64
import os
import re
import signal
import socket
import subprocess
import time

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk_argv(url, threads, conns, duration_s, timeout_s=5):
    return [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration_s}s",
        f"--timeout={timeout_s}s", "--latency", url,
    ]


def parse_wrk(out):
    r = {"raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[key] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    r["socket_errors_detail"] = m.group(0) if m else "none"
    del r["raw"]
    return r


def run_wrk(url, threads, conns, duration_s):
    out = subprocess.run(
        wrk_argv(url, threads, conns, duration_s), capture_output=True, text=True,
        timeout=duration_s + 30, check=True,
    ).stdout
    return parse_wrk(out)


class BackgroundWrk:
    """wrk for an open-ended time, stopped with SIGINT (wrk then prints its summary)."""

    def __init__(self, url, threads, conns, max_s):
        self.p = subprocess.Popen(
            wrk_argv(url, threads, conns, max_s), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGINT)
        out, _ = self.p.communicate(timeout=30)
        return parse_wrk(out)


def run_h2load(url, total_rate, clients, duration_s):
    """HTTP/1.1 at a fixed total rate: `clients` connections, each at rate/clients."""
    argv = [
        "h2load", "--h1", f"-c{clients}", f"--rps={total_rate / clients:g}",
        f"-D{duration_s}", "-T5", url,
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=True
    ).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    done, ok, failed = (int(m.group(3)), int(m.group(4)), int(m.group(5))) if m else (0, 0, 0)
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    rate = float(m.group(2)) if m else 0.0
    return {"requests": done, "succeeded": ok, "failed": failed, "rps": rate}


def _read_response(sock, buf=b""):
    """One HTTP/1.1 response (Content-Length bodies only). Returns status, headers, body, rest."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response headers")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the body")
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def get(port, path="/", timeout=5.0, sock=None):
    """GET on a new connection (or `sock`, kept alive). Returns status, headers, body."""
    own = sock is None
    if own:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        conn = "close" if own else "keep-alive"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {conn}\r\n\r\n".encode())
        status, headers, body, _ = _read_response(sock)
        return status, headers, body
    finally:
        if own:
            sock.close()


def slot_of(headers, body):
    """Which backend answered: the body of the nginx backends ("blue"/"green"), else
    Cutover's `x-cutover-slot` header."""
    text = body[:16].decode("latin-1", "replace").strip()
    if text in ("blue", "green"):
        return text
    return headers.get("x-cutover-slot")


def probe_until(port, slot, deadline_s=10.0):
    """New connections, one after the other, until `slot` answers. Returns the
    monotonic time that answer arrived and how many probes it took."""
    deadline = time.monotonic() + deadline_s
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            status, headers, body = get(port, timeout=2.0)
        except OSError:
            continue
        if status == 200 and slot_of(headers, body) == slot:
            return time.monotonic(), n
    raise RuntimeError(f"{slot} never answered on port {port} within {deadline_s}s")


class WebSocket:
    """A minimal RFC 6455 client: text frames, masked, no fragmentation."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the WebSocket handshake")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        status = int(head.split()[1])
        if status != 101:
            raise ConnectionError(f"WebSocket handshake answered {status}")

    def send_text(self, text):
        data = text.encode()
        mask = os.urandom(4)
        assert len(data) < 126
        frame = bytes([0x81, 0x80 | len(data)]) + mask
        frame += bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(frame)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("WebSocket closed")
            self.buf += chunk

    def recv_text(self):
        self._need(2)
        length = self.buf[1] & 0x7F
        self._need(2 + length)
        data = self.buf[2:2 + length]
        self.buf = self.buf[2 + length:]
        return data.decode()

    def close(self):
        try:
            self.sock.sendall(bytes([0x88, 0x80]) + b"\0\0\0\0")
        except OSError:
            pass
        self.sock.close()
