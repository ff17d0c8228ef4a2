"""What every command shares: the group, its errors, the app, argument types, safe output."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from ..app import App
from ..config import default_state_dir
from ..errors import BalloonsError
from ..info import JobInfo, JobStatus
from ..store.keys import split_job_id
from ..untrusted import shown
from .exits import code_for, epilog

# No ":name:" emoji codes: text from tasks is printed through these too.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

#: The rich style of each status.
STYLE = {
    JobStatus.QUEUED: "yellow",
    JobStatus.STARTING: "cyan",
    JobStatus.RUNNING: "blue",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "magenta",
    JobStatus.INVALID: "bold red",
}


def safe(value: object) -> str:
    """Text balloons did not write (a task's output and errors, a record's fields), for rich:
    control characters replaced (:func:`balloons.untrusted.shown`) and markup escaped."""
    return escape(shown(value))


def styled(status: JobStatus) -> str:
    """A status in its colour, as rich markup."""
    return f"[{STYLE[status]}]{status.value}[/{STYLE[status]}]"


def clock(t: float | None) -> str:
    """An epoch time as this host's ``HH:MM:SS``; ``-`` when unknown."""
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "-"


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


class Seconds(click.ParamType[Any, float]):
    """A number of seconds from 0 to a bound: NaN and infinity are usage errors too."""

    name = "SECONDS"

    def __init__(self, high: float) -> None:
        self.high = high

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """The value as seconds; a usage error for what is no number, NaN, infinity or out of
        range."""
        from ..config import seconds_in

        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not seconds_in(seconds, 0, self.high):
            self.fail(f"{value!r}: expected seconds from 0 to {self.high:g}", param, ctx)
        return seconds


SECONDS = Seconds(1e9)


def load_app() -> App:
    """The app of the environment (``App()``), noted as the one this command uses."""
    return using(App())


def using(app: App) -> App:
    """Note the app a command uses, so that an error of its Redis names the (masked) URL."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["balloons.app"] = app
    return app


def import_app(module: str | None) -> App:
    """The app a module defines (``-A tasks`` imports ``tasks``, so its pools apply), or a
    plain ``App()`` from the environment."""
    if not module:
        return load_app()
    sys.path.insert(0, os.getcwd())
    mod = importlib.import_module(module)
    found = [v for v in vars(mod).values() if isinstance(v, App)]
    if not found:
        raise click.BadParameter(f"module {module!r} defines no balloons.App", param_hint="-A")
    return using(found[0])


def state_dir() -> Path:
    """The state directory of the environment (the embedded server's, the dashboard token's)."""
    return default_state_dir(os.environ)


def parse_value(raw: str) -> Any:
    """CLI arguments are JSON when they parse as JSON, plain strings otherwise."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def info_dict(info: JobInfo) -> dict[str, Any]:
    """A job's record as the ``--json`` of ``status`` and ``jobs`` print it."""
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
        "compat": info.compat,
        "note": info.note,
    }


class _Group(click.Group):
    """Errors said in one line, each with its exit code (:func:`balloons.cli.exits.code_for`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BalloonsError, ValueError) as exc:
            error(exc)
            sys.exit(code_for(exc))
        except Exception as exc:
            # A Redis error of a read made outside the store (a backend's, say): said as the
            # store says it, with the URL masked. (Not imported for commands that need none.)
            redis = sys.modules.get("redis")
            if redis is None or not isinstance(
                exc, redis.RedisError | redis.exceptions.RedisClusterException
            ):
                raise
            from ..store.writes import store_error

            app = ctx.meta.get("balloons.app")
            url = app.store.url if isinstance(app, App) else "redis://?"
            failure = store_error(url, exc)
            error(failure)
            sys.exit(code_for(failure))


def error(exc: BaseException) -> None:
    """Say an error on stderr, in one line."""
    err_console.print(f"[red]error:[/red] {safe(exc)}", highlight=False, soft_wrap=True)


#: How to turn on shell completion (Click's), for the help epilog and the README.
COMPLETION = """\b
Shell completion (zsh_source and fish_source for zsh and fish):
  eval "$(_BALLOONS_COMPLETE=bash_source balloons)"   # in ~/.bashrc"""

#: The name completion and usage lines know the command by, however it was started.
PROG = "balloons"


@click.group(cls=_Group, epilog=f"{epilog()}\n\n{COMPLETION}")
@click.version_option(package_name="balloons")
def main() -> None:
    """balloons: run each background job on its own ephemeral machine."""
