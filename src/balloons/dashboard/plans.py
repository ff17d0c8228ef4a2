"""The dashboard's pages of planned work: chains and groups (each one item with its members)
and schedules. Everything shown is read from Redis as hostile input (:mod:`balloons.flows`,
:mod:`balloons.control.cron`) and printed through the templates' escaping."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from ..control import cron
from ..flows import FlowInfo, info_of, is_flow_id, read_record
from ..store.keys import flow_index_key
from .http import stream

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

#: Chains and groups the list shows (the newest).
LISTED = 100


def recent_flows(app: Any, limit: int = LISTED) -> list[FlowInfo]:
    """The newest chains and groups, each with its members' statuses."""
    with app.store.errors():
        ids = app.store.redis.zrevrange(flow_index_key(app.settings.namespace), 0, limit - 1)
    out = []
    for raw in ids:
        flow_id = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if not is_flow_id(flow_id):
            continue
        rec = read_record(app, flow_id)
        if rec is not None:
            out.append(info_of(app, rec))
    return out


def flows_table(dash: Any, request: Request) -> str:
    """The live region of ``/flows``: the newest chains and groups."""
    return dash.fragment(request, "flows_table.html", flows=recent_flows(dash.app))  # type: ignore[no-any-return]


async def flows_page(dash: Any, request: Request) -> Response:
    """``/flows``: the newest chains and groups, re-read every few seconds (``/flows/live``)."""
    table = await run_in_threadpool(flows_table, dash, request)
    return dash.page(request, "flows.html", table=table)  # type: ignore[no-any-return]


async def flows_live(dash: Any, request: Request) -> Response:
    """``/flows/live``: the list's region whenever it changed."""

    async def render() -> tuple[str, bool]:
        return await run_in_threadpool(flows_table, dash, request), False

    return stream(render, _pause)


def flow_body(dash: Any, request: Request, flow_id: str) -> tuple[FlowInfo | None, str]:
    """One chain or group (None when there is none) and the live region of its page."""
    rec = read_record(dash.app, flow_id) if is_flow_id(flow_id) else None
    if rec is None:
        return None, ""
    info = info_of(dash.app, rec)
    return info, dash.fragment(request, "flow_body.html", flow=info)


async def flow_page(dash: Any, request: Request) -> Response:
    """``/flows/{flow_id}``: one chain or group with its members, re-read every few seconds
    until it has ended (``/flows/{flow_id}/live``)."""
    flow_id = str(request.path_params["flow_id"])
    info, body = await run_in_threadpool(flow_body, dash, request, flow_id)
    if info is None:
        what = f"no chain or group {flow_id}" if is_flow_id(flow_id) else "no such chain or group"
        return dash.error(request, 404, what)  # type: ignore[no-any-return]
    return dash.page(request, "flow.html", flow=info, body=body)  # type: ignore[no-any-return]


async def flow_live(dash: Any, request: Request) -> Response:
    """``/flows/{flow_id}/live``: its region whenever it changed; ends once the flow has
    ended (or is gone, or invalid)."""
    flow_id = str(request.path_params["flow_id"])

    async def render() -> tuple[str, bool]:
        info, body = await run_in_threadpool(flow_body, dash, request, flow_id)
        return body, info is None or info.status.terminal

    return stream(render, _pause)


def schedules_table(dash: Any, request: Request) -> str:
    """The live region of ``/schedules``: the schedules the app declares, and those a
    supervisor keeps state of."""
    rows = cron.rows(dash.app, dash.app.store.server_time(), undeclared=True)
    return dash.fragment(request, "schedules_table.html", rows=rows)  # type: ignore[no-any-return]


async def schedules_page(dash: Any, request: Request) -> Response:
    """``/schedules``, re-read every few seconds (``/schedules/live``)."""
    table = await run_in_threadpool(schedules_table, dash, request)
    return dash.page(request, "schedules.html", table=table)  # type: ignore[no-any-return]


async def schedules_live(dash: Any, request: Request) -> Response:
    """``/schedules/live``: the schedules' region whenever it changed."""

    async def render() -> tuple[str, bool]:
        return await run_in_threadpool(schedules_table, dash, request), False

    return stream(render, _pause)


async def _pause() -> None:
    """The wait between re-reads of a live region: the list pages' interval."""
    from .web import LIST_INTERVAL

    await asyncio.sleep(LIST_INTERVAL)
