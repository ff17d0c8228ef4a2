"""``python -m balloons.service``: ``balloons serve`` without the command line's other
commands, for a platform that starts the service on a request (its cold start is the
request's wait): ``python -m balloons.service [-A MODULE] [--host H] [--port P]
[--idle-exit S] [--no-supervise]``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Serve the job service from the command line arguments; the exit status."""
    ap = argparse.ArgumentParser(prog="python -m balloons.service", description=__doc__)
    ap.add_argument("-A", "--app", dest="module", help="module defining the App and its tasks")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8280)
    ap.add_argument("--idle-exit", type=_idle_seconds, default=None, metavar="S")
    ap.add_argument("--no-supervise", action="store_true")
    args = ap.parse_args(argv)
    from ..app import App
    from ..config import service_token, webhook_secret
    from .server import serve

    app = None
    if args.module:
        sys.path.insert(0, os.getcwd())
        found = list(vars(importlib.import_module(args.module)).values())
        apps = [v for v in found if isinstance(v, App)]
        if not apps:
            ap.error(f"module {args.module!r} defines no balloons.App")
        app = apps[0]
    serve(
        app or App(),
        args.host,
        args.port,
        token=service_token(os.environ),
        idle_exit=args.idle_exit,
        supervise=not args.no_supervise,
        webhook_secret=webhook_secret(os.environ),
    )
    return 0


def _idle_seconds(raw: str) -> float:
    """``--idle-exit``: seconds from 0 to a week (NaN, infinity or a negative number made the
    service exit at once, as idle)."""
    from ..config import seconds_in

    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not seconds_in(value, 0, 7 * 24 * 3600):
        raise argparse.ArgumentTypeError(f"{raw!r}: expected seconds from 0 to 604800")
    return value


if __name__ == "__main__":
    sys.exit(main())
