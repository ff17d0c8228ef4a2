"""The ``balloons`` command line (also ``python -m balloons``)."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import embedded
from .app import App
from .config import default_state_dir
from .errors import BalloonsError, JobFailed, ResultTimeout
from .job import Job
from .keys import PoolKeys, split_job_id
from .listing import MAX_PER_PAGE
from .status import JobInfo, JobStatus
from .untrusted import shown

# No ":name:" emoji codes: text from tasks is printed through these too.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

_STYLE = {
    JobStatus.QUEUED: "yellow",
    JobStatus.STARTING: "cyan",
    JobStatus.RUNNING: "blue",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "magenta",
    JobStatus.INVALID: "bold red",
}


def _t(value: object) -> str:
    """Text balloons did not write (a task's output and errors, a record's fields), for rich:
    control characters replaced (:func:`balloons.untrusted.shown`) and markup escaped."""
    return escape(shown(value))


class _JobId(click.ParamType[Any, str]):
    """A job id (``POOL.ULID``): anything else is a usage error, exit 2."""

    name = "JOB_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            split_job_id(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


JOB_ID = _JobId()


class _Seconds(click.ParamType[Any, float]):
    """A number of seconds from 0 to a bound: NaN and infinity are usage errors too."""

    name = "SECONDS"

    def __init__(self, high: float) -> None:
        self.high = high

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        from .config import seconds_in

        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not seconds_in(seconds, 0, self.high):
            self.fail(f"{value!r}: expected seconds from 0 to {self.high:g}", param, ctx)
        return seconds


SECONDS = _Seconds(1e9)


def _app() -> App:
    return _using(App())


def _using(app: App) -> App:
    """Note the app a command uses, so that an error of its Redis names the (masked) URL."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["balloons.app"] = app
    return app


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "-"


def _parse_value(raw: str) -> Any:
    """CLI arguments are JSON when they parse as JSON, plain strings otherwise."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _info_dict(info: JobInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "task": info.task,
        "pool": info.pool,
        "status": info.status.value,
        "attempt": info.attempt,
        "machine": info.machine_id,
        "created": info.created_at,
        "started": info.started_at,
        "finished": info.finished_at,
        "reason": info.reason,
        "error": info.error_message,
        "problems": list(info.problems),
    }


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BalloonsError as exc:
            _error(exc)
            sys.exit(1)
        except ValueError as exc:
            _error(exc)
            sys.exit(2)
        except Exception as exc:
            # A Redis error of a read made outside the store (a backend's, say): said as the
            # store says it, with the URL masked. (Not imported for commands that need none.)
            redis = sys.modules.get("redis")
            if redis is None or not isinstance(
                exc, redis.RedisError | redis.exceptions.RedisClusterException
            ):
                raise
            from .store import store_error

            app = ctx.meta.get("balloons.app")
            url = app.store.url if isinstance(app, App) else "redis://?"
            _error(store_error(url, exc))
            sys.exit(1)


def _error(exc: BaseException) -> None:
    err_console.print(f"[red]error:[/red] {_t(exc)}", highlight=False, soft_wrap=True)


@click.group(cls=_Group)
@click.version_option(package_name="balloons")
def main() -> None:
    """balloons: run each background job on its own ephemeral machine."""


@main.command()
@click.argument("target", metavar="MODULE:FUNCTION")
@click.argument("args", nargs=-1)
@click.option(
    "--kwarg",
    "-k",
    "kwargs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument (JSON or string).",
)
@click.option("--wait", is_flag=True, help="Wait for the result, showing live status.")
@click.option("--timeout", type=SECONDS, default=None, help="Seconds to wait with --wait.")
def submit(
    target: str, args: tuple[str, ...], kwargs: tuple[str, ...], wait: bool, timeout: float | None
) -> None:
    """Submit a job: run MODULE:FUNCTION (a registered task) on a fresh machine.

    ARGS and --kwarg values are parsed as JSON when they are valid JSON, else taken as strings.
    """
    module, sep, func = target.partition(":")
    if not sep or not module or not func:
        raise click.BadParameter(
            f"{target!r}: expected MODULE:FUNCTION", param_hint="MODULE:FUNCTION"
        )
    sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module!r}: {exc}", param_hint="MODULE:FUNCTION"
        ) from exc
    task = getattr(mod, func, None)
    from .task import Task

    if not isinstance(task, Task):
        raise click.BadParameter(
            f"{target} is not a task registered with @app.task", param_hint="MODULE:FUNCTION"
        )
    kw: dict[str, Any] = {}
    for item in kwargs:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--kwarg")
        kw[key] = _parse_value(value)
    job = task.submit(*[_parse_value(a) for a in args], **kw)
    if not wait:
        click.echo(job.id)
        return
    _wait(job, timeout)


def _wait(job: Job[Any], timeout: float | None) -> None:
    """A live progress bar: the job's status, the task's ``balloons.progress`` and note."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    start = time.monotonic()
    job.status()  # an unknown job or an unreachable Redis is said before anything is drawn
    bar = Progress(
        TextColumn("[bold]{task.fields[job]}[/bold] {task.fields[status]}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=err_console,
        auto_refresh=False,
    )
    last: JobStatus | None = None
    with bar:
        row = bar.add_task("", total=1.0, job=job.id, status="", note="")
        while True:
            st = job.status()
            got = job.progress()
            fraction, note = got if got is not None else (0.0, "")
            if st is JobStatus.SUCCEEDED:
                fraction = 1.0
            if st != last:
                last = st
                elapsed = time.monotonic() - start
                bar.console.print(
                    f"{job.id} [{_STYLE[st]}]{st.value}[/{_STYLE[st]}] after {elapsed:.2f}s",
                    highlight=False,
                )
            bar.update(
                row,
                completed=fraction,
                status=f"[{_STYLE[st]}]{st.value}[/{_STYLE[st]}]",
                note=_t(note),
            )
            bar.refresh()
            if st.terminal:
                break
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                raise ResultTimeout(f"job {job.id} still {st.value} after {timeout}s")
            # Wake on the job's done token, with a short cap so status changes show live.
            job.app.store.wait_done(job._keys, 0.2 if left is None else max(0.01, min(0.2, left)))
    _print_result(job, timeout=0.01)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", type=SECONDS, default=None, help="Seconds to wait.")
def wait(job_id: str, timeout: float | None) -> None:
    """Wait for a job with a live progress bar and status changes; print its result."""
    _wait(_app().job(job_id), timeout)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--tail", type=click.IntRange(1), default=None, help="Only the last N lines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(job_id: str, follow: bool, tail: int | None, as_json: bool) -> None:
    """Print what a job's task printed and logged (time, attempt, source, text)."""
    job = _app().job(job_id)
    job.status()  # JobNotFound for an unknown job, rather than an empty listing
    lines = job.logs(tail=tail)
    after = lines[-1].id if lines else ""
    if tail is None and follow:
        lines, after = [], ""
    for line in lines:
        click.echo(json.dumps(line.as_dict()) if as_json else str(line))
    if follow:
        for line in job.stream_logs(after=after):
            click.echo(json.dumps(line.as_dict()) if as_json else str(line))


def _print_result(job: Job[Any], timeout: float | None) -> None:
    """The result as JSON on stdout, or the failure and its remote traceback on stderr (exit 1)."""
    try:
        value = job.result(timeout=timeout)
    except JobFailed as exc:
        err_console.print(f"[red]{_t(exc)}[/red]", highlight=False)
        if exc.remote_traceback:
            err_console.print(shown(exc.remote_traceback), highlight=False, markup=False)
        sys.exit(1)
    click.echo(json.dumps(value, default=repr))


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job's status, attempts and error."""
    job = _app().job(job_id)
    info = job.info()
    progress = job.progress()
    cost = job.cost()
    if as_json:
        d = _info_dict(info)
        d["attempts"] = [a.__dict__ for a in info.attempts]
        d["progress"] = None if progress is None else {"fraction": progress[0], "note": progress[1]}
        d["cost"] = {
            "usd": cost.usd,
            "machine_seconds": cost.machine_seconds,
            "task_seconds": cost.task_seconds,
        }
        click.echo(json.dumps(d))
        return
    console.print(
        f"[bold]{info.id}[/bold]  {_t(info.task)}  [{_STYLE[info.status]}]{info.status.value}[/]"
    )
    if info.invalid:
        problems = "; ".join(info.all_problems)
        console.print(
            f"  [bold red]record invalid[/] (altered in Redis?): {_t(problems)}", highlight=False
        )
    if progress is not None:
        console.print(f"  progress: {progress[0]:.0%} {_t(progress[1])}", highlight=False)
    if cost.attempts:
        console.print(
            f"  cost: ${cost.usd:.8f} for {cost.machine_seconds:.2f} machine-s "
            f"({cost.task_seconds:.2f} task-s), estimated at Fly's prices",
            highlight=False,
        )
    for a in info.attempts:
        console.print(
            f"  attempt {a.number}: machine {_t(a.machine_id or '-')}  "
            f"started {_ts(a.started_at)}  ended {_ts(a.ended_at)}  "
            f"{_t(a.outcome or 'running')}{f' ({_t(a.reason)})' if a.reason else ''}"
        )
        if a.message and a.outcome != "SUCCEEDED":
            console.print(f"    {_t(a.message)}", highlight=False)
        if a.note:
            console.print(f"    launch: {_t(a.note)}", highlight=False)
    if info.error_message:
        console.print(
            f"  error: {_t(info.error_type or '')} {_t(info.error_message)}", highlight=False
        )


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", type=SECONDS, default=None, help="Seconds to wait for the job to end.")
def result(job_id: str, timeout: float | None) -> None:
    """Print a job's result as JSON (waiting for it), or its error."""
    _print_result(_app().job(job_id), timeout)


@main.command()
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PER_PAGE),
    default=20,
    show_default=True,
    help="Rows to show.",
)
@click.option("--pool", default=None, help="Only this pool.")
@click.option(
    "--status",
    "status_",
    type=click.Choice([s.value for s in JobStatus], case_sensitive=False),
    default=None,
    help="Only jobs in this status.",
)
@click.option("--task", default=None, help="Only this task (module:function, or function).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def jobs(
    limit: int, pool: str | None, status_: str | None, task: str | None, as_json: bool
) -> None:
    """A table of recent jobs, newest first."""
    from .listing import Filters, find_jobs

    app = _app()
    rows = find_jobs(app.store, Filters.parse(status_, task, pool), 1, limit).rows
    if as_json:
        click.echo(json.dumps([_info_dict(r) for r in rows]))
        return
    table = Table(show_edge=False)
    table.add_column("id", no_wrap=True)
    for name in ("task", "status", "attempt", "machine", "created", "took", "reason"):
        table.add_column(name, no_wrap=name in ("status", "created"))
    for r in rows:
        took = f"{r.duration:.3f}s" if r.duration is not None else "-"
        table.add_row(
            r.id,
            _t(r.task),
            f"[{_STYLE[r.status]}]{r.status.value}[/]",
            str(r.attempt),
            _t(r.machine_id or "-"),
            _ts(r.created_at),
            took,
            _t(r.reason or ""),
        )
    console.print(table)


def _import_app(module: str | None) -> App:
    """The app a module defines (``-A tasks`` imports ``tasks``, so its pools apply), or a
    plain ``App()`` from the environment."""
    if not module:
        return _app()
    sys.path.insert(0, os.getcwd())
    mod = importlib.import_module(module)
    found = [v for v in vars(mod).values() if isinstance(v, App)]
    if not found:
        raise click.BadParameter(f"module {module!r} defines no balloons.App", param_hint="-A")
    return _using(found[0])


@main.command()
@click.option("-A", "--app", "module", default=None, help="Module defining the App (and pools).")
@click.option(
    "--interval", type=_Seconds(3600), default=1.0, show_default=True, help="Seconds per step."
)
@click.option("--once", is_flag=True, help="Run one step (with orphan collection) and exit.")
def supervise(module: str | None, interval: float, once: bool) -> None:
    """Reclaim dead machines, promote due jobs, launch for queued work, collect orphans."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = _import_app(module)
    app.store.pools()  # a wrong Redis URL is said now, once, rather than at every step
    sup = app.supervisor(interval=interval)
    if once:
        report = sup.step(gc=True)
        click.echo(
            json.dumps(
                {
                    "reclaimed": report.reclaimed,
                    "stopped": report.stopped,
                    "launched": report.launched,
                    "destroyed": report.destroyed,
                    "errors": report.errors,
                }
            )
        )
        return
    err_console.print(f"supervising every {interval:g}s; Ctrl-C to stop")
    try:
        sup.run_forever()
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pools(as_json: bool) -> None:
    """Each pool's cap, its machines (starting, running, idle, stopped on standby) and queued
    jobs."""
    from .listing import pool_summaries

    app = _app()
    rows = [app.store.pool_stats(p) for p in app.store.pools()]
    by_pool = {s.name: s for s in pool_summaries(app.store)}
    for r in rows:
        found = by_pool.get(r["pool"])
        r["jobs"] = dict(found.by_status) if found is not None else {}
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(show_edge=False)
    for name in (
        "pool", "cap", "floor", "starting", "running", "idle", "standby", "queued", "delayed",
    ):  # fmt: skip
        table.add_column(name, justify="left" if name == "pool" else "right")
    for r in rows:
        table.add_row(
            r["pool"],
            str(r["max_machines"]),
            str(r["min_machines"]),
            str(r["starting"]),
            str(r["running"]),
            str(r["idle"]),
            f"{r['standby']}/{r['standby_max']}",
            str(r["queued"]),
            str(r["delayed"]),
        )
    console.print(table)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--grace", type=_Seconds(86400), default=10.0, show_default=True)
def cancel(job_id: str, grace: float) -> None:
    """Cancel a job: a queued one never starts, a running one is stopped."""
    app = _app()
    if app.cancel(job_id, grace=grace, wait=True):
        click.echo(f"{job_id} cancelled")
    else:
        click.echo(f"{job_id} had already ended ({app.job(job_id).status().value})")
        sys.exit(1)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def retry(job_id: str, as_json: bool) -> None:
    """Run a job again: a new job with the same task, options and (verified) arguments."""
    new = _app().retry(job_id)
    click.echo(json.dumps({"retried": job_id, "id": new.id}) if as_json else new.id)


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Stopped machines too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def machines(show_all: bool, as_json: bool) -> None:
    """The backend's machines: id, state, pool, job and attempt, and the slot's state."""
    app = _app()
    found = app.backend.list()
    slots: dict[str, dict[str, Any]] = {}
    for pool in app.store.pools():
        pk = PoolKeys(app.settings.namespace, pool)
        for _slot, _lease, info in app.store.slots(pk):
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
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(show_edge=False)
    for name in ("id", "state", "pool", "slot", "job", "size", "created", "exit"):
        table.add_column(name, no_wrap=name in ("id", "job"))
    for r in rows:
        size = f"{r['cpus']}x{r['memory_mb']}MB" if r["cpus"] else "-"
        exit_code = "-" if r["exit_code"] is None else str(r["exit_code"])
        table.add_row(
            _t(r["id"]),
            _t(r["state"]),
            _t(r["pool"] or "-"),
            _t(r["slot"] or "-"),
            _t(r["job"] or "-"),
            _t(size),
            _ts(r["created"]),
            exit_code,
        )
    console.print(table)
    if not rows:
        err_console.print("no running machines" + ("" if show_all else " (--all: stopped too)"))


@main.command()
@click.option("--pool", "pools", multiple=True, help="Only this pool (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cost(pools: tuple[str, ...], as_json: bool) -> None:
    """Estimated cost of the jobs kept in Redis, per pool and task, and the efficiency
    (billed machine-seconds / task-seconds)."""
    app = _app()
    rep = app.costs(list(pools) or None)

    def row(t: Any) -> dict[str, Any]:
        return {
            "jobs": t.jobs,
            "machine_seconds": round(t.machine_seconds, 3),
            "task_seconds": round(t.task_seconds, 3),
            "usd": t.usd,
            "efficiency": t.efficiency,
        }

    if as_json:
        click.echo(
            json.dumps(
                {
                    "total": row(rep.total),
                    "usd": rep.usd,
                    "pools": {p: row(t) for p, t in rep.by_pool.items()},
                    "tasks": {n: row(t) for n, t in rep.by_task.items()},
                    "idle_seconds": dict(rep.idle_seconds),
                    "idle_usd": dict(rep.idle_usd),
                    "prices": {"source": app.prices.source, "checked": app.prices.checked},
                }
            )
        )
        return
    for title, groups in (("pool", rep.by_pool), ("task", rep.by_task)):
        table = Table(show_edge=False)
        for name in (title, "jobs", "machine-s", "task-s", "efficiency", "USD"):
            table.add_column(name, justify="left" if name == title else "right")
        for name, t in sorted(groups.items()):
            eff = f"{t.efficiency:.2f}" if t.efficiency is not None else "-"
            table.add_row(
                _t(name),
                str(t.jobs),
                f"{t.machine_seconds:.1f}",
                f"{t.task_seconds:.1f}",
                eff,
                f"{t.usd:.6f}",
            )
        console.print(table)
    idle = sum(rep.idle_seconds.values())
    console.print(
        f"warm machines idle: {idle:.1f} machine-s, ${sum(rep.idle_usd.values()):.6f}; "
        f"total ${rep.usd:.6f} (prices: {app.prices.source}, checked {app.prices.checked})",
        highlight=False,
    )


@main.command()
@click.option("--dry-run", is_flag=True, help="Only list the orphaned machines.")
@click.option("--standby", is_flag=True, help="Also destroy every pool's stopped standby machines.")
@click.option(
    "--min-age",
    type=_Seconds(7 * 24 * 3600),
    default=10.0,
    show_default=True,
    help="Seconds a running machine is left alone after its launch (its slot may be on its way).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gc(dry_run: bool, standby: bool, min_age: float, as_json: bool) -> None:
    """Destroy machines tagged by balloons whose job is finished or unknown, and stopped
    machines beyond their pool's standby setting (all of them with --standby)."""
    sup = _app().supervisor(orphan_min_age=min_age)
    found = sup.collect_orphans(dry_run=dry_run, standby=standby, wait=30.0)
    if as_json:
        click.echo(json.dumps([{"id": m.id, "pool": m.pool, "job": m.job_id} for m in found]))
        return
    verb = "would destroy" if dry_run else "destroyed"
    for m in found:
        click.echo(shown(f"{verb} {m.id} (pool {m.pool}, job {m.job_id or '-'})"))
    click.echo(f"{len(found)} machine(s) {verb}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8270, show_default=True)
def dashboard(host: str, port: int) -> None:
    """Serve the web dashboard (token: BALLOONS_DASHBOARD_TOKEN).

    Beyond loopback a token is required. On 127.0.0.1 without one, a random token is made and
    kept in the state directory (mode 0600); its path is printed, never the token.
    """
    try:
        from .dashboard.server import resolve_token, serve
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs the dashboard extra (pip install 'balloons[dashboard]'): {exc}"
        ) from None
    from .config import dashboard_token

    token, kept = resolve_token(host, dashboard_token(os.environ), _state_dir())
    where = f"[{host}]" if ":" in host else host
    err_console.print(f"balloons dashboard on http://{where}:{port}/", highlight=False)
    if kept is not None:
        err_console.print(f"log in with the token in {kept}", highlight=False)
    serve(_app(), host, port, token)


@main.command()
def worker() -> None:
    """Run the job named by BALLOONS_JOB: what a machine runs (python -m balloons.worker)."""
    from .worker import main as worker_main

    sys.exit(worker_main())


@main.command(
    "fly-emulator",
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def fly_emulator(args: tuple[str, ...]) -> None:
    """A local Fly Machines API emulator (--host, --port, --token, --secret, faults; see --help)."""
    from .fly.emulator.server import main as emulator_main

    sys.exit(emulator_main(list(args)))


@main.group()
def dev() -> None:
    """Manage the embedded Valkey server of the embedded default."""


def _state_dir() -> Path:
    return default_state_dir(os.environ)


def _namespace() -> str:
    return _app().settings.namespace


@dev.command("start")
def dev_start() -> None:
    """Start the embedded server (no-op if it runs), reclaiming the slots of machines that
    ended while it was down."""
    url, reclaimed = embedded.start(_state_dir(), namespace=_namespace())
    if reclaimed:
        click.echo(f"reclaimed the slots of {_machines(reclaimed)} that ended while it was down")
    click.echo(f"embedded Valkey running at {url}")


def _machines(n: int) -> str:
    return f"{n} machine{'s' if n != 1 else ''}"


@dev.command("status")
@click.option("--json", "as_json", is_flag=True)
def dev_status(as_json: bool) -> None:
    """Is the embedded server running, where, and with what data directory."""
    st = embedded.status(_state_dir())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "running": st.running,
                    "url": st.url,
                    "pid": st.pid,
                    "state_dir": str(st.state_dir),
                }
            )
        )
        return
    if st.running:
        click.echo(f"running: pid {st.pid} at {st.url}\n  data: {st.data_dir}")
    else:
        click.echo(f"stopped (state dir {st.state_dir})")


@dev.command("stop")
@click.option(
    "--all", "stop_all", is_flag=True, help="Also stop machines running a job (it is cancelled)."
)
def dev_stop(stop_all: bool) -> None:
    """Stop the local machines with no job, then the embedded server cleanly (its append-only
    file keeps every job). Machines running a job are left to finish it: each records its
    outcome once the server is back (balloons dev start), or gives up at its deadline."""
    state = _state_dir()
    if embedded.status(state).running:
        try:
            stopped, left = embedded.stop_machines(state, _namespace(), running_too=stop_all)
        except Exception as exc:  # the server is stopped all the same
            err_console.print(f"[yellow]warning:[/yellow] machines not stopped: {exc}")
        else:
            if stopped:
                click.echo(f"stopped {_machines(stopped)}")
            if left:
                click.echo(
                    f"left {_machines(left)} running a job: each records its outcome once the "
                    "server is back (balloons dev start), or gives up at its deadline; "
                    "--all stops them"
                )
    stopped_server = embedded.stop(state)
    click.echo("stopped" if stopped_server else "not running")


if __name__ == "__main__":
    main()
