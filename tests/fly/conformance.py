"""Checks every request and response against Fly's OpenAPI spec (tests/fly/data).

:class:`Conformance` validates one exchange with openapi-core; the two transports wrap a real
httpx transport so that every exchange of a test goes through it, and
:class:`ConformanceMiddleware` checks, on the server's side, what clients the test did not
make send (a backend configured from the environment, a script in a subprocess). Requests are
validated as sent to ``https://api.machines.dev/v1/...`` (the spec's server).

Where Fly's spec and Fly's observed behaviour (or its own client, fly-go) disagree, the emulator
follows the behaviour and the checks below make a *narrow* exception, each named in
:data:`EXCEPTIONS` and counted, so a test can prove an exception was exercised:

``undeclared_error_status``
    The spec declares almost no error statuses (e.g. none for 404/408/409 on most routes), but
    Fly answers them (NOTES §1). Such a response must still be an ``ErrorResponse`` with a
    string ``error``.
``lease_envelope``
    Fly answers leases as ``{"status": "success", "data": Lease}`` where the spec says a flat
    ``Lease`` (NOTES §10): ``data`` is validated against ``Lease`` instead.
``lease_ttl_in_query``
    fly-go sends ``POST .../lease?ttl=N`` with no body; the spec requires a body (NOTES §9).
``signal_as_number``
    fly-go's ``Kill()`` sends ``{"signal": 9}``; the spec has an enum of names (NOTES §2).
``stop_timeout_as_number``
    Older docs send stop ``timeout`` as integer nanoseconds; the spec has a string (NOTES §10).
``wait_state_list``
    ``state`` on ``/wait`` is "repeated or comma-separated" per the spec's own description,
    but its schema is a single enum value: each value is checked against that enum instead.
``empty_content_with_body``
    Some 2xx responses declare no content (start, stop, delete, app create) while Fly sends a
    small JSON body (``{"ok": true}`` etc., NOTES §2): the body must then be a JSON object.

Paths outside the spec (the emulator's ``/_emulator/...``) are skipped explicitly.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import PathNotFound
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.request.exceptions import MissingRequiredRequestBody
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path(__file__).parent / "data" / "machines-openapi.json"
SPEC_HOST = "https://api.machines.dev"
#: Emulator-only paths the spec cannot know.
SKIPPED_PREFIXES = ("/_emulator/",)
EXCEPTIONS = frozenset({
    "undeclared_error_status", "lease_envelope", "lease_ttl_in_query", "signal_as_number",
    "stop_timeout_as_number", "wait_state_list", "empty_content_with_body",
})  # fmt: skip


class NonConformance(AssertionError):
    """An exchange the spec does not allow and no documented exception covers."""


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str


@dataclass
class _Response:
    status_code: int
    data: bytes | None
    headers: Headers
    content_type: str


@dataclass
class Conformance:
    """Validates exchanges; remembers them so tests can search all traffic."""

    openapi: OpenAPI
    raw_spec: dict[str, Any]
    exceptions_used: Counter[str] = field(default_factory=Counter)
    checked: int = 0
    skipped: int = 0
    exchanges: list[tuple[httpx.Request, httpx.Response]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> Conformance:
        openapi = OpenAPI.from_file_path(str(path), config=Config(spec_validator_cls=None))
        return cls(openapi, json.loads(path.read_text()))

    def schema(self, name: str) -> dict[str, Any]:
        return {**self.raw_spec["components"]["schemas"][name],
                "components": self.raw_spec["components"]}  # fmt: skip

    def _validate_schema(self, instance: Any, name: str) -> None:
        schema = self.schema(name)
        errors = list(OAS30Validator(schema).iter_errors(instance))
        if errors:
            raise NonConformance(f"{instance!r} is not a valid {name}: {errors[0].message}")

    def check(self, request: httpx.Request, response: httpx.Response) -> None:
        """Raise :class:`NonConformance` unless the exchange matches the spec."""
        self.exchanges.append((request, response))
        path = request.url.path
        if path.startswith(SKIPPED_PREFIXES):
            self.skipped += 1
            return
        oa_request = _Request(
            host_url=SPEC_HOST,
            path=path,
            method=request.method.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(list(request.url.params.multi_items())),
                header=Headers(list(request.headers.items())),
            ),
            body=request.content or None,
            content_type=request.headers.get("content-type", "application/json"),
        )
        self._check_request(oa_request, request)
        self._check_response(oa_request, request, response)
        self.checked += 1

    def _check_request(self, oa_request: _Request, request: httpx.Request) -> None:
        path = oa_request.path
        body = _json(request.content)
        if path.endswith("/wait") and len(request.url.params.get_list("state")) > 0:
            states = [s for v in request.url.params.get_list("state") for s in v.split(",") if s]
            if len(states) > 1 or request.url.params.get_list("state") != states:
                self.exceptions_used["wait_state_list"] += 1
                enum = self._param_schema(path, "get", "state")["enum"]
                bad = [s for s in states if s not in enum]
                if bad:
                    raise NonConformance(f"wait state(s) {bad} not in the spec's enum {enum}")
                # Validate the rest of the request with a single, valid state.
                params = [(k, v) for k, v in request.url.params.multi_items() if k != "state"]
                oa_request.parameters.query = ImmutableMultiDict([*params, ("state", states[0])])
        if (
            path.endswith("/signal")
            and isinstance(body, dict)
            and isinstance(body.get("signal"), int)
        ):
            self.exceptions_used["signal_as_number"] += 1
            oa_request.body = json.dumps({**body, "signal": "SIGKILL"}).encode()
        if (
            path.endswith("/stop")
            and isinstance(body, dict)
            and isinstance(body.get("timeout"), int)
        ):
            self.exceptions_used["stop_timeout_as_number"] += 1
            oa_request.body = json.dumps({**body, "timeout": "1s"}).encode()
        try:
            self.openapi.validate_request(oa_request)
        except MissingRequiredRequestBody:
            if path.endswith("/lease") and "ttl" in request.url.params:
                self.exceptions_used["lease_ttl_in_query"] += 1
                return
            raise NonConformance(f"{request.method} {path}: request body missing") from None
        except PathNotFound:
            raise NonConformance(f"{request.method} {path} is not in the spec") from None
        except Exception as exc:
            raise NonConformance(f"{request.method} {request.url}: {exc!r}") from exc

    def _check_response(
        self, oa_request: _Request, request: httpx.Request, response: httpx.Response
    ) -> None:
        if "fly-request-id" not in response.headers:
            raise NonConformance(f"{request.method} {request.url.path}: no fly-request-id")
        body = _json(response.content)
        label = f"{request.method} {request.url.path} -> {response.status_code}"
        if (
            oa_request.path.endswith("/lease")
            and oa_request.method in ("get", "post")
            and response.status_code in (200, 201)
        ):
            self.exceptions_used["lease_envelope"] += 1
            if not (isinstance(body, dict) and body.get("status") == "success"):
                raise NonConformance(f"{label}: not a lease envelope: {body!r}")
            self._validate_schema(body.get("data"), "Lease")
            return
        oa_response = _Response(
            status_code=response.status_code,
            data=response.content or None,
            headers=Headers(list(response.headers.items())),
            content_type=response.headers.get("content-type", "application/json"),
        )
        declared = self._declared(oa_request, response.status_code)
        if declared is None:
            self.exceptions_used["undeclared_error_status"] += 1
            if response.status_code < 400 or not isinstance(body, dict):
                raise NonConformance(f"{label}: undeclared non-error status or non-JSON body")
            if not isinstance(body.get("error"), str):
                raise NonConformance(f"{label}: error body without an 'error' string: {body}")
            self._validate_schema(body, "ErrorResponse")
            return
        if not declared.get("content"):
            # Nothing to validate when the spec declares no content (openapi-core would
            # report MissingData even for an empty body).
            if response.content:
                self.exceptions_used["empty_content_with_body"] += 1
                if not isinstance(body, dict):
                    raise NonConformance(f"{label}: body of an empty-content response: {body!r}")
            return
        try:
            self.openapi.validate_response(oa_request, oa_response)
        except ResponseNotFound:
            raise NonConformance(f"{label}: status not in the spec") from None
        except Exception as exc:
            raise NonConformance(f"{label}: {exc!r} body={response.text[:500]}") from exc

    def _operation(self, path: str, method: str) -> dict[str, Any]:
        relative = path.removeprefix("/v1")
        for template, ops in self.raw_spec["paths"].items():
            parts, want = template.split("/"), relative.split("/")
            if len(parts) == len(want) and all(
                p.startswith("{") or p == w for p, w in zip(parts, want, strict=True)
            ) and method in ops:  # fmt: skip
                # No two spec paths of one length differ only where one has a template.
                return dict(ops[method])
        raise NonConformance(f"{method.upper()} {path} is not in the spec")

    def _declared(self, oa_request: _Request, status: int) -> dict[str, Any] | None:
        responses = self._operation(oa_request.path, oa_request.method)["responses"]
        found = responses.get(str(status)) or responses.get("default")
        return dict(found) if found is not None else None

    def _param_schema(self, path: str, method: str, name: str) -> dict[str, Any]:
        for param in self._operation(path, method).get("parameters", []):
            if param["name"] == name:
                return dict(param["schema"])
        raise KeyError(name)


def _json(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content


class ConformantTransport(httpx.BaseTransport):
    """A sync transport that checks every exchange with :class:`Conformance`."""

    def __init__(self, inner: httpx.BaseTransport, conformance: Conformance) -> None:
        self.inner, self.conformance = inner, conformance

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        content = response.read()
        response.close()
        checked = httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )
        self.conformance.check(request, checked)
        return checked

    def close(self) -> None:
        self.inner.close()


class ConformantAsyncTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`ConformantTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, conformance: Conformance) -> None:
        self.inner, self.conformance = inner, conformance

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        await response.aclose()
        checked = httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )
        self.conformance.check(request, checked)
        return checked

    async def aclose(self) -> None:
        await self.inner.aclose()


class ConformanceMiddleware:
    """Checks every exchange an emulator serves, whoever sent it: a backend with a client of
    its own (one configured from the environment), a script in a subprocess. What does not
    conform is kept in ``failures``, for the test to report (raising here would only reach the
    client, as a 500): several servers may share one list."""

    def __init__(self, app: Any, conformance: Conformance, failures: list[str]) -> None:
        self.app, self.conformance, self.failures = app, conformance, failures

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The whole request body first (a handler may answer without reading it), then the
        # same messages for the app.
        body, more, messages = bytearray(), True, []
        while more:
            message = await receive()
            messages.append(message)
            body.extend(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        answer: dict[str, Any] = {"status": 0, "headers": [], "body": bytearray()}

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                answer["status"], answer["headers"] = message["status"], message["headers"]
            elif message["type"] == "http.response.body":
                answer["body"].extend(message.get("body", b""))
            await send(message)

        await self.app(scope, replay, capture)
        query = scope.get("query_string", b"").decode("latin-1")
        request = httpx.Request(
            scope["method"],
            f"http://emulator{scope['path']}" + (f"?{query}" if query else ""),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            content=bytes(body),
        )
        response = httpx.Response(
            answer["status"],
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer["headers"]],
            content=bytes(answer["body"]),
            request=request,
        )
        try:
            self.conformance.check(request, response)
        except NonConformance as exc:
            self.failures.append(str(exc))
