"""A real dashboard served by uvicorn on 127.0.0.1 in a thread, for the app of ``tests.tasks``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from balloons.dashboard import create_app
from tests import tasks
from tests.asgiserver import ServerThread
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
