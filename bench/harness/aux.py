"""The slow and WebSocket endpoints behind each backend slot.

The backend pair is nginx (`return 200`), which can neither sleep nor speak
WebSocket; each slot's nginx proxies `/aux/` to one of these small threaded servers
(one per slot, in this Python process), which answer with their slot's name, so a
test can tell which slot served a request that crossed a switch.
"""

import base64
import hashlib
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _handler(slot):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/aux/slow":
                ms = int(urllib.parse.parse_qs(url.query).get("ms", ["0"])[0])
                time.sleep(ms / 1000)
                self._text(200, f"{slot} slept {ms}ms\n")
            elif url.path == "/aux/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
                self._websocket()
            else:
                self._text(404, "not found\n")

        def _text(self, status, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _websocket(self):
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            rf = self.rfile
            while True:
                head = rf.read(2)
                if len(head) < 2:
                    return
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(rf.read(2), "big")
                elif length == 127:
                    length = int.from_bytes(rf.read(8), "big")
                mask = rf.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(rf.read(length)))
                if opcode == 0x8:
                    self.wfile.write(bytes([0x88, 0]))
                    return
                reply = f"{slot}:{payload.decode()}".encode()
                self.wfile.write(bytes([0x81, len(reply)]) + reply)
                self.wfile.flush()

    return Handler


class AuxServers:
    """One server per slot on the given ports, in daemon threads."""

    def __init__(self, ports):
        self.servers = []
        for slot, port in ports.items():
            srv = ThreadingHTTPServer(("127.0.0.1", port), _handler(slot))
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.servers.append(srv)

    def close(self):
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()
