"""The dashboard's HTTP plumbing: security headers, request parsing, live regions' streams.

Every response gets the security headers; a page reads its filters, page number and the path
to go back to from the request here; a live region is a stream of server-sent events.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..listing import MAX_PAGE, Filters
from ..untrusted import describe

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def filters_of(request: Request) -> tuple[Filters, int]:
    """A jobs page's filters and page number, from its query; ``ValueError`` naming a bad one."""
    query = request.query_params
    filters = Filters.parse(
        query.get("status"), query.get("task"), query.get("pool"), query.get("q")
    )
    raw_page = query.get("page") or "1"
    if not _PAGE_RE.match(raw_page) or not 1 <= int(raw_page) <= MAX_PAGE:
        raise ValueError(
            f"page must be a whole number from 1 to {MAX_PAGE}, got {describe(raw_page)}"
        )
    return filters, int(raw_page)


_PAGE_RE = re.compile(r"\A[0-9]{1,7}\Z")


def safe_next(raw: str) -> str:
    """A local path to go back to after login; anything else (another site) is dropped."""
    # Browsers drop tabs and newlines from URLs and read "\\" as "/": "/\t/x" would be "//x".
    if any(c.isspace() or c == "\\" or not c.isprintable() for c in raw):
        return ""
    if raw.startswith("/") and not raw.startswith("//"):
        return raw
    return ""


def query_of(filters: Filters) -> str:
    """The query string that selects ``filters`` again."""
    fields = {
        "status": filters.status.value if filters.status else "",
        "task": filters.task or "",
        "pool": filters.pool or "",
        "q": filters.query,
    }
    return urlencode({k: v for k, v in fields.items() if v})


def sse(event: str, data: str) -> str:
    lines = data.splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def stream(
    render: Callable[[], Awaitable[tuple[str, bool]]], wait: Callable[[], Awaitable[Any]]
) -> StreamingResponse:
    """A live region's events: its HTML (``render``) whenever it changed, re-read after each
    ``wait``, until ``render`` says the region is final."""

    async def events() -> AsyncIterator[str]:
        last = None
        while True:
            html, done = await render()
            if html != last:
                last = html
                yield sse("update", html)
            else:
                yield ": still here\n\n"  # finds a closed connection early
            if done:
                yield sse("end", "")
                return
            await wait()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
