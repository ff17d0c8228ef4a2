"""Commands about jobs: submit, wait, status, result, logs, jobs, retry and cancel."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ..errors import JobFailed, ResultTimeout
from ..flows import is_flow_id
from ..info import JobInfo, JobStatus
from ..job import Job
from ..listing import MAX_PER_PAGE
from ..untrusted import shown
from . import flows
from .common import (
    JOB_ID,
    SECONDS,
    STYLE,
    Seconds,
    clock,
    console,
    err_console,
    info_dict,
    load_app,
    main,
    parse_value,
    safe,
    styled,
)
from .exits import Exit, code_for
from .flows import JOB_OR_FLOW_ID
from .tables import Column, print_table, wide_option

if TYPE_CHECKING:
    from ..cost import JobCost
    from ..task import Task


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
    task = _task(target)
    keywords: dict[str, Any] = {}
    for item in kwargs:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--kwarg")
        keywords[key] = parse_value(value)
    job = task.submit(*[parse_value(a) for a in args], **keywords)
    if not wait:
        click.echo(job.id)
        return
    _wait(job, timeout)


def _task(target: str) -> Task[Any, Any]:
    """The task ``MODULE:FUNCTION`` names, imported from the current directory."""
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
    from ..task import Task

    if not isinstance(task, Task):
        raise click.BadParameter(
            f"{target} is not a task registered with @app.task", param_hint="MODULE:FUNCTION"
        )
    return task


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
            status = job.status()
            got = job.progress()
            fraction, note = got if got is not None else (0.0, "")
            if status is JobStatus.SUCCEEDED:
                fraction = 1.0
            if status != last:
                last = status
                elapsed = time.monotonic() - start
                bar.console.print(
                    f"{job.id} {styled(status)} after {elapsed:.2f}s", highlight=False
                )
            bar.update(row, completed=fraction, status=styled(status), note=safe(note))
            bar.refresh()
            if status.terminal:
                break
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                raise ResultTimeout(f"job {job.id} still {status.value} after {timeout}s")
            # Wake on the job's done token, with a short cap so status changes show live.
            job.app.store.wait_done(job._keys, 0.2 if left is None else max(0.01, min(0.2, left)))
    _print_result(job, timeout=0.01)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", type=SECONDS, default=None, help="Seconds to wait.")
def wait(job_id: str, timeout: float | None) -> None:
    """Wait for a job with a live progress bar and status changes; print its result."""
    _wait(load_app().job(job_id), timeout)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--tail", type=click.IntRange(1), default=None, help="Only the last N lines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(job_id: str, follow: bool, tail: int | None, as_json: bool) -> None:
    """Print what a job's task printed and logged (time, attempt, source, text)."""
    job = load_app().job(job_id)
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
        err_console.print(f"[red]{safe(exc)}[/red]", highlight=False)
        if exc.remote_traceback:
            err_console.print(shown(exc.remote_traceback), highlight=False, markup=False)
        sys.exit(code_for(exc))
    click.echo(json.dumps(value, default=repr))


@main.command()
@click.argument("job_id", type=JOB_OR_FLOW_ID)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job's status, attempts and error (a chain's or group's: its members)."""
    if is_flow_id(job_id):
        flows.status(load_app(), job_id, as_json)
        return
    job = load_app().job(job_id)
    info = job.info()
    progress = job.progress()
    cost = job.cost()
    if as_json:
        fields = info_dict(info)
        fields["attempts"] = [a.__dict__ for a in info.attempts]
        fields["progress"] = (
            None if progress is None else {"fraction": progress[0], "note": progress[1]}
        )
        fields["cost"] = {
            "usd": cost.usd,
            "machine_seconds": cost.machine_seconds,
            "task_seconds": cost.task_seconds,
        }
        click.echo(json.dumps(fields))
        return
    _print_status(info, progress, cost)


def _print_status(info: JobInfo, progress: tuple[float, str] | None, cost: JobCost) -> None:
    """``balloons status`` for a terminal: every field read from Redis goes through
    :func:`~balloons.cli.common.safe`."""
    console.print(f"[bold]{info.id}[/bold]  {safe(info.task)}  {styled(info.status)}")
    if info.reason:
        console.print(f"  reason: {safe(info.reason)}", highlight=False)
    if info.invalid:
        problems = "; ".join(info.all_problems)
        console.print(
            f"  [bold red]record invalid[/] (altered in Redis?): {safe(problems)}", highlight=False
        )
    if info.note:
        console.print(f"  note: {safe(info.note)}", highlight=False)
    if progress is not None:
        console.print(f"  progress: {progress[0]:.0%} {safe(progress[1])}", highlight=False)
    if cost.attempts:
        console.print(
            f"  cost: ${cost.usd:.8f} for {cost.machine_seconds:.2f} machine-s "
            f"({cost.task_seconds:.2f} task-s), estimated at Fly's prices",
            highlight=False,
        )
    for a in info.attempts:
        console.print(
            f"  attempt {a.number}: machine {safe(a.machine_id or '-')}  "
            f"started {clock(a.started_at)}  ended {clock(a.ended_at)}  "
            f"{safe(a.outcome or 'running')}{f' ({safe(a.reason)})' if a.reason else ''}"
        )
        if a.message and a.outcome != "SUCCEEDED":
            console.print(f"    {safe(a.message)}", highlight=False)
        if a.note:
            console.print(f"    launch: {safe(a.note)}", highlight=False)
    if info.error_message:
        console.print(
            f"  error: {safe(info.error_type or '')} {safe(info.error_message)}", highlight=False
        )


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", type=SECONDS, default=None, help="Seconds to wait for the job to end.")
def result(job_id: str, timeout: float | None) -> None:
    """Print a job's result as JSON (waiting for it), or its error."""
    _print_result(load_app().job(job_id), timeout)


#: The columns of ``balloons jobs``; a narrow terminal drops the machine first, the task last.
JOB_COLUMNS = (
    Column("id", is_id=True),
    Column("task", drop=6),
    Column("status"),
    Column("attempt", drop=2, justify="right"),
    Column("machine", drop=1, is_id=True),
    Column("created", drop=4),
    Column("took", drop=3, justify="right"),
    Column("reason", drop=5),
)


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
@wide_option(JOB_COLUMNS)
def jobs(
    limit: int, pool: str | None, status_: str | None, task: str | None, as_json: bool, wide: bool
) -> None:
    """A table of recent jobs, newest first."""
    from ..listing import Filters, find_jobs

    app = load_app()
    rows = find_jobs(app.store, Filters.parse(status_, task, pool), 1, limit).rows
    if as_json:
        click.echo(json.dumps([info_dict(r) for r in rows]))
        return
    print_table(
        console,
        JOB_COLUMNS,
        [
            [
                r.id,
                r.task,
                (r.status.value, STYLE[r.status]),
                str(r.attempt),
                r.machine_id or "-",
                clock(r.created_at),
                f"{r.duration:.3f}s" if r.duration is not None else "-",
                r.reason or "",
            ]
            for r in rows
        ],
        wide=wide,
    )


@main.command()
@click.argument("job_id", type=JOB_OR_FLOW_ID)
@click.option(
    "--grace",
    type=Seconds(86400),
    default=10.0,
    show_default=True,
    help="Seconds a running job has to stop on its own before its machine is stopped.",
)
def cancel(job_id: str, grace: float) -> None:
    """Cancel a job: a queued one never starts, a running one is stopped. A chain or group
    (chain-ULID, group-ULID): nothing more of it starts, and its members not ended are
    cancelled."""
    app = load_app()
    if is_flow_id(job_id):
        flows.cancel(app, job_id, grace)
        return
    if app.cancel(job_id, grace=grace, wait=True):
        click.echo(f"{job_id} cancelled")
    else:
        click.echo(f"{job_id} had already ended ({app.job(job_id).status().value})")
        sys.exit(Exit.FAILED)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def retry(job_id: str, as_json: bool) -> None:
    """Run a job again: a new job with the same task, options and (verified) arguments."""
    new = load_app().retry(job_id)
    click.echo(json.dumps({"retried": job_id, "id": new.id}) if as_json else new.id)
