"""``balloons schedules``: the app's schedules, their next and last runs; pause and resume."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from ..control import cron
from ..untrusted import shown
from .common import console, import_app, main
from .tables import Column, print_table, wide_option

SCHEDULE_COLUMNS = (
    Column("name", is_id=True),
    Column("task", drop=4),
    Column("cron", drop=3),
    Column("next run (UTC)"),
    Column("last run (UTC)", drop=2),
    Column("last job", is_id=True),
    Column("last outcome"),
    Column("missed", drop=1, justify="right"),
)
_APP_OPTION = click.option(
    "-A", "--app", "module", default=None, help="Module defining the App and its schedules."
)


def _utc(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


@main.group(invoke_without_command=True)
@_APP_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@wide_option(SCHEDULE_COLUMNS)
@click.pass_context
def schedules(ctx: click.Context, module: str | None, as_json: bool, wide: bool) -> None:
    """The app's schedules: next and last run, last outcome, runs missed; paused ones say so.
    Schedules are declared in code (``@app.task(schedule=...)``, ``app.schedule(...)``): give
    the module that declares them with -A."""
    if ctx.invoked_subcommand is not None:
        return
    app = import_app(module)
    rows = cron.rows(app, app.store.server_time())
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        console.print("no schedules declared (give the module that declares them with -A)")
        return
    print_table(
        console,
        SCHEDULE_COLUMNS,
        [
            [
                r["name"],
                r["task"],
                r["cron"],
                "paused" if r["paused"] else _utc(r["next_run"]),
                _utc(r["last_run"]),
                r["last_job"] or "-",
                shown(r["last_outcome"]),
                str(r["last_missed"]),
            ]
            for r in rows
        ],
        wide=wide,
    )


def _declared(module: str | None, name: str) -> Any:
    app = import_app(module)
    if name not in app.schedules:
        known = ", ".join(sorted(app.schedules)) or "none"
        raise click.BadParameter(
            f"no schedule {name!r} is declared (declared: {known})", param_hint="NAME"
        )
    return app


@schedules.command()
@click.argument("name")
@_APP_OPTION
def pause(name: str, module: str | None) -> None:
    """Stop submitting the runs of schedule NAME until it is resumed."""
    app = _declared(module, name)
    cron.set_paused(app, name, True, app.store.server_time())
    console.print(f"schedule {name} paused")


@schedules.command()
@click.argument("name")
@_APP_OPTION
def resume(name: str, module: str | None) -> None:
    """Submit the runs of schedule NAME again, from now on (the times due while it was paused
    are not run)."""
    app = _declared(module, name)
    cron.set_paused(app, name, False, app.store.server_time())
    console.print(f"schedule {name} resumed")
