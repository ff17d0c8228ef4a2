"""The emulator's command line (Click): ``balloons fly-emulator`` and ``python -m
balloons.fly.emulator`` are this one :data:`command`.

This module imports Click and the emulator's settings only: the server (Starlette, uvicorn) is
imported when the command runs, so that ``balloons --help`` stays quick and works without the
emulator's extra installed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from .config import (
    DEFAULT_DESTROYED_RETENTION,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_REGION,
    check_image,
)
from .faults import Faults

#: The extra that installs the emulator's server.
EXTRA = "emulator"


def _pair(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"{flag} expects NAME=VALUE, got {text!r}")
    return name, value


def _image(text: str) -> tuple[str, Path]:
    ref, sep, directory = text.partition("=")
    if not sep or not ref or not directory:
        raise ValueError(f"--image expects REF=DIR, got {text!r}")
    try:
        check_image(ref, Path(directory))
    except ValueError:
        raise ValueError(f"--image {text!r}: {directory!r} is not an existing directory") from None
    return ref, Path(directory)


def _rate(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag} expects a number, got {text!r}") from None


def options_from(params: Mapping[str, Any]) -> dict[str, Any]:
    """``create_app`` keyword arguments from the command's parsed options (``ValueError``, naming
    the option and the value, when one is invalid)."""
    import shlex

    secrets = dict(_pair(s, "--secret") for s in params["secret"])
    image_commands = {
        image: shlex.split(cmd)
        for image, cmd in (_pair(s, "--image-command") for s in params["image_command"])
    }
    images = dict(_image(s) for s in params["image"])
    error_rates = {
        action: _rate(p, "--fault-error-rate")
        for action, p in (_pair(s, "--fault-error-rate") for s in params["fault_error_rate"])
    }
    capacity_rate = 0.0
    by_region: dict[str, float] = {}
    for text in params["capacity_refusal_rate"]:
        if "=" in text:
            region, value = _pair(text, "--capacity-refusal-rate")
            by_region[region] = _rate(value, "--capacity-refusal-rate")
        else:
            capacity_rate = _rate(text, "--capacity-refusal-rate")
    faults = Faults(
        seed=params["seed"],
        error_rates=error_rates,
        rate_limit=params["rate_limit"],
        boot_delay=params["boot_delay"],
        capacity_refusal_rate=capacity_rate,
        capacity_refusal_by_region=by_region,
        kill_rate=params["kill_rate"],
        lost_response_rate=params["lost_response_rate"],
    )
    default_command = params["default_command"]
    return {
        "token": params["token"],
        "secrets": secrets,
        "image_commands": image_commands,
        "default_command": shlex.split(default_command) if default_command else None,
        "images": images,
        "region": params["region"],
        "destroyed_retention": params["destroyed_retention"],
        "work_dir": params["work_dir"],
        "faults": faults,
    }


@click.command(
    "fly-emulator",
    epilog="Stopping the server (SIGINT, SIGTERM) kills every machine process it started.",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (Fly's internal API port by default).",
)
@click.option("--token", default=None, help="The only accepted API token (default: any non-empty).")
@click.option(
    "--secret",
    multiple=True,
    metavar="NAME=VALUE",
    help="A secret given to every app's machines (repeatable).",
)
@click.option(
    "--image-command",
    multiple=True,
    metavar="IMAGE=CMD",
    help="The default command of an image, shell-split (repeatable).",
)
@click.option(
    "--image",
    multiple=True,
    metavar="REF=DIR",
    help="Run machines of image REF in a fresh copy of DIR, as its WORKDIR, with programs "
    "found on this PATH (repeatable).",
)
@click.option(
    "--default-command", metavar="CMD", help="The command of any other image, shell-split."
)
@click.option("--region", default=DEFAULT_REGION, show_default=True, help="The default region.")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of every random fault and id (default: drawn at random and logged at start, to "
    "replay a run).",
)
@click.option(
    "--fault-error-rate",
    multiple=True,
    metavar="ACTION=P",
    help="Chance of an injected 500/503 for an action, e.g. create=0.05 (repeatable).",
)
@click.option("--rate-limit", is_flag=True, help="Enforce Fly's per-action rate limits (429).")
@click.option(
    "--boot-delay", type=float, default=0.0, metavar="S", help="Seconds from start to started."
)
@click.option(
    "--capacity-refusal-rate",
    multiple=True,
    metavar="R|REGION=R",
    help="Chance a create or start is refused for capacity, in all regions or one (repeatable).",
)
@click.option(
    "--kill-rate",
    type=float,
    default=0.0,
    metavar="R",
    help="Random SIGKILLs per machine per second of run time.",
)
@click.option(
    "--lost-response-rate",
    type=float,
    default=0.0,
    metavar="P",
    help="Chance that a successful create answers 503 anyway.",
)
@click.option(
    "--destroyed-retention",
    type=float,
    default=DEFAULT_DESTROYED_RETENTION,
    show_default=True,
    metavar="S",
    help="Seconds destroyed machines stay readable.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where machine directories go (default: a temporary directory).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="The server's log level.",
)
def command(**params: Any) -> None:
    """Serve a local emulator of the Fly.io Machines API: machines run as local processes."""
    try:
        options = options_from(params)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        from .server import run
    except ImportError as exc:
        raise click.ClickException(
            f"the Fly emulator needs the {EXTRA} extra (pip install 'balloons[{EXTRA}]'): {exc}"
        ) from None
    level = params["log_level"]
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    run(params["host"], params["port"], log_level=level, **options)


def main(argv: list[str] | None = None, prog_name: str = "balloons fly-emulator") -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``) and serve until stopped; exits (``SystemExit``)
    with 0, or 2 for a bad option."""
    command.main(args=argv, prog_name=prog_name)
