"""Fixtures for the Fly Machines API emulator tests.

* ``make_client(**create_app_kwargs)``: an emulator mounted in-process through
  ``httpx.ASGITransport``, with an ``httpx.AsyncClient`` (tests are ``anyio``-marked).
* ``make_server(**create_app_kwargs)``: the same served by uvicorn on 127.0.0.1 in a thread,
  with a sync ``httpx.Client`` over real HTTP.
* Both route every exchange through :mod:`tests.fly.conformance` (Fly's OpenAPI spec); a
  served emulator also checks, server side, every exchange whoever the client.
* Every emulator is shut down after its test, and the test fails if any process group it
  started is still alive; a session-wide check looks at those groups again at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from balloons.fly.emulator import Emulator, create_app
from tests.asgiserver import ServerThread
from tests.waiting import wait_for

from .conformance import (
    Conformance,
    ConformanceMiddleware,
    ConformantAsyncTransport,
    ConformantTransport,
)

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Images the tests run, by the default command the emulator maps them to.
IMAGES: dict[str, list[str]] = {
    "emu/sleep": ["python", "-c", "import time; time.sleep(600)"],
    "emu/true": ["python", "-c", "pass"],
    "registry.fly.io/emu-app": ["python", "-c", "import sys; sys.exit(7)"],
}
#: Safety limit for anything a test waits for; never a performance threshold.
SAFETY_TIMEOUT = 30.0

_ALL_PGIDS: list[int] = []


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def assert_no_processes(pgids: list[int]) -> None:
    alive = [pgid for pgid in pgids if group_alive(pgid)]
    assert not alive, f"emulator machine process groups still alive: {alive}"


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_machine_processes() -> Iterator[None]:
    yield
    assert_no_processes(_ALL_PGIDS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def openapi_spec() -> Conformance:
    return Conformance.load()


@pytest.fixture
def conformance(openapi_spec: Conformance) -> Conformance:
    """A fresh checker (own counters and traffic log) sharing the parsed spec."""
    return Conformance(openapi_spec.openapi, openapi_spec.raw_spec)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Starlette]]:
    """Builds emulator apps with test defaults; shuts them down and checks their processes."""
    made: list[Emulator] = []

    def make(**kwargs: Any) -> Starlette:
        kwargs.setdefault("work_dir", tmp_path / f"emulator-{len(made)}")
        kwargs.setdefault("image_commands", IMAGES)
        app = create_app(**kwargs)
        made.append(app.state.emulator)
        return app

    yield make
    for emulator in made:
        emulator.shutdown()
    # A group found gone here stays gone: only one still alive is checked again at the end
    # (its id may be any new process's by then: pids wrap, quickly on a busy machine).
    alive = [pgid for e in made for pgid in e.spawned_pgids if group_alive(pgid)]
    _ALL_PGIDS.extend(alive)
    assert not alive, f"emulator machine process groups still alive: {alive}"


@pytest.fixture
async def make_client(
    anyio_backend: str, make_app: Callable[..., Starlette], conformance: Conformance
) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    clients: list[httpx.AsyncClient] = []

    async def make(**kwargs: Any) -> httpx.AsyncClient:
        app = make_app(**kwargs)
        transport = ConformantAsyncTransport(httpx.ASGITransport(app=app), conformance)
        client = httpx.AsyncClient(
            transport=transport, base_url="http://emulator", headers=AUTH, timeout=60
        )
        client.emulator = app.state.emulator  # type: ignore[attr-defined]
        # For requests the spec forbids on purpose (to test the emulator rejects them).
        raw = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://emulator", headers=AUTH
        )
        client.raw = raw  # type: ignore[attr-defined]
        client.conformance_exceptions = lambda: conformance.exceptions_used  # type: ignore[attr-defined]
        client.conformance_exchanges = lambda: conformance.exchanges  # type: ignore[attr-defined]
        clients.extend((client, raw))
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[httpx.AsyncClient]]) -> httpx.AsyncClient:
    """An in-process emulator with default settings."""
    return await make_client()


def emulator_of(client: httpx.AsyncClient | httpx.Client) -> Emulator:
    emulator: Emulator = client.emulator  # type: ignore[union-attr]
    return emulator


@dataclass
class Served:
    """A uvicorn-served emulator and a sync client for it."""

    base_url: str
    emulator: Emulator
    client: httpx.Client


class _ServerThread(ServerThread):
    def __init__(self, app: Starlette | ConformanceMiddleware) -> None:
        super().__init__(app, lifespan="on")


@pytest.fixture
def make_server(
    make_app: Callable[..., Starlette], conformance: Conformance
) -> Iterator[Callable[..., Served]]:
    running: list[tuple[_ServerThread, httpx.Client]] = []
    # Server side too: traffic from clients these fixtures did not make (a backend configured
    # from the environment, a script in a subprocess) is checked as well.
    server_side = Conformance(conformance.openapi, conformance.raw_spec)
    failures: list[str] = []

    def make(**kwargs: Any) -> Served:
        app = make_app(**kwargs)
        thread = _ServerThread(ConformanceMiddleware(app, server_side, failures))
        thread.start()
        base_url = f"http://127.0.0.1:{thread.port}"
        transport = ConformantTransport(httpx.HTTPTransport(), conformance)
        client = httpx.Client(transport=transport, base_url=base_url, headers=AUTH, timeout=60)
        client.emulator = app.state.emulator  # type: ignore[attr-defined]
        running.append((thread, client))
        return Served(base_url, app.state.emulator, client)

    yield make
    for thread, client in running:
        client.close()
        thread.stop()
    assert not failures, "\n".join(failures)


# -- FlyBackend against a served emulator --------------------------------------------------

#: The Fly app job machines belong to in the backend tests, and the image they run.
JOBS_APP = "balloons-jobs"
JOBS_IMAGE = "registry.fly.io/balloons-jobs:deployment-test"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FlyRig:
    """A uvicorn-served emulator set up as a worker app's Fly deployment would be: the app
    exists, its secrets hold the Redis URL and the signing key, machines import this repo."""

    served: Served
    conformance: Conformance
    #: What the rig made and closes when its test ends: HTTP clients, apps.
    closers: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()

    @property
    def emulator(self) -> Emulator:
        return self.served.emulator

    def backend(self, **kwargs: Any) -> Any:
        from balloons.backends.fly import FlyBackend

        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("app", JOBS_APP)
        kwargs.setdefault("api_url", self.served.base_url)
        kwargs.setdefault("image", JOBS_IMAGE)
        if "http" not in kwargs:
            kwargs["http"] = httpx.Client(
                transport=ConformantTransport(httpx.HTTPTransport(), self.conformance), timeout=60
            )
            self.closers.append(kwargs["http"].close)
        return FlyBackend(**kwargs)

    def app(self, **kwargs: Any) -> Any:
        import balloons

        backend = kwargs.pop("backend", None) or self.backend()
        app = balloons.App(backend=backend, **kwargs)
        self.closers.append(app.close)
        # A machine per job (no warm reuse) keeps the API call counts of these tests exact.
        app.pool("default", idle_timeout=0)
        return app

    def config_of(self, job_id: str, attempt: int = 1) -> dict[str, Any]:
        """The config the emulator received for the machine of ``job_id``'s ``attempt``."""
        ulid = job_id.split(".")[1]
        name = f"balloons-{ulid}-{attempt}"
        (machine,) = [m for m in self.emulator.machines.values() if m.name == name]
        config: dict[str, Any] = machine.config
        return config

    def supervised_app(self) -> Any:
        """:meth:`app` with a fast supervisor running until the rig closes."""
        app = self.app()
        sup = app.start_supervisor(interval=0.2, boot_probe=0.5, timeout_grace=0.5)
        self.closers.append(sup.stop)
        return app

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = self.served.client.get("/_emulator/stats").json()
        return body

    def reset_stats(self) -> None:
        self.served.client.delete("/_emulator/stats")

    def machines(self, **params: Any) -> list[dict[str, Any]]:
        for _ in range(50):  # the emulator may enforce Fly's rate limits on this test too
            response = self.served.client.get(f"/v1/apps/{JOBS_APP}/machines", params=params)
            if response.status_code != 429:
                break
            time.sleep(0.2)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    def wait_all_destroyed(self) -> None:
        wait_for(lambda: not self.machines(), "every machine destroyed", SAFETY_TIMEOUT, 0.2)


@pytest.fixture
def make_rig(
    make_server: Callable[..., Served], conformance: Conformance, redis_url: str, secret: str
) -> Iterator[Callable[..., FlyRig]]:
    """``make_rig(**create_app_kwargs)``: an emulator serving the jobs app over real HTTP;
    what each rig made is closed when the test ends."""

    rigs: list[FlyRig] = []

    def make(**kwargs: Any) -> FlyRig:
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("secrets", {"BALLOONS_REDIS_URL": redis_url, "BALLOONS_SECRET": secret})
        kwargs.setdefault("base_env", {"PYTHONPATH": str(ROOT)})
        served = make_server(**kwargs)
        created = served.client.post("/v1/apps", json={"name": JOBS_APP, "org_slug": "personal"})
        assert created.status_code == 201, created.text
        served.client.delete("/_emulator/stats")  # count only what the backend sends
        rigs.append(rig := FlyRig(served, conformance))
        return rig

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(make_rig: Callable[..., FlyRig]) -> FlyRig:
    return make_rig()
