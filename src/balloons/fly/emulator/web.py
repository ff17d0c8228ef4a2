"""HTTP plumbing shared by every route: auth, faults, call counting, errors, request ids.

Every API route is built by :func:`api_route`, whose wrapper runs, in order: count the call
(``"METHOD /v1/route/{template}"``), authenticate, apply the rate limit and injected errors of
the route's action, run the handler, and turn an :class:`ApiError` into Fly's JSON error body.
:class:`RequestIdMiddleware` adds ``fly-request-id`` to every response, errors included.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import AUTH_FAILED, ApiError, bad_request
from .ids import IdSource
from .state import Emulator

Handler = Callable[[Request, Emulator], Awaitable[Any]]
Scoped = Literal["global", "app", "machine"]

_SCHEMES = ("bearer", "flyv1")


def error_response(error: ApiError) -> JSONResponse:
    """The JSON answer of an API error, with its status code."""
    return JSONResponse(error.body(), status_code=error.status_code)


def authenticate(request: Request, accepted: str | None) -> None:
    """401 unless ``Authorization`` is ``Bearer X`` or ``FlyV1 X`` with an accepted token."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in _SCHEMES or not token:
        raise ApiError(401, AUTH_FAILED)
    if accepted is None:
        return
    # `fly tokens deploy` prints the token with its scheme; accept it configured either way.
    expected = accepted.removeprefix("FlyV1 ").strip()
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, AUTH_FAILED)


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object body, ``{}`` when there is none; 400 for anything else."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request("invalid request: body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("invalid request: body must be a JSON object")
    return body


def lease_nonce(request: Request) -> str | None:
    """The ``fly-machine-lease-nonce`` header of the request, if any."""
    return request.headers.get("fly-machine-lease-nonce") or None


def api_route(
    method: str,
    path: str,
    action: str,
    handler: Handler,
    *,
    status_code: int = 200,
    scope: Scoped = "app",
) -> Route:
    """A ``/v1`` route running ``handler`` behind auth, faults and call counting.

    ``scope`` names what the rate limit is per: the app, the machine, or nothing.
    ``handler`` returns a JSON-able body (sent with ``status_code``) or a ready ``Response``.
    """
    key = f"{method} {path}"

    async def endpoint(request: Request) -> Response:
        emu: Emulator = request.app.state.emulator
        with emu.lock:
            emu.calls[key] += 1
        try:
            authenticate(request, emu.config.token)
            params = request.path_params
            scope_id = {
                "global": "*",
                "app": params.get("app_name", "*"),
                "machine": params.get("machine_id", "*"),
            }[scope]
            emu.faults.check_rate_limit(action, scope_id)
            emu.faults.check_error(action)
            result = await handler(request, emu)
        except ApiError as error:
            return error_response(error)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=status_code)

    return Route(path, endpoint, methods=[method], name=f"{action}:{method}")


class RequestIdMiddleware:
    """Adds a ``fly-request-id`` header to every HTTP response."""

    def __init__(self, app: ASGIApp, ids: IdSource | None = None) -> None:
        self.app = app
        self.ids = ids or IdSource()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.ids.ulid().lower()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"fly-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
