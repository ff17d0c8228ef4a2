"""The fork server's children: a machine's process set up from its launch request, and the
spare, a child forked before its launch arrives.

A cold machine's start is mostly the fork and the first touch of the pages it inherits (each
first write to one costs a page fault and a copy). So the fork server keeps one spare child
forked ahead, in a session of its own, with the fork server's descriptors closed, waiting on a
pipe: a launch (``start="fork"``) hands the spare its request, and the fork, the spare's
start-up and its first faults are done before the job exists. The fork server forks the next
spare once it has answered the launch. A spare takes nothing from a request until it gets one:
its environment, log, memory limit and directory are set from the request as a freshly forked
child's are, and it runs no user code before then (nor does the fork server, ever).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

from ..machine import prefault
from ..machine import worker as worker_mod

#: The exit code of a machine's process whose set-up failed.
EXIT_BROKE = 70
#: The longest launch request a spare reads (the fork server writes it; a request is small).
MAX_REQUEST = 1 << 26


class Spare:
    """A child forked ahead of its launch: its pid and the pipe its request comes on."""

    __slots__ = ("fd", "pid")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    def hand(self, req: dict[str, Any]) -> bool:
        """Give the spare its launch request; False when it is gone (then it is reaped)."""
        body = json.dumps(req).encode()
        data = memoryview(len(body).to_bytes(4, "big") + body)
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:
            self.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            return False
        self.close()
        return True

    def close(self) -> None:
        """Let it go: a spare handed nothing reads the end of its pipe and exits."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def fork_spare(leave: Callable[[], None]) -> Spare:
    """A child of the fork server that calls ``leave`` (its own session, none of the server's
    descriptors), makes the pages of a machine's start-up its own, then waits for its launch
    request and becomes that machine (see :func:`become`); it exits 0 if it gets none."""
    r, w = os.pipe()
    gc.freeze()  # see worker_mod.prepare: the machine's collections leave these objects be
    pid = os.fork()
    if pid == 0:  # the spare: never returns
        code = EXIT_BROKE
        try:
            os.close(w)
            leave()
            prefault.machine()
            req = _request(r)
            os.close(r)
            code = 0 if req is None else become(req)
        except BaseException:  # the machine's last word, whatever it is
            with contextlib.suppress(Exception):
                import traceback

                traceback.print_exc()
        finally:
            _flush()
            os._exit(code)
    gc.unfreeze()
    os.close(r)
    return Spare(pid, w)


def _request(fd: int) -> dict[str, Any] | None:
    """The launch request on the spare's pipe, None at its end (the fork server let it go)."""
    head = _exactly(fd, 4)
    n = int.from_bytes(head, "big") if head is not None else 0
    body = _exactly(fd, n) if 0 < n <= MAX_REQUEST else None
    req = json.loads(body) if body is not None else None
    return req if isinstance(req, dict) else None


def _exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def become(req: dict[str, Any]) -> int:
    """Become the machine of launch request ``req`` (in a child of the fork server, its
    session its own): its log as stdout and stderr, its memory limit, directory and
    environment, then the worker (``mode="fork"``) or a fresh interpreter (``"exec"``, which
    never returns). The worker's exit code."""
    env = {str(k): str(v) for k, v in req["env"].items()}
    fd = os.open(str(req.get("log") or os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    memory_mb = int(req.get("memory_mb") or 0)
    if memory_mb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (memory_mb * 1024 * 1024, hard))
    cwd = req.get("cwd")
    if cwd:
        with contextlib.suppress(OSError):
            os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if req.get("mode") == "exec":
        os.execve(sys.executable, [sys.executable, "-m", "balloons.machine"], env)
    sys.argv = ["balloons-worker"]
    try:
        return worker_mod.main(env)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
