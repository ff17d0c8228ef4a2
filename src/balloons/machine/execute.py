"""One attempt run in this process, from its record to its recorded outcome; the exit codes.

The record's signature is verified and the record opened, the task runs under its deadline
with its output captured, and its result, its error or its retry is recorded. Standard library
and balloons' lean modules only: every machine imports this module.
"""

from __future__ import annotations

import signal
import time
from types import CoroutineType

from ..errors import SerializationError, WorkerError
from ..retry import Retry, decide
from ..signing import sign_outcome, verify
from ..states import Reason
from ..store.replies import Work
from . import isolate
from .attempt import Call, deadline_of, error_record, log, open_record, task_failure

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from typing import Any

    from .worker import Worker

EXIT_OK = 0  # the task succeeded and its result is recorded
EXIT_TASK_FAILED = 1  # the task failed (raised, timed out, ran out of memory); recorded
EXIT_USAGE = 2  # the worker was started wrongly (no handoff, no Redis URL, no secret)
EXIT_REFUSED = 3  # the job was refused (bad signature, malformed record, unknown task); recorded
EXIT_SKIPPED = 4  # nothing to do: the job was cancelled, reassigned, or its record vanished
EXIT_STORE = 5  # Redis could not be reached, so nothing could be recorded

RECORDED_EXITS = frozenset({EXIT_OK, EXIT_TASK_FAILED, EXIT_REFUSED, EXIT_SKIPPED})


class TaskTimeout(BaseException):
    """Raised inside a task when its run timeout fires. A ``BaseException`` so that a task's
    ``except Exception`` cannot swallow it."""


# The error type recorded for a timed-out task names the module that raised it from the start;
# records and readers already hold that name.
TaskTimeout.__module__ = "balloons.machine.worker"


class Interrupted(BaseException):
    """Raised inside a task when its job was cancelled, reassigned or deleted meanwhile."""


def run(w: Worker, work: Work) -> int:
    """Run one attempt of ``work`` in this process; its exit code (``EXIT_*``)."""
    w.spec = None
    w.result_until = 0.0
    # A job's own process is handed its payload verified and decoded by its parent.
    opened, w.opened = w.opened, None
    if opened is None and not verify(w.handoff.secret, work.payload, work.args, work.sig):
        fail(
            w,
            work,
            Reason.SIGNATURE_INVALID,
            None,
            "the job record's signature does not match: it was altered, or signed with "
            "another secret; the task was not run",
        )
        return EXIT_REFUSED
    try:
        call = open_record(w.handoff.secret, f"{w.pool}.{work.ulid}", work, opened)
    except WorkerError as exc:
        fail(w, work, exc.reason, exc)
        return EXIT_REFUSED
    except SerializationError as exc:
        fail(w, work, Reason.SERIALIZATION, exc)
        return EXIT_REFUSED
    except (ValueError, KeyError, TypeError) as exc:
        fail(w, work, Reason.RECORD_INVALID, exc, f"malformed job record: {exc}")
        return EXIT_REFUSED
    w.spec = call.spec
    started, deadline = _begin(w, work, call)
    try:
        try:
            value = call.task.fn(*call.args, **call.kwargs)
            if type(value) is CoroutineType:  # an async task: run in an event loop
                value = _run_coroutine(value)
        finally:
            _end_task(w, deadline)
    except Interrupted:
        if w.events < 0:  # else its parent, which knows why, says so
            log(f"job {w.pool}.{work.ulid} attempt {work.attempt} stopped: {w.interrupted}")
        return EXIT_SKIPPED
    except BaseException as exc:
        return _failed(w, work, call, exc)
    return _succeeded(w, work, call, value, started)


def _begin(w: Worker, work: Work, call: Call) -> tuple[float, float | None]:
    """Start the attempt's clock, its deadline (its timeout or its max_cost, whichever comes
    first), its log capture. Returns when it started, and its deadline."""
    started = time.time()
    deadline, w.capped = deadline_of(call, started, w.job_start)
    # The outcome is worth waiting for through a Redis outage until the job's deadline.
    w.result_until = time.monotonic() + deadline - time.time() if deadline else 0.0
    with w.lock:
        w.current = (work.ulid, work.attempt, deadline)
        w.interrupted = ""
        w.in_task = True
    if w.events >= 0:  # a job's own process: its parent enforces the deadline too
        isolate.began(w, deadline)
    log(
        f"event=started job={w.pool}.{work.ulid} attempt={work.attempt} task={call.name} "
        f"wait_s={started - float(call.spec.get('created') or started):.3f}"
    )
    w.capture.begin(work.ulid, work.attempt)
    w.arm(deadline, call.timeout)
    return started, deadline


def _end_task(w: Worker, deadline: float | None) -> None:
    w.in_task = False  # first: from here on a cancel signal is ignored
    if deadline is not None:
        signal.setitimer(signal.ITIMER_REAL, 0)
    with w.lock:
        w.current = None
    w.capture.end()  # every line is stored before the outcome is


def fail(
    w: Worker,
    work: Work,
    reason: str,
    exc: BaseException | None,
    message: str = "",
    final: bool = False,
) -> int:
    """Record a failed attempt, with a retry when the job's policy (once read) allows, unless
    ``final``."""
    retry = None
    if w.spec is not None and not final:
        delay = exc.delay if isinstance(exc, Retry) else None
        retry = decide(w.spec, work.attempt, reason, requested_delay=delay)
    error = error_record(reason, exc, message)
    ended = w.finish(work.ulid, work.attempt, "FAILED", error=error, reason=reason, retry=retry)
    job_id = f"{w.pool}.{work.ulid}"
    if ended < 0:
        log(f"job {job_id}: could not record failure ({reason}); it moved on")
    else:
        log(
            f"event=failed job={job_id} attempt={work.attempt} reason={reason} "
            f"retry={'yes' if retry is not None else 'no'} "
            f"machine_s={time.time() - w.job_start:.3f}"
        )
    return EXIT_TASK_FAILED


def _failed(w: Worker, work: Work, call: Call, exc: BaseException) -> int:
    """Record what the task raised (its timeout, its memory limit, its own error)."""
    timed_out = isinstance(exc, TaskTimeout)
    reason, message, retryable = task_failure(exc, call, timed_out, w.capped, w.job_start)
    return fail(w, work, reason, exc, message, final=not retryable)


def _succeeded(w: Worker, work: Work, call: Call, value: object, started: float) -> int:
    job_id = f"{w.pool}.{work.ulid}"
    try:
        data = call.ser.dumps(value)
    except Exception as exc:
        return fail(
            w,
            work,
            Reason.SERIALIZATION,
            exc,
            f"the task returned {type(value).__name__}, which the {call.ser.name} "
            f"serializer cannot encode: {exc}",
        )
    tag = sign_outcome(w.handoff.secret, f"result/{call.ser.name}", job_id, work.attempt, data)
    if w.finish(work.ulid, work.attempt, "SUCCEEDED", result=(data, tag)) < 0:
        log(f"job {job_id}: result not recorded, the job moved on")
        return EXIT_OK
    log(f"event=succeeded job={job_id} attempt={work.attempt} run_s={time.time() - started:.3f}")
    return EXIT_OK


def _run_coroutine(coro: CoroutineType[Any, Any, Any]) -> Any:
    """An async task's coroutine, run in an event loop (imported with the first one)."""
    from .coroutine import run

    return run(coro)
