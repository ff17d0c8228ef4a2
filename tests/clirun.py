"""Running ``balloons`` as a real subprocess: piped, or on a pseudo-terminal of a given width."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent

#: Escape sequences a terminal program writes: CSI (colours, cursor) and OSC (titles, links).
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def balloons(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
    """``python -m balloons ARGS`` with its output piped."""
    done = subprocess.run(
        [sys.executable, "-m", "balloons", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def on_terminal(*args: str, columns: int, timeout: float = 60) -> Ran:
    """``python -m balloons ARGS`` with its stdout on a pseudo-terminal ``columns`` wide (and
    ``COLUMNS`` set to match); ``out`` is what the terminal got, escape sequences removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "balloons", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        code = proc.wait(timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return Ran(code, _ESCAPES.sub("", text), err)


@contextlib.contextmanager
def running_job(flag: Path) -> Iterator[Any]:
    """A job of ``tests.tasks.print_then_wait``, running until the block ends (it creates
    ``flag``, which lets the task finish)."""
    from tests import tasks
    from tests.waiting import wait_for

    job = tasks.print_then_wait.submit(str(flag), 60.0)
    try:
        wait_for(lambda: job.status().value == "RUNNING", "the job to run")
        yield job
    finally:
        flag.write_text("")
        job.result(timeout=30)
