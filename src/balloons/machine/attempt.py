"""One attempt on a machine: its job record opened and checked (payload, permission to run,
TTL, task, arguments), the error record it may end with, the machine's log lines. Standard
library and balloons' lean modules only: every machine imports this module.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from .. import registry
from ..errors import CommandExit, WorkerError
from ..retry import Retry
from ..serialize import Serializer, get_serializer, loads_call
from ..signing import run_by
from ..states import Reason, exit_reason
from ..store import lua
from ..store.replies import NO_SLOT, Claim, Code, Work

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_TIMEOUT = 1e9  # seconds; the run-timeout timer takes no more


def log(msg: str) -> None:
    """Write a worker message to stderr (the machine's output)."""
    print(f"balloons worker: {msg}", file=sys.stderr, flush=True)


def error_record(reason: str, exc: BaseException | None, message: str = "") -> dict[str, str]:
    """An attempt's error record (sealed by :func:`balloons.signing.seal_error` to be stored)."""
    if exc is None:
        return {"type": "", "message": message, "traceback": "", "reason": reason}
    import traceback

    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return {
        "type": name,
        "message": message or str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "reason": reason,
    }


BAD_SLOT = error_record(
    "record_invalid",
    None,
    "the machine's slot entry in Redis is not one balloons wrote (altered?): the task was not "
    "run and the slot was freed",
)


class Call:
    """A verified job record, ready to run: its payload, task, serializer, arguments."""

    __slots__ = ("args", "kwargs", "name", "ser", "spec", "task", "timeout")

    def __init__(
        self,
        spec: dict[str, Any],
        name: str,
        task: Any,
        ser: Serializer,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> None:
        self.spec, self.name, self.task, self.ser = spec, name, task, ser
        self.args, self.kwargs, self.timeout = args, kwargs, timeout


def open_record(secret: bytes, job_id: str, work: Work, spec: Any = None) -> Call:
    """Read a job record whose signature verified: its payload (``spec``: as already decoded
    from it), its permission to run now, its task (imported) and arguments. Raises
    WorkerError, SerializationError, or ValueError (KeyError, TypeError) for a record that
    is malformed."""
    if spec is None:
        spec = json.loads(work.payload)
    if not isinstance(spec, dict) or spec.get("id") != job_id:
        raise ValueError("payload names another job")
    # Each attempt runs once: one after the first needs the permission its retry was given,
    # and no record is run past its TTL (counted from its creation or that permission): the
    # claim scripts refuse an attempt claimed before, for that long.
    until = run_by(secret, job_id, work.attempt, spec, work.grant)
    if until is None:
        raise WorkerError(
            Reason.SIGNATURE_INVALID,
            f"attempt {work.attempt} of this job was never granted by a holder of the app's "
            "secret (its record was altered): the task was not run",
        )
    if time.time() > until + lua.FRESH_SLACK:
        raise ValueError(
            "the record is older than its TTL (a record put back in Redis); the task was not run"
        )
    name = str(spec["task"])
    task = registry.load(name, spec.get("main"))
    ser: Serializer = serializer_for(task, str(spec.get("ser", "json")))
    call_args, call_kwargs = loads_call(ser, work.args)
    timeout = float(spec.get("timeout") or 0)
    if not 0 <= timeout <= MAX_TIMEOUT:  # nan fails too
        raise ValueError(f"timeout {timeout!r} is not in 0..{MAX_TIMEOUT:g} seconds")
    return Call(spec, name, task, ser, call_args, call_kwargs, timeout)


def cost_cap_at(spec: dict[str, Any], since: float) -> float | None:
    """When the job's ``max_cost`` is spent, its machine billed from ``since`` at the price
    per second the client worked out at submit (``usd_per_s``); None without a cap."""
    cap, rate = spec.get("max_cost"), spec.get("usd_per_s")
    if not cap or not rate:
        return None
    return since + float(cap) / float(rate)


def serializer_for(task: Any, name: str) -> Serializer:
    """The serializer named ``name`` (a job's): the task's app's own when it has that name, else
    a built-in one."""
    own: Serializer | None = getattr(getattr(task, "app", None), "serializer", None)
    if own is not None and own.name == name:
        return own
    return get_serializer(name)


def task_failure(
    exc: BaseException, call: Call, timed_out: bool, capped: bool, since: float
) -> tuple[str, str, bool]:
    """The reason and message of an attempt whose task raised ``exc`` (``timed_out``: its
    deadline's signal, its max_cost when ``capped``; the machine's time counted from
    ``since``), and whether the job's retry policy may retry it."""
    if timed_out and capped:
        spent = time.time() - since
        cap = float(call.spec["max_cost"])
        return (
            Reason.COST_CAP,
            f"the job reached its max_cost of ${cap:g} after {spent:.1f}s on its machine",
            True,
        )
    if timed_out:
        return Reason.TIMEOUT, f"the task ran past its timeout of {call.timeout:g}s", True
    if isinstance(exc, MemoryError):
        return Reason.OOM, "the task ran out of memory (its memory_mb limit)", True
    if isinstance(exc, CommandExit):  # a command job: its exit code decides
        return exit_reason(exc.exit_code), str(exc), exc.retryable
    retry_on: tuple[type[BaseException], ...] = getattr(
        getattr(call.task, "opts", None), "retry_on", (Exception,)
    )
    return Reason.TASK_ERROR, "", isinstance(exc, (Retry, *retry_on))


def extend_path(env: Mapping[str, str]) -> None:
    """Put ``BALLOONS_PYTHONPATH``'s entries first on ``sys.path``, where a task's module is."""
    extra = env.get("BALLOONS_PYTHONPATH", "")
    for entry in reversed([p for p in extra.split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def deadline_of(call: Call, started: float, since: float) -> tuple[float | None, bool]:
    """An attempt's deadline (``time.time()``; None: none): its run timeout from ``started``
    or its max_cost (its machine counted from ``since``), whichever comes first; and whether
    it is the max_cost."""
    deadline = started + call.timeout if call.timeout > 0 else None
    cap_at = cost_cap_at(call.spec, since)
    if cap_at is not None and (deadline is None or cap_at < deadline):
        return cap_at, True
    return deadline, False


def refusal(claim: Claim) -> str:
    """Why a claim was refused, for the machine's log."""
    what = {
        Code.GONE: "its machine's slot is gone"
        if claim.status == NO_SLOT
        else "its record is gone",
        Code.MOVED: "it moved to another attempt",
        Code.REPLAYED: "it was claimed or ended before (its record was put back): a replay",
    }
    return what.get(claim.code, f"it is {claim.status or '?'}")
