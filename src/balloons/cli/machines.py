"""Commands about pools and machines: pools, machines and cost."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ..errors import StoreDataError
from ..store.keys import PoolKeys
from .common import clock, console, err_console, load_app, main
from .tables import Column, print_table, wide_option

if TYPE_CHECKING:
    from ..app import App
    from ..cost import CostReport, Total


#: The columns of ``balloons pools``; a narrow terminal drops the floor first.
POOL_COLUMNS = (
    Column("pool", is_id=True),
    Column("cap", drop=6, justify="right"),
    Column("floor", drop=1, justify="right"),
    Column("starting", drop=4, justify="right"),
    Column("running", justify="right"),
    Column("idle", drop=5, justify="right"),
    Column("standby", drop=2, justify="right"),
    Column("queued", justify="right"),
    Column("delayed", drop=3, justify="right"),
)

#: The columns of ``balloons machines``; a narrow terminal drops the exit code first.
MACHINE_COLUMNS = (
    Column("id", is_id=True),
    Column("state"),
    Column("pool", drop=5, is_id=True),
    Column("slot", drop=4),
    Column("job", is_id=True),
    Column("size", drop=2),
    Column("created", drop=3),
    Column("exit", drop=1, justify="right"),
)


def cost_columns(title: str) -> tuple[Column, ...]:
    """The columns of ``balloons cost``'s tables, by ``pool`` or by ``task``."""
    return (
        Column(title, is_id=True),
        Column("jobs", justify="right"),
        Column("machine-s", drop=3, justify="right"),
        Column("task-s", drop=2, justify="right"),
        Column("efficiency", drop=1, justify="right"),
        Column("USD", justify="right"),
    )


#: The columns of ``balloons cost``'s task table (the pool table's are the same, by pool).
COST_COLUMNS = cost_columns("task")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@wide_option(POOL_COLUMNS)
def pools(as_json: bool, wide: bool) -> None:
    """Each pool's cap, its machines (starting, running, idle, stopped on standby) and queued
    jobs. A pool whose keys cannot be read (altered in Redis) is listed among the others as
    unreadable, and the command then exits 1 naming the key."""
    from ..listing import pool_summaries

    app = load_app()
    names, problem = app.store.pool_index()
    rows = [app.store.pool_stats(p) for p in names]
    by_pool = {s.name: s for s in pool_summaries(app.store)}
    for r in rows:
        found = by_pool.get(r["pool"])
        r["jobs"] = dict(found.by_status) if found is not None else {}
    if as_json:
        click.echo(json.dumps(rows))
    else:
        _pool_table(rows, wide)
    problems = [problem] if problem else []
    problems += [f"pool {r['pool']}: {r['unreadable']}" for r in rows if r["unreadable"]]
    if problems:
        raise StoreDataError("; ".join(problems))


def _pool_table(rows: list[dict[str, Any]], wide: bool) -> None:
    print_table(
        console,
        POOL_COLUMNS,
        [
            [f"{r['pool']} (unreadable)", *["?"] * 8]
            if r["unreadable"]
            else [
                r["pool"],
                str(r["max_machines"]),
                str(r["min_machines"]),
                str(r["starting"]),
                str(r["running"]),
                str(r["idle"]),
                f"{r['standby']}/{r['standby_max']}",
                str(r["queued"]),
                str(r["delayed"]),
            ]
            for r in rows
        ],
        wide=wide,
    )


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Stopped machines too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@wide_option(MACHINE_COLUMNS)
def machines(show_all: bool, as_json: bool, wide: bool) -> None:
    """The backend's machines: id, state, pool, job and attempt, and the slot's state."""
    rows = _machine_rows(load_app(), show_all)
    if as_json:
        click.echo(json.dumps(rows))
        return
    print_table(
        console,
        MACHINE_COLUMNS,
        [
            [
                r["id"],
                r["state"],
                r["pool"] or "-",
                r["slot"] or "-",
                r["job"] or "-",
                f"{r['cpus']}x{r['memory_mb']}MB" if r["cpus"] else "-",
                clock(r["created"]),
                "-" if r["exit_code"] is None else str(r["exit_code"]),
            ]
            for r in rows
        ],
        wide=wide,
    )
    if not rows:
        err_console.print("no running machines" + ("" if show_all else " (--all: stopped too)"))


def _machine_rows(app: App, show_all: bool) -> list[dict[str, Any]]:
    """The backend's machines (running ones only, unless ``show_all``), each with what its
    slot says (its state, job and size)."""
    found = app.backend.list()
    slots: dict[str, dict[str, Any]] = {}
    for pool in app.store.pools():
        pool_keys = PoolKeys(app.settings.namespace, pool)
        for _slot, _lease, info in app.store.slots(pool_keys):
            if info.get("machine"):
                slots[str(info["machine"])] = info
    rows = []
    for m in found:
        if not show_all and not m.running:
            continue
        slot = slots.get(m.id, {})
        job = slot.get("job") or ""
        rows.append(
            {
                "id": m.id,
                "state": m.state,
                "pool": m.pool,
                "slot": slot.get("state", ""),
                "job": f"{m.pool}.{job}" if job else (m.job_id or ""),
                "attempt": m.attempt,
                "cpus": slot.get("cpus"),
                "memory_mb": slot.get("mem"),
                "created": m.created_at,
                "exit_code": m.exit_code,
            }
        )
    return rows


@main.command()
@click.option("--pool", "pools", multiple=True, help="Only this pool (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@wide_option(COST_COLUMNS)
def cost(pools: tuple[str, ...], as_json: bool, wide: bool) -> None:
    """Estimated cost of the jobs kept in Redis, per pool and task, and the efficiency
    (billed machine-seconds / task-seconds)."""
    app = load_app()
    report = app.costs(list(pools) or None)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "total": _total(report.total),
                    "usd": report.usd,
                    "pools": {p: _total(t) for p, t in report.by_pool.items()},
                    "tasks": {n: _total(t) for n, t in report.by_task.items()},
                    "idle_seconds": dict(report.idle_seconds),
                    "idle_usd": dict(report.idle_usd),
                    "prices": {"source": app.prices.source, "checked": app.prices.checked},
                }
            )
        )
        return
    _print_cost(app, report, wide)


def _total(total: Total) -> dict[str, Any]:
    return {
        "jobs": total.jobs,
        "machine_seconds": round(total.machine_seconds, 3),
        "task_seconds": round(total.task_seconds, 3),
        "usd": total.usd,
        "efficiency": total.efficiency,
    }


def _print_cost(app: App, report: CostReport, wide: bool) -> None:
    """One table per pool and one per task, then the idle time of warm machines."""
    for title, groups in (("pool", report.by_pool), ("task", report.by_task)):
        rows = []
        for name, t in sorted(groups.items()):
            eff = f"{t.efficiency:.2f}" if t.efficiency is not None else "-"
            rows.append(
                (
                    name,
                    str(t.jobs),
                    f"{t.machine_seconds:.1f}",
                    f"{t.task_seconds:.1f}",
                    eff,
                    f"{t.usd:.6f}",
                )
            )
        print_table(console, cost_columns(title), rows, wide=wide)
    idle = sum(report.idle_seconds.values())
    console.print(
        f"warm machines idle: {idle:.1f} machine-s, ${sum(report.idle_usd.values()):.6f}; "
        f"total ${report.usd:.6f} (prices: {app.prices.source}, checked {app.prices.checked})",
        highlight=False,
    )
