"""The service's exception handlers: every error answered as a problem (RFC 9457)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import JobNotFound
from ..untrusted import shown
from .problems import Problem


async def problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    resp = exc.response()
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="balloons"'
    return resp


async def http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404:
        detail = f"no such resource: {shown(request.url.path)[:200]}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {shown(request.url.path)[:200]}"
    status = exc.status_code if 400 <= exc.status_code <= 599 else 400
    resp = Problem(status, code, detail).response()
    for k, v in (exc.headers or {}).items():
        resp.headers[k] = v
    return resp


async def store_problem(request: Request, exc: Exception) -> Response:
    # The message names the masked URL, never a password.
    if "WRONGTYPE" in str(exc.__context__ or ""):  # a key of another type: altered in Redis
        return Problem(
            409,
            "record-invalid",
            "what Redis holds for this request cannot be read (altered in Redis?): "
            + str(exc)[:300],
        ).response()
    return Problem(503, "store-unavailable", str(exc), retry_after=1).response()


async def not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobNotFound)
    return Problem(404, "job-not-found", str(exc), job_id=exc.job_id).response()
