"""The tasks of the chaos run (``chaos.py``), in a module of their own so that a machine imports
nothing else. Each execution appends a line to a file named after its job's label, at its
start and at its end, so the run counts real executions, duplicates included."""

from __future__ import annotations

import os
import time

import balloons

app = balloons.App()


def _mark(out_dir: str, label: int, what: str) -> None:
    fd = os.open(os.path.join(out_dir, str(label)), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{what} {os.getpid()} {time.time():.3f}\n".encode())
    finally:
        os.close(fd)


@app.task(timeout=10, retries=3, retry_backoff=0.2, retry_backoff_max=1.0, retry_on=(OSError,))
def work(out_dir: str, label: int, seconds: float, fail: bool = False) -> int:
    """Sleeps ``seconds``; raises a final ``ValueError`` when ``fail`` (not in ``retry_on``)."""
    _mark(out_dir, label, "start")
    if fail:
        raise ValueError(f"job {label} fails by design")
    time.sleep(seconds)
    _mark(out_dir, label, "end")
    return label


@app.task(timeout=1, retries=1, retry_backoff=0.2, retry_backoff_max=1.0)
def overrun(out_dir: str, label: int, seconds: float) -> int:
    """Runs past its one-second timeout: every attempt ends with reason ``timeout``."""
    _mark(out_dir, label, "start")
    time.sleep(seconds)
    _mark(out_dir, label, "end")
    return label
