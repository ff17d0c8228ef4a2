"""Serving the emulator with uvicorn: :func:`run` and the argparse CLI :func:`main`.

``main`` is what ``python -m balloons.fly.emulator`` (and the project's ``balloons
fly-emulator`` command) calls. Flags::

    --host 127.0.0.1 --port 4280        where to listen (Fly's internal API port)
    --token T                           the only accepted token (default: any non-empty one)
    --secret NAME=VALUE                 a secret for every app's machines (repeatable)
    --image-command IMAGE=CMD           default command of IMAGE, shell-split (repeatable)
    --default-command CMD               command of any other image, shell-split
    --region R                          default region (iad)
    --seed N                            seed of every random fault and id (default: drawn
                                        at random and logged at start, to replay a run)
    --fault-error-rate ACTION=P         injected 500/503 chance per action (repeatable)
    --rate-limit                        enforce Fly's per-action rate limits (429)
    --boot-delay S                      seconds from start to started
    --capacity-refusal-rate R|REGION=R  capacity refusal chance, all or one region (repeatable)
    --kill-rate R                       random SIGKILLs per machine per second of run time
    --lost-response-rate P              chance a successful create answers 503 anyway
    --destroyed-retention S             seconds destroyed machines stay readable
    --work-dir DIR                      where machine directories go (default: temporary)

Stopping the server (SIGINT/SIGTERM) kills every machine process it started.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from .app import create_app
from .config import DEFAULT_DESTROYED_RETENTION, DEFAULT_REGION
from .faults import Faults
from .state import Emulator

#: Fly's internal Machines API port (``http://_api.internal:4280``).
DEFAULT_PORT = 4280
DEFAULT_HOST = "127.0.0.1"

log = logging.getLogger("balloons.fly.emulator")


def run(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    sock: socket.socket | None = None,
    log_level: str = "info",
    **app_options: Any,
) -> None:
    """Serve :func:`~balloons.fly.emulator.app.create_app` ``(**app_options)`` until stopped.

    Pass an already bound ``sock`` to serve on it instead of ``host``/``port`` (handy with
    port 0). Every machine process is killed on the way out, however the server ends.
    """
    app = create_app(**app_options)
    emulator: Emulator = app.state.emulator
    if sock is not None:
        host, port = sock.getsockname()[:2]
    # The seed actually drawn when none was given: rerun with --seed N to replay a failure.
    log.info(
        "Fly Machines API emulator on http://%s:%d (seed %d, %d secret(s))",
        host, port, emulator.faults.seed, len(emulator.config.secrets),
    )  # fmt: skip
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        emulator.shutdown()


def _pair(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{flag} expects NAME=VALUE, got {text!r}")
    return name, value


def _rate(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balloons fly-emulator",
        description="Serve a local emulator of the Fly.io Machines API.",
    )
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="interface to listen on (default %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    add("--token", help="the only accepted API token (default: any non-empty token)")
    add(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="secret given to every app's machines (repeatable)",
    )
    add(
        "--image-command",
        action="append",
        default=[],
        metavar="IMAGE=CMD",
        help="default command of an image, shell-split (repeatable)",
    )
    add("--default-command", metavar="CMD", help="command of any other image, shell-split")
    add("--region", default=DEFAULT_REGION, help="default region (default %(default)s)")
    add(
        "--seed",
        type=int,
        help="seed of every random fault and id (default: random, logged at start)",
    )
    add(
        "--fault-error-rate",
        action="append",
        default=[],
        metavar="ACTION=P",
        help="chance of an injected 500/503 for an action, e.g. create=0.05 (repeatable)",
    )
    add("--rate-limit", action="store_true", help="enforce Fly's per-action rate limits")
    add("--boot-delay", type=_rate, default=0.0, metavar="S", help="seconds to boot")
    add(
        "--capacity-refusal-rate",
        action="append",
        default=[],
        metavar="R|REGION=R",
        help="chance a create/start is refused for capacity (repeatable per region)",
    )
    add(
        "--kill-rate",
        type=_rate,
        default=0.0,
        metavar="R",
        help="random SIGKILLs per machine per second of run time",
    )
    add(
        "--lost-response-rate",
        type=_rate,
        default=0.0,
        metavar="P",
        help="chance that a successful create answers 503",
    )
    add(
        "--destroyed-retention",
        type=_rate,
        default=DEFAULT_DESTROYED_RETENTION,
        metavar="S",
        help="seconds destroyed machines stay readable (default %(default)s)",
    )
    add("--work-dir", type=Path, help="where machine directories go (default: temporary)")
    add("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser  # fmt: skip


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """``create_app`` keyword arguments from parsed CLI flags (``ValueError`` if invalid)."""
    secrets = dict(_pair(s, "--secret") for s in args.secret)
    image_commands = {
        image: shlex.split(cmd)
        for image, cmd in (_pair(s, "--image-command") for s in args.image_command)
    }
    error_rates = {a: _rate(p) for a, p in (_pair(s, "--fault-error-rate")
                                            for s in args.fault_error_rate)}  # fmt: skip
    capacity_rate = 0.0
    by_region: dict[str, float] = {}
    for text in args.capacity_refusal_rate:
        if "=" in text:
            region, value = _pair(text, "--capacity-refusal-rate")
            by_region[region] = _rate(value)
        else:
            capacity_rate = _rate(text)
    faults = Faults(
        seed=args.seed,
        error_rates=error_rates,
        rate_limit=args.rate_limit,
        boot_delay=args.boot_delay,
        capacity_refusal_rate=capacity_rate,
        capacity_refusal_by_region=by_region,
        kill_rate=args.kill_rate,
        lost_response_rate=args.lost_response_rate,
    )
    return {
        "token": args.token,
        "secrets": secrets,
        "image_commands": image_commands,
        "default_command": shlex.split(args.default_command) if args.default_command else None,
        "region": args.region,
        "destroyed_retention": args.destroyed_retention,
        "work_dir": args.work_dir,
        "faults": faults,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and serve until stopped; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from(args)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))  # exits with status 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    run(args.host, args.port, log_level=args.log_level, **options)
    return 0
