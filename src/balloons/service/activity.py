"""What the service is doing, for ``--idle-exit``: requests in flight (an open stream or
long-poll is one until it ends) and when the last one ended.

:class:`Activity` is an ASGI middleware around the whole app; :func:`idle_for` says how long
the service has had nothing to do. :func:`while_connected` ends a long wait whose client has
gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")


class Activity:
    """Counts the HTTP requests in flight and notes when the last one ended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.active = 0
        self.last = time.monotonic()
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.active += 1
        self.requests += 1
        self.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.last = time.monotonic()

    def idle_for(self, now: float | None = None) -> float:
        """Seconds since the last request ended; 0 while one is in flight."""
        if self.active:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.last)


async def while_connected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """``work``'s result; None, ``work`` cancelled, once the client hangs up first. (A
    long-poll otherwise held its place among the waiters, a Redis connection and the idle
    exit for its whole wait after its client had gone.) For a request whose body is read."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            # Not awaited: a call in the thread pool ends its cancellation only once its
            # thread returns, and the request need not wait for that.
            task.add_done_callback(_quiet)
            task.cancel()
    return task.result() if task.done() and not task.cancelled() else None


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a cancelled wait's error is nobody's to see


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
