"""Serving the emulator with uvicorn: :func:`run`.

The command line that calls it (``balloons fly-emulator``, ``python -m balloons.fly.emulator``)
is :mod:`balloons.fly.emulator.cli`; ``balloons fly-emulator --help`` lists its options.
Stopping the server (SIGINT/SIGTERM) kills every machine process it started.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn

from .app import create_app
from .config import DEFAULT_HOST, DEFAULT_PORT
from .state import Emulator

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "run"]

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
