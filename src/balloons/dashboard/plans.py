"""The dashboard's pages of planned work: chains and groups (each one item with its members)
and schedules. Everything shown is read from Redis as hostile input (:mod:`balloons.flows`,
:mod:`balloons.control.cron`) and printed through the templates' escaping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from ..control import cron
from ..flows import FlowInfo, info_of, is_flow_id, read_record
from ..store.keys import flow_index_key

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


async def flows_page(dash: Any, request: Request) -> Response:
    """``/flows``: the newest chains and groups."""
    found = await run_in_threadpool(recent_flows, dash.app)
    return dash.page(request, "flows.html", flows=found)  # type: ignore[no-any-return]


async def flow_page(dash: Any, request: Request) -> Response:
    """``/flows/{flow_id}``: one chain or group with its members."""
    flow_id = str(request.path_params["flow_id"])
    if not is_flow_id(flow_id):
        return dash.error(request, 404, "no such chain or group")  # type: ignore[no-any-return]

    def read() -> FlowInfo | None:
        rec = read_record(dash.app, flow_id)
        return None if rec is None else info_of(dash.app, rec)

    info = await run_in_threadpool(read)
    if info is None:
        return dash.error(request, 404, f"no chain or group {flow_id}")  # type: ignore[no-any-return]
    return dash.page(request, "flow.html", flow=info)  # type: ignore[no-any-return]


async def schedules_page(dash: Any, request: Request) -> Response:
    """``/schedules``: the schedules the app declares, and those a supervisor keeps state of."""

    def read() -> list[dict[str, Any]]:
        return cron.rows(dash.app, dash.app.store.server_time(), undeclared=True)

    rows = await run_in_threadpool(read)
    return dash.page(request, "schedules.html", rows=rows)  # type: ignore[no-any-return]
