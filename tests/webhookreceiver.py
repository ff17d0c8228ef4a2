"""A webhook receiver on 127.0.0.1 for tests: an ``http.server`` in a thread that records every
request (path, headers, body) and answers each path with the statuses it is told, in turn
(200 once they run out). It verifies nothing itself: tests check the signatures with their
own code."""

from __future__ import annotations

import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # this host's clock when it arrived


class Receiver:
    """``url(path)`` is where to send; ``got(path)`` what arrived there; ``answer(path,
    500, 503)`` makes the next requests to ``path`` get those statuses."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.statuses: dict[str, list[int]] = defaultdict(list)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size)
                got = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
                with receiver.lock:
                    receiver.requests.append(got)
                    queue = receiver.statuses[self.path]
                    status = queue.pop(0) if queue else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *statuses: int) -> None:
        with self.lock:
            self.statuses[path].extend(statuses)

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
