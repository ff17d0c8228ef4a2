"""A command job on a local machine: the process the job names, run by the worker that claimed it.

The worker runs a command job as it runs a task (the same claim, heartbeat, deadline, cancel,
log capture and ``FINISH``), its "task" being :func:`run`: ``cmd[0]`` resolved on ``PATH``, in
a fresh temporary directory, with a clean environment (the job's ``env``, a few base names,
``BALLOONS_INPUT_PATH`` naming the job's input as a JSON file, and, when the job was submitted
with a service URL, the attempt's URL and token of the HTTP worker protocol). It never sees
the Redis URL, the signing key or anything else of the worker's environment. Its stdout and
stderr become the job's log lines. Exit code 0 succeeds; any other fails the attempt with
reason ``exit_code=N`` (:class:`~balloons.errors.CommandExit`), retried only when N is one of
the job's ``retry_on_exit_codes``. A deadline or a cancel kills its process group.

Imported only by a machine that runs a command job (never on the worker's start-up path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from ..errors import CommandExit, WorkerError
from ..registry import COMMAND_TASK
from ..states import Reason

#: The name a command job's payload gives as its task (no module defines it: the worker
#: knows it, see :func:`balloons.registry.load`).
NAME = COMMAND_TASK
#: What a command's process inherits from its machine's environment (besides its own env).
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME")
#: Names a job's env may not set: the protocol's own.
RESERVED = ("BALLOONS_INPUT_PATH", "BALLOONS_ATTEMPT_URL", "BALLOONS_ATTEMPT_TOKEN")
MAX_LINE = 64 * 1024


class _Options:
    retry_on: tuple[type[BaseException], ...] = ()


class _Command:
    """What the worker's registry gives for :data:`NAME`: a task whose function is :func:`run`."""

    name = NAME
    app = None
    opts = _Options()

    @staticmethod
    def fn(spec: Any) -> Any:
        return run(spec)


COMMAND = _Command()


def _spec(spec: Any) -> tuple[list[str], dict[str, str], Any, list[int], str]:
    """The checked fields of a command job's (signed) argument."""
    if not isinstance(spec, dict) or spec.get("v") != 1:
        raise WorkerError(Reason.RECORD_INVALID, "a command job's argument is not a v1 spec")
    cmd, env = spec.get("cmd"), spec.get("env") or {}
    if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
        raise WorkerError(Reason.RECORD_INVALID, f"cmd must be a list of strings, got {cmd!r}")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise WorkerError(Reason.RECORD_INVALID, "env must map strings to strings")
    codes = spec.get("retry_exit") or []
    if not isinstance(codes, list) or not all(type(c) is int for c in codes):
        raise WorkerError(Reason.RECORD_INVALID, "retry_exit must be a list of integers")
    url = spec.get("service_url") or ""
    if not isinstance(url, str):
        raise WorkerError(Reason.RECORD_INVALID, "service_url must be a string")
    return cmd, env, spec.get("input"), codes, url


def _attempt() -> tuple[str, int, float | None, bytes]:
    """The job id, attempt and deadline the worker of this process is running, and its key."""
    from .worker import running

    w = running()
    if w is None or w.current is None:
        raise WorkerError(Reason.RECORD_INVALID, "a command job runs only on a machine's worker")
    ulid, attempt, deadline = w.current
    return f"{w.pool}.{ulid}", attempt, deadline, w.handoff.secret


def run(spec: Any) -> None:
    """Run a command job's process to its end (see the module's docstring)."""
    cmd, own_env, data, retry_codes, service_url = _spec(spec)
    image, here = spec.get("image"), os.environ.get("FLY_IMAGE_REF")
    if image and here and image != here:
        # A worker of another image took it from the queue (a pool shared with tasks):
        # running it here would run it in the wrong image.
        raise WorkerError(
            Reason.RECORD_INVALID,
            f"this command job runs on a machine of image {image!r}, not on a worker of "
            f"{here!r}: give command jobs with an image a pool of their own",
        )
    job_id, attempt, deadline, secret = _attempt()
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    env.update({k: v for k, v in own_env.items() if k not in RESERVED})
    workdir = tempfile.mkdtemp(prefix="balloons-cmd-")
    try:
        path = os.path.join(workdir, "input.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
        env["BALLOONS_INPUT_PATH"] = path
        env.setdefault("HOME", workdir)
        env.setdefault("TMPDIR", workdir)
        if service_url:
            from ..service import tokens

            expires = (deadline if deadline is not None else time.time() + 86400) + tokens.GRACE
            env["BALLOONS_ATTEMPT_URL"] = tokens.attempt_url(service_url, job_id, attempt)
            env["BALLOONS_ATTEMPT_TOKEN"] = tokens.mint(secret, job_id, attempt, expires)
        exe = cmd[0] if "/" in cmd[0] else shutil.which(cmd[0], path=env.get("PATH"))
        if exe is None:
            raise CommandExit(127, f"command {cmd[0]!r} not found on PATH", 127 in retry_codes)
        code = _wait(exe, cmd[1:], env, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if code != 0:
        raise CommandExit(
            code, f"the command {cmd[0]!r} exited with code {code}", code in retry_codes
        )


def _wait(exe: str, args: list[str], env: dict[str, str], cwd: str) -> int:
    """Run the process in a session of its own and return its exit code (128+N for signal N);
    whatever interrupts the wait (the deadline, a cancel) kills its process group first."""
    try:
        proc = subprocess.Popen(
            [exe, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandExit(126, f"command {exe!r} could not start: {exc.strerror}") from None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "err"), daemon=True),
    ]
    for p in pumps:
        p.start()
    try:
        code = proc.wait()
    except BaseException:
        _kill(proc)
        raise
    finally:
        for p in pumps:
            p.join(5.0)
    return code if code >= 0 else 128 - code


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _pump(stream: Any, source: str) -> None:
    """Copy a stream's lines to the job's log (the worker's capture), and to the machine's
    own output."""
    from .capture import _CURRENT

    out = sys.stdout if source == "out" else sys.stderr
    for raw in iter(lambda: stream.readline(MAX_LINE), b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if _CURRENT:
            _CURRENT[0].add(source, line)
        else:
            print(line, file=out, flush=True)
    stream.close()
