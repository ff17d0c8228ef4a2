"""``balloons status`` of a chain or a group (one item, with its members) and
``balloons cancel`` of one."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..flows import FlowInfo, FlowJob, FlowMember, is_flow_id
from ..store.keys import split_job_id
from .common import console, safe, styled
from .exits import Exit


class _JobOrFlowId(click.ParamType[Any, str]):
    """A job id (``POOL.ULID``) or a chain's or group's (``chain-ULID``, ``group-ULID``)."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, str) and is_flow_id(value):
            return value
        try:
            split_job_id(value)
        except ValueError as exc:
            self.fail(f"{exc}, or a chain or group id (chain-ULID, group-ULID)", param, ctx)
        return str(value)


JOB_OR_FLOW_ID = _JobOrFlowId()


def status(app: Any, flow_id: str, as_json: bool) -> None:
    """Print a chain's or group's status and its members."""
    info = FlowJob[Any](app, flow_id).info()
    if as_json:
        click.echo(json.dumps(as_dict(info)))
        return
    console.print(f"[bold]{info.id}[/bold]  {info.kind}  {styled(info.status)}")
    if info.reason:
        what = f"{info.error_type}: {info.error_message}" if info.error_type else ""
        line = f"  reason: {safe(info.reason)}" + (f" ({safe(what)})" if what else "")
        console.print(line, highlight=False)
    if info.member:
        console.print(f"  ended by: {safe(info.member)}", highlight=False)
    for problem in info.problems:
        console.print(f"  [bold red]record invalid[/]: {safe(problem)}", highlight=False)
    members = list(info.members) + ([info.callback] if info.callback else [])
    for m in members:
        console.print(_member_line(m), highlight=False)


def cancel(app: Any, flow_id: str, grace: float) -> None:
    """Cancel a chain or group (its members not ended with ``grace``); exit 1 when it had
    ended already."""
    from ..control.flows import cancel as cancel_flow

    if cancel_flow(app, flow_id, grace=grace):
        click.echo(f"{flow_id} cancelled")
        return
    click.echo(f"{flow_id} had already ended ({FlowJob[Any](app, flow_id).status().value})")
    sys.exit(Exit.FAILED)


def _member_line(m: FlowMember) -> str:
    where = "callback" if m.index is None else f"{m.index:>8}"
    job = safe(m.job_id) if m.job_id else "-"
    state = styled(m.status) if m.status else "[dim]not submitted[/dim]"
    return f"  {where}  {safe(m.task)}  {job}  {state}"


def as_dict(info: FlowInfo) -> dict[str, Any]:
    """A flow's info as JSON-ready fields."""

    def member(m: FlowMember) -> dict[str, Any]:
        return {
            "index": m.index,
            "task": m.task,
            "job": m.job_id,
            "status": None if m.status is None else str(m.status),
        }

    return {
        "id": info.id,
        "kind": info.kind,
        "status": str(info.status),
        "created_at": info.created_at,
        "ended_at": info.ended_at,
        "reason": info.reason,
        "error_type": info.error_type,
        "error_message": info.error_message,
        "member": info.member,
        "members": [member(m) for m in info.members],
        "callback": None if info.callback is None else member(info.callback),
        "problems": list(info.problems),
    }
