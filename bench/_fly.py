"""The Fly Machines API emulator for the Fly benchmarks: served by uvicorn on 127.0.0.1 in a
thread, with the jobs app created and the worker's Redis URL and key as app secrets. Not a
benchmark itself."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from _common import BENCH_DIR, SECRET

import balloons
from balloons.fly.emulator import Emulator, create_app

TOKEN = "bench-token"
JOBS_APP = "bench-jobs"
IMAGE = "registry.fly.io/bench-jobs:deployment-bench"


@dataclass
class Emu:
    url: str
    emulator: Emulator
    http: httpx.Client

    def backend(self, **kwargs: Any) -> balloons.FlyBackend:
        return balloons.FlyBackend(
            token=TOKEN, app=JOBS_APP, api_url=self.url, image=IMAGE, **kwargs
        )

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/_emulator/stats").json()
        return body

    def reset_stats(self) -> None:
        self.http.delete("/_emulator/stats")

    def _list(self, **params: str) -> list[dict[str, Any]]:
        """The jobs app's machines; a 429 (the emulator enforcing Fly's list limit on these
        reads too) is waited out."""
        while True:
            resp = self.http.get(f"/v1/apps/{JOBS_APP}/machines", params=params)
            if resp.status_code != 429:
                resp.raise_for_status()
                machines: list[dict[str, Any]] = resp.json()
                return machines
            time.sleep(0.5)

    def live_machines(self) -> int:
        return len(self._list())

    def machines_including_destroyed(self) -> list[dict[str, Any]]:
        return self._list(include_deleted="true")

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.live_machines() and time.monotonic() < deadline:
            time.sleep(0.02)


@contextlib.contextmanager
def emulator(redis_url: str, **options: Any) -> Iterator[Emu]:
    """Serve an emulator until the block ends; every machine process is killed after."""
    app = create_app(
        token=TOKEN,
        secrets={"BALLOONS_REDIS_URL": redis_url, "BALLOONS_SECRET": SECRET},
        base_env={"PYTHONPATH": str(BENCH_DIR)},
        **options,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        http.post("/v1/apps", json={"name": JOBS_APP, "org_slug": "personal"}).raise_for_status()
        yield Emu(url, app.state.emulator, http)
    finally:
        http.close()
        server.should_exit = True
        thread.join(30)
        sock.close()
        app.state.emulator.shutdown()
