"""The Starlette application: :func:`create_app`.

All state lives on ``app.state.emulator`` (an :class:`~balloons.fly.emulator.state.Emulator`);
nothing is kept in module globals, so several emulators can run side by side. The app works
with or without an ASGI lifespan: machines are supervised by a thread started with the first
machine, and the lifespan's shutdown (under uvicorn) or ``app.state.emulator.shutdown()``
(in-process, e.g. through ``httpx.ASGITransport``) kills every machine process.

Besides Fly's ``/v1`` routes there is one path of the emulator's own (no token needed):
``GET /_emulator/stats`` answers the API call counts by route, the machines by state and the
fault seed; ``DELETE /_emulator/stats`` resets the counts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import DEFAULT_DESTROYED_RETENTION, DEFAULT_REGION, EmulatorConfig
from .faults import FaultInjector, Faults
from .routes import api_routes
from .state import Emulator
from .web import RequestIdMiddleware


async def _stats(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    if request.method == "DELETE":
        with emu.lock:
            emu.calls.clear()
        return JSONResponse({"ok": True})
    with emu.lock:
        calls = dict(sorted(emu.calls.items()))
        states = Counter(str(m.state) for m in emu.machines.values())
    return JSONResponse({
        "calls": calls,
        "total_calls": sum(calls.values()),
        "machines": dict(sorted(states.items())),
        "seed": emu.faults.seed,
    })  # fmt: skip


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return JSONResponse({"error": str(detail).lower()}, status_code=status)


def create_app(
    *,
    token: str | None = None,
    secrets: Mapping[str, str] | None = None,
    image_commands: Mapping[str, Sequence[str]] | None = None,
    default_command: Sequence[str] | None = None,
    images: Mapping[str, Path] | None = None,
    path: str | None = None,
    base_env: Mapping[str, str] | None = None,
    region: str = DEFAULT_REGION,
    destroyed_retention: float = DEFAULT_DESTROYED_RETENTION,
    work_dir: Path | None = None,
    faults: Faults | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """A Fly Machines API emulator as an ASGI app.

    ``token``: the only accepted API token (default: any non-empty one). ``secrets``: secrets
    every app's machines get as env vars. ``image_commands``: default command per image
    reference, ``default_command`` for any other image. ``images``: directory standing for an
    image's filesystem, by image reference (``--image REF=DIR``). ``path``: the ``PATH`` of
    machines, on which mapped images' programs are found (default: this process's).
    ``base_env``: extra env for every machine. ``region``: default region.
    ``destroyed_retention``: seconds destroyed machines stay readable. ``work_dir``: where
    machine directories go (default: a temporary dir, removed at shutdown). ``faults``: what to
    inject. ``clock``: the rate limiter's clock.
    """
    config = EmulatorConfig(
        token=token,
        secrets=dict(secrets or {}),
        image_commands={k: list(v) for k, v in (image_commands or {}).items()},
        default_command=list(default_command) if default_command else None,
        images={ref: Path(d) for ref, d in (images or {}).items()},
        **({} if path is None else {"path": path}),
        base_env=dict(base_env or {}),
        region=region,
        destroyed_retention=destroyed_retention,
        work_dir=work_dir,
        faults=faults or Faults(),
    )
    emulator = Emulator(config, FaultInjector(config.faults, clock=clock))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        emulator.shutdown()

    routes: list[Any] = [
        *api_routes(),
        Route("/_emulator/stats", _stats, methods=["GET", "DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
        lifespan=lifespan,
    )
    app.state.emulator = emulator
    return app
