"""A real ASGI app served by uvicorn on 127.0.0.1 in a thread, for tests of HTTP servers."""

from __future__ import annotations

import socket
import threading
from typing import Literal

import uvicorn

from tests.waiting import wait_for

#: Safety limit for the server to start or stop (never a performance threshold).
SAFETY_TIMEOUT = 30.0


class ServerThread:
    """uvicorn on a free port of 127.0.0.1; ``url`` is its base URL once started."""

    def __init__(self, asgi: object, *, lifespan: Literal["on", "off"] = "off") -> None:
        # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on the connections of a
        # socket whose proto says TCP; without it every answer waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            asgi,  # type: ignore[arg-type]
            log_level="warning",
            lifespan=lifespan,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()

        def started() -> bool:
            assert self.thread.is_alive(), "uvicorn thread died during start-up"
            return bool(self.server.started)

        wait_for(started, "uvicorn to start", SAFETY_TIMEOUT, 0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(SAFETY_TIMEOUT)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn thread did not stop"

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
