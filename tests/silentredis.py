"""Redis hosts that go silent, on 127.0.0.1 over TCP.

:class:`SilentServer` accepts connections and never answers: it reads and drops whatever
clients send (so their writes never block) and keeps every connection open, as a host whose
Redis hung, or a dead path behind a load balancer that still accepts, would look to a client.

:class:`MuteProxy` relays to a real Redis (the tests' Valkey on its unix socket) until a
client sends a command containing ``trigger`` (``b"BLMOVE"``, ``b"BLPOP"``...); from then on
the host is silent: that command is not relayed, nothing more is relayed either way on any
connection, and new connections are accepted and never answered. A wait under way when the
path dropped, then, with no end of the connection ever seen. Given a ``lag``, it holds each
reply for that long until then, as a loaded host answers; given an ``ask_lag``, each command,
as a busy server runs them late.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class _Listener:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self._socks: list[socket.socket] = []
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True, name="silent-redis").start()

    def __enter__(self) -> _Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
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
            self.accepted += 1
            self._socks.append(client)
            self.serve(client)

    def serve(self, client: socket.socket) -> None:
        threading.Thread(target=_drain, args=(client,), daemon=True).start()


def _drain(sock: socket.socket) -> None:
    """Read and drop what ``sock`` sends until it is closed."""
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


class SilentServer(_Listener):
    """Accepts, reads, never answers."""


class MuteProxy(_Listener):
    """A relay to the Redis at unix socket ``target`` that goes silent at ``trigger``."""

    def __init__(self, target: str, trigger: bytes, lag: float = 0.0, ask_lag: float = 0.0) -> None:
        self.target = target
        self.trigger = trigger
        self.lag = lag
        self.ask_lag = ask_lag
        self.muted = threading.Event()
        super().__init__()

    def serve(self, client: socket.socket) -> None:
        if self.muted.is_set():
            super().serve(client)
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.target)
        self._socks.append(upstream)
        threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, asks: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if asks and self.trigger in data:
                    self.muted.set()
                if self.muted.is_set():
                    continue  # dropped: the host is silent now
                if lag := self.ask_lag if asks else self.lag:
                    time.sleep(lag)
                    if self.muted.is_set():
                        continue
                dst.sendall(data)
