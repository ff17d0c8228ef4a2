"""Problem details (RFC 9457): the one error shape of the service's HTTP API.

A handler raises :class:`Problem`; :func:`handle_problem`, installed as the Starlette
exception handler, turns it into an ``application/problem+json`` response. Every problem
carries ``type``, ``title``, ``status``, ``detail`` and a machine-readable ``code`` (the last
part of ``type``); problems about one job also carry ``job_id``. 429 and 503 problems carry a
``Retry-After`` header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from balloons.errors import BalloonsError

from .responses import JSONResponse

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:balloons:problem:"


class Problem(BalloonsError):
    """An HTTP error answer of the service, as RFC 9457 problem details."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        job_id: str | None = None,
        retry_after: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            HTTPStatus(status)
        except ValueError:
            raise ValueError(f"problem status {status!r} is not an HTTP status code") from None
        if not 400 <= status <= 599:
            raise ValueError(f"problem status {status!r} is not an error status (400-599)")
        if not code or not code.replace("-", "").isalnum() or code.lower() != code:
            raise ValueError(f"problem code {code!r} is not lower-case words joined by '-'")
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.job_id = job_id
        self.retry_after = retry_after
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The problem document (the ``extra`` members never override the standard ones)."""
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            type=TYPE_PREFIX + self.code,
            title=HTTPStatus(self.status).phrase,
            status=self.status,
            detail=self.detail,
            code=self.code,
        )
        if self.job_id is not None:
            doc["job_id"] = self.job_id
        return doc

    def response(self) -> Response:
        """The ``application/problem+json`` response of this problem."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return JSONResponse(
            self.body(), status_code=self.status, headers=headers, media_type=MEDIA_TYPE
        )


async def handle_problem(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for :class:`Problem`."""
    if not isinstance(exc, Problem):  # pragma: no cover - registered for Problem only
        raise exc
    return exc.response()
