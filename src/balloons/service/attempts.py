"""The HTTP worker protocol: the attempt URL a machine of any language talks to.

``attempt_routes(app)`` returns the Starlette routes the service mounts under
``/v1/attempts``: ``GET /{job_id}/{attempt}`` and ``POST`` to its ``heartbeat``,
``progress``, ``logs``, ``complete`` and ``fail``. Each call carries the attempt's token
(``Authorization: Bearer``, see :mod:`balloons.service.tokens`), checked before Redis is
read. Every state change is one of the scripts the Python worker uses (``CLAIM``,
``HEARTBEAT``, ``APPEND_LOGS``, ``FINISH``), fenced by the attempt: a call of an attempt the
job has moved on from answers ``409 attempt-superseded`` and records nothing, and an outcome
is recorded once (the first ``complete`` or ``fail`` wins; a repeated ``complete`` answers
as the first did). Results are stored as JSON, tagged with the app's secret as a worker tags
them, so every reader verifies them as it verifies a task's. The protocol is documented in
docs/worker-protocol.md (its version: :data:`PROTOCOL_VERSION`).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import StoreError
from ..registry import COMMAND_TASK
from ..retry import decide, retry_argv
from ..signing import seal_error, sign_grant, sign_outcome, verify
from ..states import Reason
from ..store import lua
from ..store.keys import JobKeys
from ..untrusted import shown
from . import submission, tokens
from .problems import Problem
from .responses import JSONResponse

if TYPE_CHECKING:
    from ..app import App

PROTOCOL_VERSION = 1
#: Largest request body of any call but ``logs``.
MAX_BODY = 1 << 20
#: Largest ``logs`` batch, in bytes and in lines.
MAX_LOG_BATCH = 1 << 20
MAX_LOG_LINES = 1000
#: Longest log line kept (longer ones are cut).
MAX_LINE_CHARS = 16_384
#: Characters kept of a failure's type, message and traceback.
MAX_ERROR_CHARS = {"type": 200, "message": 4000, "traceback": 32_000}
MAX_ATTEMPT = 1_000_000
#: The reasons a ``fail`` may give (default ``task_error``).
FAIL_REASONS = frozenset({"task_error", "timeout", "oom", "serialization", "task_not_found"})
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
_FIELDS = ("status", "attempt", "payload", "args", "sig", "slot")


def attempt_routes(app: App) -> list[BaseRoute]:
    """The worker protocol's routes, for the service to mount under ``/v1/attempts``."""
    p = _Protocol(app)
    base = "/{job_id}/{attempt:int}"
    return [
        Route(base, p.get, methods=["GET"]),
        Route(base + "/heartbeat", p.heartbeat, methods=["POST"]),
        Route(base + "/progress", p.progress, methods=["POST"]),
        Route(base + "/logs", p.logs, methods=["POST"]),
        Route(base + "/complete", p.complete, methods=["POST"]),
        Route(base + "/fail", p.fail, methods=["POST"]),
    ]


class _Attempt:
    """One call's attempt once its token verified: the job's keys, its record's fields."""

    def __init__(self, jk: JobKeys, n: int, expires: float, rec: dict[str, bytes]) -> None:
        self.jk, self.n, self.expires, self.rec = jk, n, expires, rec

    @property
    def job_id(self) -> str:
        return self.jk.job_id

    @property
    def status(self) -> str:
        return self.rec.get("status", b"").decode("ascii", "replace")

    @property
    def deadline(self) -> float:
        return self.expires - tokens.GRACE

    def spec(self) -> dict[str, Any]:
        raw = self.rec.get("payload") or b"{}"
        got = json.loads(raw)
        return got if isinstance(got, dict) else {}


class _Protocol:
    def __init__(self, app: App) -> None:
        self.app = app

    # ------------------------------------------------------------- the calls
    async def get(self, request: Request) -> Response:
        """The attempt's spec, input and deadline; marks a job still starting as running."""
        a = await self._attempt(request, need_running=False)
        if a.status == "STARTING":
            await self._claim(a)
        elif a.status != "RUNNING":
            raise _finished(a)
        spec, command = a.spec(), self._command(a)
        body: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "job_id": a.job_id,
            "attempt": a.n,
            "deadline": a.deadline,
            "timeout": _seconds(spec.get("timeout")),
            "task": str(spec.get("task", "")),
            "input": command.get("input") if command is not None else None,
        }
        if command is not None:
            body["command"] = {"cmd": command.get("cmd"), "image": command.get("image")}
        else:
            body["call"] = self._call(a)
        return JSONResponse(body)

    async def heartbeat(self, request: Request) -> Response:
        """Renew the lease of the attempt's slot; ``{cancel, deadline}``."""
        a = await self._attempt(request, need_running=False)
        if a.status == "CANCELLED":
            return JSONResponse({"cancel": True, "deadline": a.deadline})
        if a.status != "RUNNING":
            raise _finished(a)
        slot = a.rec.get("slot", b"").decode("ascii", "replace")
        if slot:
            left = max(0.0, a.deadline - time.time())
            raw = await self.app.store.eval_async(
                lua.HEARTBEAT, a.jk.pool, slot, a.jk.ulid, a.n, f"+{left!r}", "",
                jobs=(a.jk.ulid,),
            )  # fmt: skip
            status = _text(raw[1]) if isinstance(raw, list) and len(raw) > 1 else ""
            if status == "MOVED":
                raise _superseded(a)
            if status not in ("RUNNING", ""):
                return JSONResponse({"cancel": True, "deadline": a.deadline})
        return JSONResponse({"cancel": False, "deadline": a.deadline})

    async def progress(self, request: Request) -> Response:
        """``{fraction, note}``: how far the attempt got."""
        a = await self._attempt(request)
        body = _object(await _body(request, MAX_BODY))
        fraction, note = body.get("fraction"), body.get("note", "")
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0.0 <= fraction <= 1.0
        ):
            raise _invalid(a, f"fraction must be a number from 0 to 1, got {_brief(fraction)}")
        if not isinstance(note, str):
            raise _invalid(a, f"note must be a string, got {_brief(note)}")
        note = note[:200].encode("utf-8", "replace").decode("utf-8")
        text = f"{float(fraction):.4f}"
        tag = sign_outcome(self._secret(), "progress", a.job_id, a.n, f"{text}\n{note}".encode())
        await self._append(a, text, note, tag, [])
        return JSONResponse({"ok": True})

    async def logs(self, request: Request) -> Response:
        """NDJSON lines, each ``{"text": ..., "source": "out" | "err"}``; all or none kept."""
        a = await self._attempt(request)
        raw = await _body(request, MAX_LOG_BATCH)
        rows = raw.split(b"\n")
        lines: list[str] = []
        now = time.time()
        for number, row in enumerate(rows, 1):
            if not row.strip():
                continue
            if len(lines) >= MAX_LOG_LINES:
                raise Problem(
                    413, "too-many-lines",
                    f"a batch holds at most {MAX_LOG_LINES} lines: send the rest in another",
                    job_id=a.job_id,
                )  # fmt: skip
            item = _object(row, f"line {number}: ")
            text, source = item.get("text"), item.get("source", "out")
            if not isinstance(text, str) or source not in ("out", "err"):
                raise _invalid(
                    a, f'line {number}: expected {{"text": string, "source": "out" | "err"}}'
                )
            text = text.replace("\n", " ")[:MAX_LINE_CHARS]
            lines.append(f"{now:.6f} {source} {text.encode('utf-8', 'replace').decode()}")
        stored = await self._append(a, "", "", "", lines)
        return JSONResponse({"stored": stored})

    async def complete(self, request: Request) -> Response:
        """``{result}`` (JSON): the attempt succeeded. Idempotent."""
        a = await self._attempt(request, need_running=False)
        raw = await _body(request, MAX_BODY)
        body = _object(raw)
        if "result" not in body:
            raise _invalid(a, 'expected {"result": ...}')
        if submission.lone_surrogate(raw, body):  # a string with no UTF-8 form: no result
            raise _invalid(a, "result holds a lone surrogate (\\ud800-\\udfff not in a pair)")
        if a.status == "SUCCEEDED" and _int(a.rec.get("attempt")) == a.n:
            return JSONResponse({"state": "succeeded"})  # a repeated complete
        if a.status != "RUNNING":
            raise _finished(a)
        data = json.dumps(body["result"], separators=(",", ":")).encode()
        tag = sign_outcome(self._secret(), "result/json", a.job_id, a.n, data)
        code = await self._finish(a, "SUCCEEDED", data, "", "", None, tag)
        if code == -3:  # ended meanwhile: the same answer as before, if it was this
            again = await self._attempt(request, need_running=False)
            if again.status == "SUCCEEDED" and _int(again.rec.get("attempt")) == a.n:
                return JSONResponse({"state": "succeeded"})
            raise _finished(again)
        return JSONResponse({"state": "succeeded"})

    async def fail(self, request: Request) -> Response:
        """``{error: {type, message, traceback}, retryable}``: the attempt failed."""
        a = await self._attempt(request)
        body = _object(await _body(request, MAX_BODY))
        err, retryable = body.get("error"), body.get("retryable", False)
        reason = body.get("reason", Reason.TASK_ERROR.value)
        if reason not in FAIL_REASONS:
            raise _invalid(a, f"reason must be one of {sorted(FAIL_REASONS)}, got {_brief(reason)}")
        if not isinstance(err, dict) or not isinstance(retryable, bool):
            raise _invalid(
                a, 'expected {"error": {"type", "message", "traceback"}, "retryable": bool}'
            )
        error: dict[str, str] = {"reason": str(reason)}
        for name, limit in MAX_ERROR_CHARS.items():
            value = err.get(name, "")
            if not isinstance(value, str):
                raise _invalid(a, f"error.{name} must be a string, got {_brief(value)}")
            error[name] = value[:limit].encode("utf-8", "replace").decode("utf-8")
        plan = decide(a.spec(), a.n, reason) if retryable else None
        text, tag = seal_error(self._secret(), a.job_id, a.n, error)
        code = await self._finish(a, "FAILED", b"", text, reason, plan, tag)
        if code == -3:
            raise _finished(await self._attempt(request, need_running=False))
        return JSONResponse({"state": "retrying" if code == 2 else "failed"})

    # --------------------------------------------------------------- helpers
    def _secret(self) -> bytes:
        return self.app.secret.encode()

    async def _attempt(self, request: Request, need_running: bool = True) -> _Attempt:
        """The call's attempt: its token verified (before Redis is read), its job's record
        read and its signature checked, and the job still on that attempt."""
        job_id = str(request.path_params["job_id"])
        n = int(request.path_params["attempt"])
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "token-invalid", "send the attempt token: Authorization: Bearer")
        try:
            expires = tokens.check(self._secret(), token.strip(), job_id, n, time.time())
        except tokens.TokenError as exc:
            raise Problem(403 if exc.code == "token-scope" else 401, exc.code, str(exc)) from None
        if not 1 <= n <= MAX_ATTEMPT:
            raise Problem(404, "not-found", f"attempt {n} is out of range")
        try:
            jk = JobKeys.of(self.app.settings.namespace, job_id)
        except ValueError:
            raise Problem(404, "not-found", "no such job") from None
        rec = await self._record(jk)
        if not rec:
            raise Problem(404, "not-found", "the job's record is gone", job_id=job_id)
        a = _Attempt(jk, n, expires, rec)
        if not verify(self._secret(), rec.get("payload", b""), rec.get("args", b""),
                      rec.get("sig", b"")):  # fmt: skip
            raise Problem(409, "record-invalid", "the job's record does not verify", job_id=job_id)
        if _int(rec.get("attempt")) != n:
            raise _superseded(a)
        if need_running and a.status != "RUNNING":
            raise _finished(a)
        return a

    async def _record(self, jk: JobKeys) -> dict[str, bytes]:
        store = self.app.store
        with store.errors():
            values = await store.aredis.hmget(jk.job, list(_FIELDS))
        return {k: v for k, v in zip(_FIELDS, values, strict=True) if isinstance(v, bytes)}

    def _command(self, a: _Attempt) -> dict[str, Any] | None:
        """A command job's spec (its signed argument, JSON), else None."""
        if a.spec().get("task") != COMMAND_TASK or a.spec().get("ser") != "json":
            return None
        try:
            call = json.loads(a.rec.get("args") or b"")
            spec = call["args"][0] if isinstance(call, dict) else None
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        return spec if isinstance(spec, dict) else None

    def _call(self, a: _Attempt) -> dict[str, Any] | None:
        """A task job's arguments (``{args, kwargs}``) when they are JSON (the record's
        signature verified), for a Python worker in HTTP mode; None otherwise."""
        if a.spec().get("ser") != "json":
            return None
        try:
            call = json.loads(a.rec.get("args") or b"")
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return None
        ok = isinstance(call, dict) and isinstance(call.get("args"), list)
        return {"args": call["args"], "kwargs": call.get("kwargs") or {}} if ok else None

    async def _claim(self, a: _Attempt) -> None:
        """``CLAIM`` a job still starting (a machine with no worker of balloons'): it runs."""
        from ..machine.attempt import BAD_SLOT

        text, tag = seal_error(self._secret(), a.job_id, a.n, BAD_SLOT)
        raw = await self.app.store.eval_async(
            lua.CLAIM, a.jk.pool, a.jk.ulid, a.n, "", text, tag, jobs=(a.jk.ulid,)
        )
        code = raw[0] if isinstance(raw, list) and raw else None
        if code != 1:
            raise Problem(
                409, "attempt-superseded", "the attempt could not be claimed", job_id=a.job_id
            )

    async def _append(
        self, a: _Attempt, fraction: str, note: str, tag: str, lines: list[str]
    ) -> int:
        from ..machine.capture import MAX_LOG_LINES as KEEP

        raw = await self.app.store.eval_async(
            lua.APPEND_LOGS, a.jk.pool, a.jk.ulid, a.n, KEEP, fraction, note, tag, *lines,
            jobs=(a.jk.ulid,),
        )  # fmt: skip
        if raw == -2:
            raise _superseded(a)
        if raw == -1:
            raise Problem(404, "not-found", "the job's record is gone", job_id=a.job_id)
        return int(raw) if isinstance(raw, int) else 0

    async def _finish(
        self,
        a: _Attempt,
        status: str,
        data: bytes,
        error: str,
        reason: str,
        plan: Any,
        tag: str,
    ) -> int:
        grant = "" if plan is None else sign_grant(self._secret(), a.job_id, a.n + 1, time.time())
        raw = await self.app.store.eval_async(
            lua.FINISH, a.jk.pool, a.jk.ulid, a.n, "", status, data, error, reason,
            *retry_argv(plan), tag, grant, jobs=(a.jk.ulid,),
        )  # fmt: skip
        code = int(raw) if isinstance(raw, int) else 0
        if code == -2:
            raise _superseded(a)
        if code == -1:
            raise Problem(404, "not-found", "the job's record is gone", job_id=a.job_id)
        if code not in (1, 2, -3):
            raise StoreError(f"FINISH answered {raw!r}")
        return code


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _seconds(value: Any) -> float | None:
    """A payload's timeout (seconds), None when it has none or is no number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < 1e9 else None


def _int(value: bytes | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 10 else -1


def _superseded(a: _Attempt) -> Problem:
    return Problem(
        409,
        "attempt-superseded",
        f"attempt {a.n} of this job was superseded: nothing it sends is recorded",
        job_id=a.job_id,
    )


def _finished(a: _Attempt) -> Problem:
    status = a.status.lower() if a.status in _TERMINAL else "not running"
    return Problem(
        409,
        "job-finished",
        f"the job is {status}: nothing this attempt sends is recorded",
        job_id=a.job_id,
        extra={"state": status},
    )


def _invalid(a: _Attempt, detail: str) -> Problem:
    return Problem(400, "invalid", detail, job_id=a.job_id)


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 past ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "payload-too-large", f"the body is over {limit:,} bytes")
    chunks, size = [], 0
    async with submission.gone_mid_body():
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, "payload-too-large", f"the body is over {limit:,} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def _object(raw: bytes, where: str = "") -> dict[str, Any]:
    """A JSON object (strict: no NaN, infinity or number out of range), else 400
    ``invalid-json``."""
    try:
        value = json.loads(
            raw, parse_constant=submission.no_constant, parse_float=submission.finite
        )
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "invalid-json", f"{where}the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Problem(400, "invalid-json", f"{where}expected a JSON object")
    return value


__all__ = ["MAX_LOG_BATCH", "MAX_LOG_LINES", "PROTOCOL_VERSION", "attempt_routes"]


def _brief(value: Any) -> str:
    """A value a machine sent, as safe short text for a problem's detail."""
    return shown(repr(value)[:80])
