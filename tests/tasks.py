"""Tasks the test suite submits. Machines import this module to find them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import balloons

app = balloons.App(env_allowlist=["ALLOWED_VAR"])


@app.task(timeout=30)
def add(a: int, b: int) -> int:
    return a + b


@app.task(timeout=30)
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@app.task(timeout=30)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(timeout=30)
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(timeout=30)
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@app.task(timeout=30)
def environment() -> dict[str, Any]:
    return {"env": dict(os.environ), "sid": os.getsid(0), "pid": os.getpid()}


@app.task(timeout=30)
def unserializable_result() -> object:
    return object()


@app.task(timeout=30, memory_mb=128)
def hog(mb: int) -> int:
    blocks = [bytearray(1024 * 1024) for _ in range(mb)]
    return len(blocks)


@app.task(timeout=1)
def sleep_past_timeout(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(timeout=1)
def ignore_timeout(seconds: float) -> float:
    """Blocks the run-timeout signal, as code stuck in C would ignore it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return seconds


@app.task(timeout=30)
def exit_hard(code: int) -> None:
    os._exit(code)


@app.task(timeout=30)
def pid_then_sleep(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def not_a_task() -> None:
    """Importable, but never registered."""
