"""What the service is doing, for ``--idle-exit``: requests in flight (an open stream or
long-poll is one until it ends) and when the last one ended.

:class:`Activity` is an ASGI middleware around the whole app; :func:`idle_for` says how long
the service has had nothing to do.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send


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
