"""A real dashboard served by uvicorn on 127.0.0.1 in a thread, for the app of ``tests.tasks``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from balloons.dashboard import create_app
from tests import tasks
from tests.waiting import wait_for

TOKEN = "dashboard-test-token-" + "x" * 12


@dataclass
class Dashboard:
    url: str
    token: str

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)  # type: ignore[arg-type]

    @contextmanager
    def login(self) -> Iterator[httpx.Client]:
        with self.client() as client:
            resp = client.post(
                "/login", data={"token": self.token, "next": ""}, headers={"origin": self.url}
            )
            assert resp.status_code == 303, resp.text
            yield client


class ServerThread:
    def __init__(self, asgi: object) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            asgi,  # type: ignore[arg-type]
            log_level="warning",
            lifespan="off",
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

        wait_for(started, "uvicorn to start", 10, 0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn thread did not stop"


@pytest.fixture
def dashboard() -> Iterator[Dashboard]:
    served = ServerThread(create_app(tasks.app, token=TOKEN))
    served.start()
    yield Dashboard(f"http://127.0.0.1:{served.port}", TOKEN)
    served.stop()


def machines_settled(stopped: int, pool: str = "default") -> dict[str, int]:
    """Wait until ``stopped`` machines of ``pool`` have records saying so (the fork server
    writes them just after launch and just after exit, not in step with the job's record)."""
    from balloons.listing import pool_summaries

    def machines() -> dict[str, int]:
        found = {p.name: p.machines for p in pool_summaries(tasks.app.store)}
        return found.get(pool, {})

    try:
        wait_for(lambda: machines().get("stopped", 0) >= stopped, f"{stopped} stopped machines")
    except AssertionError:
        pass  # the caller's assertion shows what there is
    return machines()
