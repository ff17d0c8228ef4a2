"""A relay to a Redis server on a unix socket that, while held, keeps what clients send until
it is released: a command sent then waits on Redis for as long as the test likes. A caller
that blocks its thread on such a reply gives up at its client's read timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class HoldProxy:
    def __init__(self, target: str, directory: Path) -> None:
        self.target = target
        self.path = str(directory / "hold.sock")
        self.url = f"unix://{self.path}"
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._socks: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True, name="hold-proxy").start()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        for s in [self._listener, *self._socks]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, held: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if held:
                    self._open.wait()
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
