"""A socket-activating front for ``balloons serve``, as a platform's proxy is (Fly's, with
``auto_start_machines``): it listens, starts the service on the first connection that finds
none running, and relays bytes both ways. The service exits by itself when idle
(``--idle-exit``); the next connection starts it again."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Sequence

from tests.ports import free_port

#: Safety limit for the service to answer after a start (never a performance threshold).
START_LIMIT = 60.0


class Activator:
    def __init__(self, argv: Sequence[str], cwd: str) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.starts = 0
        #: The request line of the first request of each connection, in arrival order, and
        #: of each connection that started the service (what woke it).
        self.requests: list[str] = []
        self.woken_by: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Activator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                self.proc.wait(30)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _upstream(self, line: str) -> socket.socket:
        """A connection to the service, started first if none runs."""
        with self._lock:
            self.requests.append(line)
            if not self.running():
                self._port = free_port()
                self.proc = subprocess.Popen([*self.argv, "--port", str(self._port)], cwd=self.cwd)
                self.starts += 1
                self.woken_by.append(line)
            deadline = time.monotonic() + START_LIMIT
            while True:
                try:
                    up = socket.create_connection(("127.0.0.1", self._port), timeout=5)
                    up.settimeout(None)  # a long-poll may be quiet for as long as it waits
                    return up
                except OSError:
                    assert self.proc is not None
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            head = conn.recv(1024, socket.MSG_PEEK)  # an HTTP client speaks first
            up = self._upstream(head.split(b"\r\n", 1)[0].decode("latin-1"))
        except OSError:
            conn.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(up, conn), daemon=True)
        back.start()
        pump(conn, up)
        back.join()
        conn.close()
        up.close()
