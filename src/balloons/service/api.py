"""The job service's Starlette app: the producer API under ``/v1``.

Routes (each needs ``Authorization: Bearer KEY`` with the scope named)::

    POST /v1/jobs                   jobs:write  submit a task or command job (Idempotency-Key)
    GET  /v1/jobs                   jobs:read   list jobs: state, pool, label, cursor, limit
    GET  /v1/jobs/{id}              jobs:read   one job; ?wait=S long-polls until it ends
    POST /v1/jobs/{id}/cancel       jobs:write  cancel it (202)
    GET  /v1/jobs/{id}/logs         jobs:read   its output as server-sent events
    GET  /v1/tasks                  jobs:read   the registered tasks
    GET  /v1/pools                  jobs:read   the pools
    GET  /v1/openapi.json           (none)      the OpenAPI 3.1 document
    GET  /v1/health                 (none)      200 while the service runs
    /v1/attempts/...                (token)     the HTTP worker protocol's routes, if given

Every error is a problem (:mod:`balloons.service.problems`). Handlers never block the event
loop on Redis: the asyncio client is used, and the few sync reads run in the thread pool.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from .. import registry
from ..errors import JobNotFound, StoreError
from ..job import job_keys
from ..store.queries import Query, call
from ..store.records import read_status
from ..untrusted import shown, timestamp
from . import callbacks, handlers, listing, logstream, openapi, resources, submission
from .activity import Activity, while_connected
from .auth import CACHE_TTL, Gate, Keys
from .idempotency import Idempotency, body_digest, check_header
from .problems import Problem
from .responses import JSONResponse
from .submitting import submit_command, submit_task
from .webhooks import WebhookSecret

if TYPE_CHECKING:
    from ..app import App
    from ..store.keys import JobKeys

#: Longest ``?wait=`` of ``GET /v1/jobs/{id}``, in seconds.
MAX_WAIT = 30.0
#: Longest single block on a job's done key before its record is read again (a lost wake-up,
#: a machine dead without a word: checked as ``job.result()`` does).
BLOCK = 5.0
#: Seconds between comment lines on a quiet log stream.
PING = 15.0
#: Long-polls and streams open at once, at most (more get 429).
MAX_WAITERS = 1000

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    app: App,
    *,
    token: str | None = None,
    attempt_routes: Sequence[BaseRoute] = (),
    max_waiters: int = MAX_WAITERS,
    key_cache_ttl: float = CACHE_TTL,
    webhook_secret: WebhookSecret | None = None,
) -> Starlette:
    """The job service of ``app`` as an ASGI app (wrapped in its :class:`Activity`, found as
    ``web.state.activity``). ``token`` is the bootstrap admin key (16+ characters), if any;
    ``attempt_routes`` are mounted under ``/v1/attempts``; ``webhook_secret`` signs the
    callbacks that bring no secret of their own (without it, such a callback is refused)."""
    api = _Api(app, Gate(Keys(app.store, app.settings.namespace), token, key_cache_ttl))
    api.max_waiters = max_waiters
    # Each long-poll and stream blocks on a connection of its own: room for all of them and
    # the other requests (redis-py's default of 100 made the 101st waiter, and every request
    # beside them, a 503).
    app.store.async_connections = max(app.store.async_connections or 0, max_waiters + 100)
    api.webhook_secret = webhook_secret
    routes: list[BaseRoute] = [*api.routes()]
    if attempt_routes:
        routes.append(Mount("/v1/attempts", routes=list(attempt_routes)))
    web = Starlette(
        routes=routes,
        exception_handlers={
            Problem: handlers.problem,
            HTTPException: handlers.http_problem,
            StoreError: handlers.store_problem,
            JobNotFound: handlers.not_found,
        },
    )
    web.state.balloons = app
    activity = Activity(web.build_middleware_stack())
    web.state.activity = activity
    web.middleware_stack = activity
    return web


class _Api:
    def __init__(self, app: App, gate: Gate) -> None:
        self.app = app
        self.store = app.store
        self.gate = gate
        self.idem = Idempotency(app.store, app.settings.namespace)
        self.max_waiters = MAX_WAITERS
        self.webhook_secret: WebhookSecret | None = None
        self.waiters = 0
        self._bound: dict[str, tuple[Any, Any]] = {}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/health", self.health, methods=["GET"]),
            Route("/v1/jobs", self.guard("jobs:write", self.submit), methods=["POST"]),
            Route("/v1/jobs", self.guard("jobs:read", self.list_jobs), methods=["GET"]),
            Route("/v1/jobs/{job_id}", self.guard("jobs:read", self.get_job), methods=["GET"]),
            Route(
                "/v1/jobs/{job_id}/cancel",
                self.guard("jobs:write", self.cancel),
                methods=["POST"],
            ),
            Route("/v1/jobs/{job_id}/logs", self.guard("jobs:read", self.logs), methods=["GET"]),
            Route("/v1/tasks", self.guard("jobs:read", self.tasks), methods=["GET"]),
            Route("/v1/pools", self.guard("jobs:read", self.pools), methods=["GET"]),
        ]

    def guard(self, scope: str, endpoint: Endpoint) -> Endpoint:
        async def checked(request: Request) -> Response:
            request.state.principal = await self.gate.check(
                request.headers.get("authorization"), scope
            )
            return await endpoint(request)

        return checked

    # ------------------------------------------------------------- documents
    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi.document())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    # ---------------------------------------------------------------- submit
    async def submit(self, request: Request) -> Response:
        body = await submission.read(request)
        job = submission.parse(body)
        header = request.headers.get("idempotency-key")
        claim = None
        if header is not None:
            got = await self.idem.begin(
                request.state.principal.name, check_header(header), body_digest(body)
            )
            if isinstance(got, str):
                return await self.job_response(got, 200)
            claim = got
        try:
            job_id, raw = await self.place(job)
        except BaseException:
            if claim is not None:
                with contextlib.suppress(StoreError):
                    await self.idem.abandon(claim)
            raise
        if claim is not None:
            await self.idem.finish(claim, job_id)
        if raw is None:
            return await self.job_response(job_id, 201, location=True)
        return self.resource_response(job_id, raw, 201, location=True)

    async def place(
        self, job: submission.TaskJob | submission.CommandJob
    ) -> tuple[str, resources.Raw | None]:
        """Submit the job; its id, and its keys as read right after (None: not read yet)."""
        callback = job.common.callback
        callbacks.check_secret(callback, self.webhook_secret)
        labels = job.common.labels
        if isinstance(job, submission.CommandJob):
            submitted = await submit_command(self.app, job)
            with self.store.errors():
                await self.store.aredis.set(
                    job_keys(self.app.settings.namespace, submitted.id).meta,
                    resources.meta_record("command", labels),
                    ex=self.app.settings.record_ttl,
                )
            raw = None
        else:
            task = self.task_of(job.task)
            if task is None:
                raise Problem(
                    422,
                    "unknown-task",
                    f"no task {job.task[:200]!r} is registered in this service's app: "
                    "GET /v1/tasks lists them",
                )
            meta = resources.meta_record("task", labels) if labels else None
            submitted, raw = await submit_task(self.app, task, job, meta, callback is None)
        if callback is not None:
            await callbacks.register(self.app, submitted.id, callback)
        return submitted.id, raw

    def task_of(self, name: str) -> Any:
        """The registered task ``name``, submitted through this service's app (a task the
        registry holds for another app of the process is bound to this one: machines find
        it by name alike); None when no task has that name."""
        task = registry.TASKS.get(name)
        if task is None or not hasattr(task, "fn") or not hasattr(task, "opts"):
            return None
        if getattr(task, "app", None) is self.app:
            return task
        hit = self._bound.get(name)
        if hit is None or hit[0] is not task:
            hit = self._bound[name] = (task, type(task)(self.app, task.fn, name, task.opts))
        return hit[1]

    # ------------------------------------------------------------------ read
    async def job_response(self, job_id: str, status: int, location: bool = False) -> Response:
        jk = job_keys(self.app.settings.namespace, job_id)
        raw = await self.store.run_async(resources.read(jk))
        if raw is None:
            raise Problem(404, "job-not-found", f"job {job_id} not found", job_id=job_id)
        return self.resource_response(job_id, raw, status, location)

    def resource_response(
        self, job_id: str, raw: resources.Raw, status: int, location: bool = False
    ) -> Response:
        body = resources.resource(self.app, job_id, raw)
        headers = {"Location": f"/v1/jobs/{job_id}"} if location else None
        return JSONResponse(body, status_code=status, headers=headers)

    async def get_job(self, request: Request) -> Response:
        jk = self.job_keys(request)
        wait = _wait_of(request.query_params.get("wait"))
        raw = await self.store.run_async(resources.read(jk))
        if raw is None:
            raise Problem(404, "job-not-found", f"job {jk.job_id} not found", job_id=jk.job_id)
        if wait > 0 and not _ended(raw.rec):
            async with self.waiting():
                raw = await while_connected(request, self.wait_end(jk, wait, raw)) or raw
        return JSONResponse(resources.resource(self.app, jk.job_id, raw))

    async def wait_end(
        self, jk: JobKeys, wait: float, raw: resources.Raw | None
    ) -> resources.Raw | None:
        """Block on the job's done key until it ends or ``wait`` seconds pass; its keys as
        read last (None: gone). ``raw``: as read before."""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            due = None if raw is None else timestamp(raw.rec.get("due"))
            block = min(left, BLOCK)
            if due is not None:  # a delayed job is looked at as it falls due
                block = max(0.01, min(block, due - time.time() + 0.05))
            woken = await self.store.wait_done_async(jk, block)
            if not woken:
                await run_in_threadpool(self.app.check_lapsed, jk)
            raw = await self.store.run_async(resources.read(jk))
            if raw is None or _ended(raw.rec) or woken:
                return raw
        return raw

    def job_keys(self, request: Request) -> JobKeys:
        job_id = request.path_params["job_id"]
        try:
            return job_keys(self.app.settings.namespace, job_id)
        except JobNotFound:
            raise Problem(
                404,
                "job-not-found",
                f"{shown(job_id)[:100]!r} is not a job id (POOL.ULID)",
            ) from None

    def check_waiters(self) -> None:
        """A 429 problem when :attr:`max_waiters` long-polls and streams are open."""
        if self.waiters >= self.max_waiters:
            raise Problem(
                429,
                "too-many-waiters",
                f"{self.waiters} long-polls and streams are open (at most {self.max_waiters})",
                retry_after=1,
            )

    @contextlib.asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        """One of the long-polls and streams open at once; 429 past :attr:`max_waiters`."""
        self.check_waiters()
        self.waiters += 1
        try:
            yield
        finally:
            self.waiters -= 1

    async def list_jobs(self, request: Request) -> Response:
        q = request.query_params
        filters = listing.parse_filters(q.get("state"), q.get("pool"), q.getlist("label"))
        cursor = listing.decode_cursor(q["cursor"]) if q.get("cursor") else None
        raw_limit = q.get("limit", "50")
        limit = int(raw_limit) if raw_limit.isascii() and raw_limit.isdigit() else 0
        if not 1 <= limit <= listing.MAX_LIMIT or len(raw_limit) > 4:
            raise Problem(
                400,
                "invalid-request",
                f"limit must be a whole number from 1 to {listing.MAX_LIMIT}, "
                f"got {raw_limit[:20]!r}",
            )
        ns = self.app.settings.namespace
        rows, after = await self.store.run_async(listing.page(ns, filters, cursor, limit))
        return JSONResponse({"jobs": rows, "next": after})

    async def cancel(self, request: Request) -> Response:
        jk = self.job_keys(request)
        try:
            cancelled = await self.app.cancel_async(jk.job_id)
        except JobNotFound:
            raise Problem(
                404, "job-not-found", f"job {jk.job_id} not found", job_id=jk.job_id
            ) from None
        if not cancelled:
            raise Problem(
                409, "job-finished", f"job {jk.job_id} has already ended", job_id=jk.job_id
            )
        return await self.job_response(jk.job_id, 202)

    # ------------------------------------------------------------------ logs
    async def logs(self, request: Request) -> Response:
        jk = self.job_keys(request)
        after = request.headers.get("last-event-id") or request.query_params.get("after") or ""
        if after and not logstream.STREAM_ID_RE.match(after):
            raise Problem(
                400,
                "invalid-request",
                f"Last-Event-ID must be a log entry id (N-N), got {shown(after)[:60]!r}",
            )
        (status,) = await self.store.run_async(_exists(jk))
        if status is None:
            raise Problem(404, "job-not-found", f"job {jk.job_id} not found", job_id=jk.job_id)
        self.check_waiters()
        return StreamingResponse(
            self.log_events(jk, after or "0-0"),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def log_events(self, jk: JobKeys, after: str) -> AsyncIterator[str]:
        """The job's lines as ``log`` events (``id:`` the stream entry's), a comment every
        :data:`PING` seconds while quiet, and an ``end`` event once the job has ended and its
        last line is sent."""
        # Counted from the stream's first step: a response never started holds no place.
        self.waiters += 1
        try:
            last, sent = after, time.monotonic()
            yield ": stream open\n\n"
            while True:
                try:
                    ended, status, rows = await self.store.run_async(logstream.log_round(jk, last))
                except StoreError as exc:  # the response has started: say it as an event
                    problem = Problem(503, "store-unavailable", str(exc))
                    yield f"event: error\ndata: {json.dumps(problem.body())}\n\n"
                    return
                for entry_id, fields in rows:
                    last = entry_id
                    yield f"id: {entry_id}\nevent: log\ndata: {json.dumps(fields)}\n\n"
                    sent = time.monotonic()
                if ended and not rows:
                    yield f"event: end\ndata: {json.dumps({'state': status})}\n\n"
                    return
                if time.monotonic() - sent >= PING:
                    yield ": ping\n\n"
                    sent = time.monotonic()
        finally:
            self.waiters -= 1

    # --------------------------------------------------------- tasks, pools
    async def tasks(self, request: Request) -> Response:
        out = []
        for name in sorted(registry.TASKS):
            t = self.task_of(name)
            if t is None:
                continue
            o = t.opts
            out.append(
                {
                    "name": name,
                    "pool": o.pool,
                    "timeout": o.timeout,
                    "retries": o.retries,
                    "cpus": o.cpus,
                    "memory_mb": o.memory_mb,
                }
            )
        return JSONResponse({"tasks": out})

    async def pools(self, request: Request) -> Response:
        def read() -> list[dict[str, Any]]:
            return [self.store.pool_stats(p) for p in self.store.pools()]

        return JSONResponse({"pools": await run_in_threadpool(read)})


# -------------------------------------------------------------------- helpers
def _wait_of(raw: str | None) -> float:
    if raw is None:
        return 0.0
    try:
        value = float(raw) if len(raw) <= 20 else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT:  # NaN fails too
        raise Problem(
            400,
            "invalid-request",
            f"wait must be a number of seconds from 0 to {MAX_WAIT:g}, got {shown(raw)[:30]!r}",
        )
    return value


def _ended(rec: dict[str, bytes]) -> bool:
    return read_status(rec.get("status"))[0].terminal


def _exists(jk: JobKeys) -> Query[list[Any]]:
    """``[status]`` of the job's record (a key of another type is refused here, before a
    stream starts)."""
    return (yield [call("hget", jk.job, "status")])  # type: ignore[no-any-return]
