"""A plain HTTP/1.1 backend for tests/interop/http.sh (standard library only).

    python3 tests/interop/http_backend.py

Listens on 127.0.0.1, port 0, prints `listening 127.0.0.1:PORT`, and answers:
  GET  /sse          text/event-stream, chunked: EVENTS events, one per INTERVAL_S, each
                     `id: N` + `data: {"n": N, "written": UNIX_TIME}` written and flushed
                     on its own (the client checks each arrives before the next is written)
  GET  /bytes?n=N    N bytes (byte i = i % 251), with Content-Length (HEAD too)
  POST /echo         the request body back (Content-Length or chunked request), with
                     X-Body-Length, and the request's framing in X-Request-Framing
  GET  /headers      the request headers as JSON
Keep-alive on (HTTP/1.1).
"""

import json
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EVENTS = 10
INTERVAL_S = 0.2


def pattern(n: int) -> bytes:
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the test prints what matters
        pass

    def send_body(self, status: int, body: bytes, ctype: str, extra=None, head=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def read_body(self) -> tuple[bytes, str]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts), "chunked"
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n), f"content-length {n}"

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/sse":
            self.sse()
        elif url.path == "/bytes":
            n = int(query.get("n", ["0"])[0])
            self.send_body(200, pattern(n), "application/octet-stream", head=head)
        elif url.path == "/headers":
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_body(200, body, "application/json", head=head)
        else:
            self.send_body(404, b"not found\n", "text/plain", head=head)

    def do_POST(self):
        body, framing = self.read_body()
        if urllib.parse.urlsplit(self.path).path == "/echo":
            extra = {"X-Body-Length": str(len(body)), "X-Request-Framing": framing}
            self.send_body(200, body, "application/octet-stream", extra)
        else:
            self.send_body(404, b"not found\n", "text/plain")

    def sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for n in range(EVENTS):
            if n:
                time.sleep(INTERVAL_S)
            data = json.dumps({"n": n, "written": time.time()})
            event = f"id: {n}\ndata: {data}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
