"""The job service of ``tests.tasks``'s app, served by uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from balloons.service.api import create_app
from balloons.service.auth import Keys
from tests import tasks
from tests.asgiserver import ServerThread

TOKEN = "service-test-token-" + "x" * 12


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
