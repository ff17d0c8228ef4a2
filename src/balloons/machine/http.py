"""The Python worker in HTTP mode: one attempt run over the worker protocol, with no store.

A machine of a pool with ``protocol="http"`` is started with ``BALLOONS_ATTEMPT_URL`` and
``BALLOONS_ATTEMPT_TOKEN`` instead of a Redis URL and the signing key (``python -m
balloons.machine`` comes here when it has those and no ``BALLOONS_JOB``). It ``GET``s its
attempt (the task's name, its JSON arguments, the deadline), imports the module that registers
the task and runs it under the deadline (``SIGALRM``), while a heartbeat thread posts
``heartbeat`` (a cancel, or the attempt superseded, interrupts the task) and sends the lines the
task printed or logged, and its progress, as ``logs`` and ``progress``. The task's return value
is posted with ``complete``; what it raises with ``fail`` (retryable when it is one of the
task's ``retry_on``). Then the machine exits: it takes no queued work (that needs the store).
Calls that cannot reach the service are retried with backoff until the deadline.

Only the standard library and balloons' lean modules, as the worker.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from .. import registry
from ..errors import WorkerError
from ..retry import Retry
from .attempt import extend_path, log

if TYPE_CHECKING:
    from collections.abc import Mapping

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED, EXIT_UNREACHABLE = 0, 1, 2, 4, 5
HEARTBEAT = 2.0
#: Lines a batch holds at most (the service takes 1000).
BATCH_LINES = 500


class ProtocolError(Exception):
    """The service answered a call with an error (its problem's ``code``)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code = status, code


class _Stop(BaseException):
    """Raised in the task when its job was cancelled or its attempt superseded."""


class _Timeout(BaseException):
    """Raised in the task at its deadline (a ``BaseException``: ``except Exception`` cannot
    swallow it)."""


class Attempt:
    """One attempt's URL and token, and the calls on it."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.deadline = time.time() + 60.0

    def call(self, method: str, path: str = "", body: Any = None, ndjson: bytes = b"") -> Any:
        """One call; a 4xx answer raises :class:`ProtocolError`; network errors, 429 and 5xx
        are retried with backoff until the deadline (a service asleep or restarting)."""
        data = ndjson or (None if body is None else json.dumps(body).encode())
        delay = 0.25
        while True:
            # The scheme was checked at start (http or https only).
            req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
            req.add_header("Authorization", f"Bearer {self.token}")
            req.add_header("Content-Type", "application/x-ndjson" if ndjson else "application/json")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    try:
                        problem = json.loads(exc.read())
                    except ValueError:
                        problem = {}
                    raise ProtocolError(
                        exc.code, str(problem.get("code", "")), str(problem.get("detail", ""))
                    ) from None
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.time() + delay > self.deadline + 60.0:
                raise ProtocolError(0, "unreachable", f"no answer from {self.url}")
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


class Sink:
    """Where the task's lines and progress go (in the place of the worker's capture):
    buffered, sent by the heartbeat thread and at the end."""

    _emit_code = None
    _root_handlers: tuple[Any, ...] = ()

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.lock = threading.Lock()
        self.lines: list[dict[str, str]] = []
        self.progress: tuple[float, str] | None = None

    def add(self, source: str, text: str) -> None:
        with self.lock:
            kind = "err" if source == "err" else "out"
            self.lines.append({"text": text[:16_000], "source": kind})

    def set_progress(self, fraction: float, note: str) -> None:
        with self.lock:
            self.progress = (fraction, note)

    def flush(self) -> None:
        with self.lock:
            lines, self.lines = self.lines, []
            progress, self.progress = self.progress, None
        for i in range(0, len(lines), BATCH_LINES):
            batch = "".join(json.dumps(x) + "\n" for x in lines[i : i + BATCH_LINES])
            self.attempt.call("POST", "/logs", ndjson=batch.encode())
        if progress is not None:
            self.attempt.call("POST", "/progress", {"fraction": progress[0], "note": progress[1]})


def main(env: Mapping[str, str]) -> int:
    """Run the attempt named by the environment; the exit code."""
    url, token = env.get("BALLOONS_ATTEMPT_URL", ""), env.get("BALLOONS_ATTEMPT_TOKEN", "")
    if not url.startswith(("http://", "https://")) or not token:
        log("HTTP mode needs BALLOONS_ATTEMPT_URL (an http(s) URL) and BALLOONS_ATTEMPT_TOKEN")
        return EXIT_USAGE
    extend_path(env)
    attempt = Attempt(url, token)
    try:
        got = attempt.call("GET")
    except ProtocolError as exc:
        log(f"attempt not run: {exc}")
        return EXIT_SKIPPED if exc.status == 409 else EXIT_UNREACHABLE
    attempt.deadline = float(got.get("deadline") or attempt.deadline)
    timeout = got.get("timeout")
    if isinstance(timeout, (int, float)) and timeout > 0:  # its run timeout, from now
        attempt.deadline = min(attempt.deadline, time.time() + float(timeout))
    call = got.get("call")
    try:
        if not isinstance(call, dict):
            raise WorkerError("serialization", "HTTP mode runs tasks with JSON arguments only")
        task = registry.load(str(got.get("task", "")))
        args, kwargs = list(call.get("args") or []), dict(call.get("kwargs") or {})
    except (WorkerError, TypeError, ValueError) as exc:
        return _fail(attempt, exc, "task_not_found", retryable=False)
    return _run(attempt, task, args, kwargs)


def _run(attempt: Attempt, task: Any, args: list[Any], kwargs: dict[str, Any]) -> int:
    from . import capture

    sink = Sink(attempt)
    stop = threading.Event()
    why: list[str] = []

    def on_stop(signum: int, frame: Any) -> None:
        if not stop.is_set():
            raise _Stop

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Timeout

    signal.signal(signal.SIGUSR1, on_stop)
    signal.signal(signal.SIGALRM, on_alarm)
    left = attempt.deadline - time.time()
    tees = (sys.stdout, sys.stderr)
    out = capture._Tee(sink, "out", tees[0])  # type: ignore[arg-type]
    err = capture._Tee(sink, "err", tees[1])  # type: ignore[arg-type]
    sys.stdout, sys.stderr = out, err
    capture._CURRENT[:] = [sink]  # type: ignore[list-item]
    thread = threading.Thread(
        target=_beat, args=(attempt, sink, stop, why), name="balloons-http-heartbeat", daemon=True
    )
    thread.start()
    try:
        if left <= 0:
            raise _Timeout
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            value = task.fn(*args, **kwargs)
            if type(value) is CoroutineType:
                from .coroutine import run

                value = run(value)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            stop.set()
            out.finish()  # a last line with no newline is a line too
            err.finish()
            sys.stdout, sys.stderr = tees
            capture._CURRENT[:] = []
    except _Stop:
        log(f"attempt stopped: {why[0] if why else 'interrupted'}")
        return EXIT_SKIPPED
    except _Timeout as exc:
        _send(sink)
        message = "the task ran past its deadline"
        return _fail(attempt, exc, "timeout", retryable=True, message=message)
    except BaseException as exc:
        _send(sink)
        retry_on = getattr(getattr(task, "opts", None), "retry_on", (Exception,))
        return _fail(attempt, exc, "task_error", retryable=isinstance(exc, (Retry, *retry_on)))
    _send(sink)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return _fail(attempt, exc, "serialization", retryable=False)
    try:
        attempt.call("POST", "/complete", {"result": value})
    except ProtocolError as exc:
        log(f"result not recorded: {exc}")
        return EXIT_SKIPPED
    return EXIT_OK


def _beat(attempt: Attempt, sink: Sink, stop: threading.Event, why: list[str]) -> None:
    """The heartbeat thread: send the lines, renew the lease; a cancel, or an attempt that
    is no longer this machine's, interrupts the task (``SIGUSR1``)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
    main_thread = threading.main_thread().ident or 0
    while not stop.wait(HEARTBEAT):
        try:
            sink.flush()
            if attempt.call("POST", "/heartbeat", {}).get("cancel"):
                raise ProtocolError(409, "cancelled", "the job was cancelled")
        except ProtocolError as exc:
            if exc.status in (401, 403, 404, 409):
                why.append(exc.code)
                signal.pthread_kill(main_thread, signal.SIGUSR1)
                return


def _send(sink: Sink) -> None:
    try:
        sink.flush()
    except ProtocolError as exc:
        log(f"log lines not sent: {exc}")


def _fail(
    attempt: Attempt, exc: BaseException, reason: str, *, retryable: bool, message: str = ""
) -> int:
    import traceback

    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    body = {
        "error": {
            "type": name,
            "message": message or str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        },
        "retryable": retryable,
        "reason": reason,
    }
    try:
        attempt.call("POST", "/fail", body)
    except ProtocolError as err:
        log(f"failure not recorded: {err}")
    return EXIT_FAILED
