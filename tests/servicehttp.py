"""The job service of ``tests.tasks``'s app, served by uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from balloons.service.api import create_app
from balloons.service.auth import Keys
from tests import tasks
from tests.asgiserver import ServerThread

TOKEN = "service-test-token-" + "x" * 12
PROBLEM = "application/problem+json"


def problem(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    """The RFC 9457 body of ``resp``, checked to be the problem ``code`` with ``status``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["code"] == code and body["status"] == status, body
    assert body["type"] == f"urn:balloons:problem:{code}"
    return body  # type: ignore[no-any-return]


@dataclass
class Service:
    url: str
    token: str
    served: ServerThread

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {key or self.token}"}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers, **kwargs)

    def key(self, name: str, *scopes: str) -> str:
        app = tasks.app
        return Keys(app.store, app.settings.namespace).create(name, scopes)

    @property
    def activity(self) -> Any:
        return self.served.server.config.app.state.activity


@contextmanager
def serving(**options: Any) -> Iterator[Service]:
    options.setdefault("token", TOKEN)
    options.setdefault("key_cache_ttl", 0)
    web = create_app(tasks.app, **options)
    served = ServerThread(web)
    served.start()
    try:
        yield Service(served.url, options["token"] or "", served)
    finally:
        served.stop()


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """The service of ``tests.tasks``'s app, one per test module that imports this fixture."""
    with serving() as s:
        yield s


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    """An authenticated client of :func:`service`."""
    with service.client() as c:
        yield c
