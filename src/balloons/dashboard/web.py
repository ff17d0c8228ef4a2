"""The dashboard's Starlette app: pages, live event streams, actions and ``/metrics``.

Routes (relative to where the app is mounted)::

    GET  /login, POST /login, POST /logout      token login (session cookie)
    GET  /jobs?status=&task=&pool=&page=        jobs, filtered, paged; /jobs/live streams it
    GET  /jobs/{id}                             one job; /jobs/{id}/live streams its changes
    POST /jobs/{id}/cancel, /jobs/{id}/retry    actions (CSRF token + Origin check)
    GET  /pools                                 pools; /pools/live streams it
    GET  /flows, /flows/{id}                    chains and groups, one with its members; each
                                                /live streams it
    GET  /schedules                             the schedules: next and last run, last outcome;
                                                /schedules/live streams it
    GET  /cost                                  cost totals per pool and task, USD per hour
    GET  /metrics                               Prometheus text format
    GET  /static/...                            the stylesheet and the live-update script

Live regions are server-sent events: each ``update`` event carries the region's HTML, rendered
by the same template as the page, and ``live.js`` swaps it in (no front-end build, nothing
fetched from elsewhere).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..errors import BalloonsError, JobNotFound, StoreError
from ..info import JobInfo, JobStatus
from ..listing import BULK_LIMIT, Filters, find_jobs, pool_summaries, select_jobs
from ..store.keys import JobKeys
from ..untrusted import describe, shown
from . import aggregates, charts, metrics, plans, views
from .auth import COOKIE, SESSION_TTL, Session, TokenAuth
from .http import SecurityHeaders, filters_of, query_of, safe_next, stream

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..app import App

Endpoint = Callable[[Request], Awaitable[Response]]

#: Seconds between re-reads of a list page's live region.
LIST_INTERVAL = 2.0
#: Longest wait for a job's end between re-reads of a job page's live region.
JOB_INTERVAL = 1.0
#: Largest form body accepted.
MAX_FORM_BYTES = 16 * 1024
PER_PAGE = 50


def create_app(app: App, *, token: str | None) -> Starlette:
    """The dashboard of ``app`` as an ASGI app, mountable under any path.

    ``token`` is required (at least 16 characters): users log in with it, and ``/metrics``
    takes it as a bearer header. ``ConfigError`` if it is missing or short.
    """
    auth = TokenAuth(token)
    env = Environment(
        loader=PackageLoader("balloons.dashboard", "templates"),
        autoescape=select_autoescape(default=True),
        finalize=_shown,
    )
    env.globals.update(
        fmt_time=views.fmt_time, fmt_duration=views.fmt_duration, fmt_clock=views.fmt_clock
    )
    dashboard = _Dashboard(app, auth, env, metrics.registry_for(app.store, app))
    web = Starlette(
        routes=dashboard.routes(),
        exception_handlers={StoreError: dashboard.store_unreachable},
    )
    web.state.balloons = app
    web.state.auth = auth
    web.add_middleware(SecurityHeaders)
    return web


class _Rendering:
    """What every page shares: rendering pages and live regions, the login gate, forms."""

    def __init__(self, app: App, auth: TokenAuth, env: Environment) -> None:
        self.app = app
        self.store = app.store
        self.auth = auth
        self.env = env
        self.templates = Jinja2Templates(env=env)

    def page(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        session: Session | None = getattr(request.state, "session", None)
        ctx.setdefault("csrf", session.csrf if session else "")
        ctx.setdefault("statuses", [s.value for s in JobStatus])
        resp = self.templates.TemplateResponse(request, name, ctx, status_code=status_code)
        resp.headers["cache-control"] = "no-store"
        return resp

    def fragment(self, request: Request, name: str, **ctx: Any) -> str:
        session: Session | None = getattr(request.state, "session", None)
        ctx.setdefault("csrf", session.csrf if session else "")
        ctx.setdefault("statuses", [s.value for s in JobStatus])
        return self.env.get_template(name).render(request=request, **ctx)

    def error(self, request: Request, status_code: int, message: str) -> Response:
        return self.page(request, "error.html", status_code=status_code, message=message)

    async def store_unreachable(self, request: Request, exc: Exception) -> Response:
        # The message names the masked URL (never a password): say what is wrong, not reset.
        return self.error(request, 503, str(exc))

    def protected(self, endpoint: Endpoint) -> Endpoint:
        async def check(request: Request) -> Response:
            session = self.auth.authenticate(request)
            if session is None:
                return self.refuse(request)
            request.state.session = session
            return await endpoint(request)

        return check

    def refuse(self, request: Request) -> Response:
        wants_page = (
            request.method == "GET"
            and "authorization" not in request.headers
            and "text/html" in request.headers.get("accept", "")
        )
        if wants_page:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = request.url_for("login").include_query_params(next=here)
            return RedirectResponse(str(login), status_code=303)
        return PlainTextResponse(
            "a dashboard token is required: log in, or send 'Authorization: Bearer TOKEN'",
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="balloons"'},
        )

    async def checked_form(self, request: Request) -> tuple[dict[str, str], Response | None]:
        """The form of a POST, and the refusal to answer instead when its CSRF token or origin
        is wrong (``None`` when it may go on)."""
        form = await _form_of(request)
        if form is None:  # refused unread: the connection is closed rather than drained
            too_large = self.error(request, 413, f"a form is {MAX_FORM_BYTES} bytes at most")
            too_large.headers["connection"] = "close"
            return {}, too_large
        session = getattr(request.state, "session", None)
        why = self.auth.post_allowed(request, session, form.get("csrf", ""))
        return form, (self.error(request, 403, why) if why else None)

    def job_keys(self, request: Request) -> JobKeys | None:
        """The keys of the job the path names; ``None`` when it names no job id."""
        try:
            return self.store.keys(request.path_params["job_id"])
        except ValueError:
            return None


class _Dashboard(_Rendering):
    """The pages, live streams and actions of one app's dashboard."""

    def __init__(
        self, app: App, auth: TokenAuth, env: Environment, registry: CollectorRegistry
    ) -> None:
        super().__init__(app, auth, env)
        self.registry = registry

    def routes(self) -> list[BaseRoute]:
        protected = self.protected
        return [
            Route("/", protected(self.home), name="home"),
            Route("/login", self.login, methods=["GET", "POST"], name="login"),
            Route("/logout", protected(self.logout), methods=["POST"], name="logout"),
            Route("/jobs", protected(self.jobs), name="jobs"),
            Route("/jobs/live", protected(self.jobs_live), name="jobs_live"),
            Route("/jobs/bulk", protected(self.bulk), methods=["POST"], name="bulk"),
            Route("/jobs/{job_id}", protected(self.job), name="job"),
            Route("/jobs/{job_id}/live", protected(self.job_live), name="job_live"),
            Route("/jobs/{job_id}/cancel", protected(self.cancel), methods=["POST"], name="cancel"),
            Route("/jobs/{job_id}/retry", protected(self.retry), methods=["POST"], name="retry"),
            Route("/pools", protected(self.pools), name="pools"),
            Route("/pools/live", protected(self.pools_live), name="pools_live"),
            Route("/flows", protected(partial(plans.flows_page, self)), name="flows"),
            Route("/flows/live", protected(partial(plans.flows_live, self)), name="flows_live"),
            Route("/flows/{flow_id}", protected(partial(plans.flow_page, self)), name="flow"),
            Route(
                "/flows/{flow_id}/live", protected(partial(plans.flow_live, self)), name="flow_live"
            ),
            Route("/schedules", protected(partial(plans.schedules_page, self)), name="schedules"),
            Route(
                "/schedules/live",
                protected(partial(plans.schedules_live, self)),
                name="schedules_live",
            ),
            Route("/cost", protected(self.cost), name="cost"),
            Route("/charts", protected(self.charts), name="charts"),
            Route("/metrics", protected(self.metrics_endpoint), name="metrics"),
            Mount(
                "/static", StaticFiles(packages=[("balloons.dashboard", "static")]), name="static"
            ),
        ]

    # ------------------------------------------------------------------- login
    async def login(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next", ""))
        if request.method == "GET":
            return self.page(request, "login.html", next=next_path, failed=False)
        form, refused = await self.checked_form(request)
        if refused is not None:
            return refused
        next_path = safe_next(form.get("next", ""))
        if not self.auth.token_ok(form.get("token", "")):
            return self.page(request, "login.html", status_code=401, next=next_path, failed=True)
        target = next_path or str(request.url_for("jobs").path)
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(
            COOKIE,
            self.auth.new_cookie(),
            max_age=SESSION_TTL,
            path=request.scope.get("root_path") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return resp

    async def logout(self, request: Request) -> Response:
        _, refused = await self.checked_form(request)
        if refused is not None:
            return refused
        resp = RedirectResponse(str(request.url_for("login").path), status_code=303)
        resp.delete_cookie(COOKIE, path=request.scope.get("root_path") or "/")
        return resp

    async def home(self, request: Request) -> Response:
        return RedirectResponse(str(request.url_for("jobs").path), status_code=303)

    # -------------------------------------------------------------------- jobs
    def jobs_table(self, request: Request, filters: Filters, page_no: int) -> str:
        listing = find_jobs(self.store, filters, page_no, PER_PAGE)
        return self.fragment(
            request, "jobs_table.html", listing=listing, query=query_of(filters), filters=filters
        )

    async def jobs(self, request: Request) -> Response:
        try:
            filters, page_no = filters_of(request)
        except ValueError as exc:
            return self.error(request, 400, str(exc))
        table = await run_in_threadpool(self.jobs_table, request, filters, page_no)
        pools = await run_in_threadpool(self.store.pools)
        return self.page(
            request,
            "jobs.html",
            table=table,
            filters=filters,
            pools=pools,
            live_query=request.url.query,
        )

    async def jobs_live(self, request: Request) -> Response:
        try:
            filters, page_no = filters_of(request)
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)

        async def render() -> tuple[str, bool]:
            return await run_in_threadpool(self.jobs_table, request, filters, page_no), False

        return stream(render, lambda: asyncio.sleep(LIST_INTERVAL))

    # ---------------------------------------------------------------- one job
    def job_live_html(self, request: Request, keys: JobKeys) -> tuple[str, bool]:
        """The live region of a job's page, and whether the job has ended."""
        ctx = views.job_context(self.store, keys, self.app.prices)
        if ctx is None:
            return self.fragment(request, "job_gone.html", job_id=keys.job_id), True
        html = self.fragment(
            request,
            "job_live.html",
            info=ctx.info,
            sections=views.sections(ctx, live=True),
            can_cancel=not ctx.info.status.terminal,
        )
        return html, ctx.info.status.terminal

    async def job(self, request: Request) -> Response:
        keys = self.job_keys(request)
        if keys is None:
            return self.error(request, 404, f"{request.path_params['job_id']!r} is not a job id")
        ctx = await run_in_threadpool(views.job_context, self.store, keys, self.app.prices)
        if ctx is None:
            return self.error(request, 404, f"job {keys.job_id} not found (expired or forgotten?)")
        live, _ = await run_in_threadpool(self.job_live_html, request, keys)
        static = await run_in_threadpool(views.sections, ctx, False)
        return self.page(request, "job.html", info=ctx.info, live=live, static_sections=static)

    async def job_live(self, request: Request) -> Response:
        keys = self.job_keys(request)
        if keys is None:
            return PlainTextResponse("not a job id", status_code=404)

        async def render() -> tuple[str, bool]:
            return await run_in_threadpool(self.job_live_html, request, keys)

        async def wait() -> None:
            if await self.store.wait_done_async(keys, JOB_INTERVAL):
                await asyncio.sleep(0.25)  # ended, or about to: re-read, but never spin

        return stream(render, wait)

    async def cancel(self, request: Request) -> Response:
        return await self.act(request, "cancel")

    async def retry(self, request: Request) -> Response:
        return await self.act(request, "retry")

    async def act(self, request: Request, action: str) -> Response:
        """Cancel or retry the job the path names, then show the job (a retry: the new one)."""
        _, refused = await self.checked_form(request)
        if refused is not None:
            return refused
        keys = self.job_keys(request)
        if keys is None:
            return self.error(request, 404, f"{request.path_params['job_id']!r} is not a job id")
        try:
            if action == "retry":
                target = (await run_in_threadpool(self.app.retry, keys.job_id)).id
            else:
                await run_in_threadpool(self.app.job(keys.job_id).cancel)
                target = keys.job_id
        except JobNotFound:
            return self.error(request, 404, f"job {keys.job_id} not found (expired or forgotten?)")
        except BalloonsError as exc:
            return self.error(request, 409, f"could not {action} job {keys.job_id}: {exc}")
        url = request.url_for("job", job_id=target).path
        return RedirectResponse(str(url), status_code=303)

    async def bulk(self, request: Request) -> Response:
        """Cancel (the jobs not ended) or retry (the failed and cancelled ones) every job the
        form's filters select, newest first, up to ``BULK_LIMIT``: one script per job, so each
        job changes whole or not at all, and one that cannot is named with the reason."""
        form, refused = await self.checked_form(request)
        if refused is not None:
            return refused
        action = form.get("action", "")
        if action not in BULK_ACTIONS:
            return self.error(
                request, 400, f"unknown action {describe(action)}: expected cancel or retry"
            )
        try:
            filters = Filters.parse(
                form.get("status"), form.get("task"), form.get("pool"), form.get("q")
            )
        except ValueError as exc:
            return self.error(request, 400, str(exc))
        if filters == Filters():
            return self.error(
                request,
                400,
                "a bulk action needs a filter or a search: it acts on the jobs they select",
            )

        def run() -> list[tuple[str, str, str]]:
            chosen = select_jobs(self.store, filters, BULK_ACTIONS[action])
            done = []
            for info in chosen:
                try:
                    if action == "retry":
                        new = self.app.retry(info.id).id
                        done.append((info.id, "retried", new))
                    elif self.app.cancel(info.id):
                        done.append((info.id, "cancelled", ""))
                    else:
                        done.append((info.id, "already ended", ""))
                except BalloonsError as exc:
                    done.append((info.id, "refused", str(exc)))
            return done

        outcomes = await run_in_threadpool(run)
        return self.page(
            request,
            "bulk.html",
            action=action,
            outcomes=outcomes,
            query=query_of(filters),
            limit=BULK_LIMIT,
        )

    # ------------------------------------------------------------------- pools
    def pools_table(self, request: Request) -> str:
        found = pool_summaries(self.store)
        # The slot table of each pool: its cap and machines by state, its queue.
        slots = {p.name: self.store.pool_stats(p.name) for p in found}
        return self.fragment(request, "pools_table.html", pools=found, slots=slots)

    async def pools(self, request: Request) -> Response:
        table = await run_in_threadpool(self.pools_table, request)
        return self.page(request, "pools.html", table=table)

    async def pools_live(self, request: Request) -> Response:
        async def render() -> tuple[str, bool]:
            return await run_in_threadpool(self.pools_table, request), False

        return stream(render, lambda: asyncio.sleep(LIST_INTERVAL))

    # ------------------------------------------------------------ cost, metrics
    async def cost(self, request: Request) -> Response:
        report = await run_in_threadpool(self.app.costs)
        return self.page(
            request,
            "cost.html",
            rep=report,
            chart=views.cost_chart(report),
            prices=self.app.prices,
            pools=sorted(report.by_pool.items()),
            tasks=sorted(report.by_task.items()),
        )

    async def charts(self, request: Request) -> Response:
        def read() -> dict[str, Any]:
            pools = self.store.pools()[: aggregates.MAX_POOLS]
            stats = aggregates.read(self.store, pools)
            queue, run = charts.merged(stats, "queue"), charts.merged(stats, "run")
            return {
                "throughput": charts.bars(
                    "jobs submitted per hour",
                    charts.throughput(self.store, pools),
                    axis=(f"last {charts.HOURS} hours (UTC)", "now"),
                ),
                "queue": charts.bars("queue wait", charts.distribution(queue)),
                "queue_summary": charts.summary(queue),
                "run": charts.bars("run time", charts.distribution(run)),
                "run_summary": charts.summary(run),
                "failures": charts.bars(
                    "failure rate per pool",
                    charts.failure_rates(stats),
                    top=100.0,
                    axis=("", "bar height: share of the pool's ended jobs, to 100%"),
                ),
                "costs": charts.bars("cost per pool", charts.costs(stats, self.app.prices)),
                "cost_hours": charts.bars(
                    "cost per hour",
                    charts.cost_over_time(self.store, pools, self.app.prices),
                    axis=(f"last {charts.HOURS} hours (UTC)", "now"),
                ),
            }

        return self.page(request, "charts.html", **await run_in_threadpool(read))

    async def metrics_endpoint(self, request: Request) -> Response:
        body = await run_in_threadpool(metrics.exposition, self.registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def _form_of(request: Request) -> dict[str, str] | None:
    """A POST's form fields (the first of each name); None when the body is too large, which
    is read no further than that (``/login`` takes a body from anyone)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


#: The bulk actions, with the jobs each may change.
BULK_ACTIONS: dict[str, Callable[[JobInfo], bool]] = {
    "cancel": lambda info: not info.status.terminal,
    "retry": lambda info: info.status in (JobStatus.FAILED, JobStatus.CANCELLED),
}


def _shown(value: Any) -> Any:
    """Every value a template prints: text with its control characters replaced (HTML is
    escaped after this, by autoescape); markup the templates made themselves is left as is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return shown(value)
    return value
