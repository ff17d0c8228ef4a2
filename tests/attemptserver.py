"""The worker protocol's routes served by uvicorn for tests, as the service mounts them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from starlette.applications import Starlette
from starlette.routing import Mount

import balloons
from balloons.service.attempts import attempt_routes
from balloons.service.problems import Problem, handle_problem
from tests.asgiserver import ServerThread


@contextlib.contextmanager
def attempt_server(app: balloons.App) -> Iterator[ServerThread]:
    """``/v1/attempts`` of ``app`` on a free port; its loop's Redis connections closed at the
    end (as the service's lifespan does)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await app.store.aclose()

    asgi = Starlette(
        routes=[Mount("/v1/attempts", routes=attempt_routes(app))],
        exception_handlers={Problem: handle_problem},
        lifespan=lifespan,
    )
    with ServerThread(asgi, lifespan="on") as server:
        yield server
