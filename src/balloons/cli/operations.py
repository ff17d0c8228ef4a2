"""Commands that run balloons' processes: supervise, gc, dashboard, worker, fly-emulator, dev.

``fly-emulator`` is the emulator's own command (:mod:`balloons.fly.emulator.cli`)."""

from __future__ import annotations

import json
import os
import sys

import click

from ..fly.emulator.cli import command as fly_emulator_command
from ..store import embedded
from ..untrusted import shown
from .common import Seconds, err_console, import_app, load_app, main, state_dir


@main.command()
@click.option("-A", "--app", "module", default=None, help="Module defining the App (and pools).")
@click.option(
    "--interval", type=Seconds(3600), default=1.0, show_default=True, help="Seconds per step."
)
@click.option("--once", is_flag=True, help="Run one step (with orphan collection) and exit.")
@click.option(
    "--version-grace",
    type=Seconds(7 * 24 * 3600),
    default=60.0,
    show_default=True,
    help="Seconds a job of a code version no machine runs waits before it is re-routed or failed.",
)
def supervise(module: str | None, interval: float, once: bool, version_grace: float) -> None:
    """Reclaim dead machines, promote due jobs, launch for queued work, collect orphans, and
    submit the due runs of the schedules the -A module declares."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = import_app(module)
    app.store.pools()  # a wrong Redis URL is said now, once, rather than at every step
    supervisor = app.supervisor(interval=interval, version_grace=version_grace)
    if once:
        report = supervisor.step(gc=True)
        click.echo(
            json.dumps(
                {
                    "reclaimed": report.reclaimed,
                    "stopped": report.stopped,
                    "launched": report.launched,
                    "destroyed": report.destroyed,
                    "scheduled": report.scheduled,
                    "versions": report.versions,
                    "advanced": report.advanced,
                    "errors": report.errors,
                }
            )
        )
        return
    err_console.print(f"supervising every {interval:g}s; Ctrl-C to stop")
    try:
        supervisor.run_forever()
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--dry-run", is_flag=True, help="Only list the orphaned machines.")
@click.option("--standby", is_flag=True, help="Also destroy every pool's stopped standby machines.")
@click.option(
    "--min-age",
    type=Seconds(7 * 24 * 3600),
    default=10.0,
    show_default=True,
    help="Seconds a running machine is left alone after its launch (its slot may be on its way).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gc(dry_run: bool, standby: bool, min_age: float, as_json: bool) -> None:
    """Destroy machines tagged by balloons whose job is finished or unknown, and stopped
    machines beyond their pool's standby setting (all of them with --standby)."""
    supervisor = load_app().supervisor(orphan_min_age=min_age)
    found = supervisor.collect_orphans(dry_run=dry_run, standby=standby, wait=30.0)
    if as_json:
        click.echo(json.dumps([{"id": m.id, "pool": m.pool, "job": m.job_id} for m in found]))
        return
    verb = "would destroy" if dry_run else "destroyed"
    for m in found:
        click.echo(shown(f"{verb} {m.id} (pool {m.pool}, job {m.job_id or '-'})"))
    click.echo(f"{len(found)} machine(s) {verb}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8270,
    show_default=True,
    help="Port to listen on.",
)
def dashboard(host: str, port: int) -> None:
    """Serve the web dashboard (token: BALLOONS_DASHBOARD_TOKEN).

    Beyond loopback a token is required. On 127.0.0.1 without one, a random token is made and
    kept in the state directory (mode 0600); its path is printed, never the token.
    """
    try:
        from ..dashboard.server import check_installed, resolve_token, serve

        check_installed()
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs the dashboard extra (pip install 'balloons[dashboard]'): {exc}"
        ) from None
    from ..config import dashboard_token

    token, kept = resolve_token(host, dashboard_token(os.environ), state_dir())
    where = f"[{host}]" if ":" in host else host
    err_console.print(f"balloons dashboard on http://{where}:{port}/", highlight=False)
    if kept is not None:
        err_console.print(f"log in with the token in {kept}", highlight=False)
    serve(load_app(), host, port, token)


@main.command()
def worker() -> None:
    """Run the job named by BALLOONS_JOB: what a machine runs (python -m balloons.machine)."""
    from ..machine.worker import main as worker_main

    sys.exit(worker_main())


# The emulator's own command (Click), loaded without its server: see balloons.fly.emulator.cli.
main.add_command(fly_emulator_command, "fly-emulator")


@main.group()
def dev() -> None:
    """Manage the embedded Valkey server of the embedded default."""


def _namespace() -> str:
    return load_app().settings.namespace


def _machines(n: int) -> str:
    return f"{n} machine{'s' if n != 1 else ''}"


@dev.command("start")
def dev_start() -> None:
    """Start the embedded server (no-op if it runs), reclaiming the slots of machines that
    ended while it was down."""
    url, reclaimed = embedded.start(state_dir(), namespace=_namespace())
    if reclaimed:
        click.echo(f"reclaimed the slots of {_machines(reclaimed)} that ended while it was down")
    click.echo(f"embedded Valkey running at {url}")


@dev.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dev_status(as_json: bool) -> None:
    """Is the embedded server running, where, and with what data directory."""
    server = embedded.status(state_dir())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "running": server.running,
                    "url": server.url,
                    "pid": server.pid,
                    "state_dir": str(server.state_dir),
                }
            )
        )
        return
    if server.running:
        click.echo(f"running: pid {server.pid} at {server.url}\n  data: {server.data_dir}")
    else:
        click.echo(f"stopped (state dir {server.state_dir})")


@dev.command("stop")
@click.option(
    "--all", "stop_all", is_flag=True, help="Also stop machines running a job (it is cancelled)."
)
def dev_stop(stop_all: bool) -> None:
    """Stop the local machines with no job, then the embedded server cleanly (its append-only
    file keeps every job). Machines running a job are left to finish it: each records its
    outcome once the server is back (balloons dev start), or gives up at its deadline."""
    state = state_dir()
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
