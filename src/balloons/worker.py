"""The worker: what runs on a machine. ``python -m balloons.worker`` (also ``balloons worker``).

It reads its handoff (``BALLOONS_JOB=JOB_ID/ATTEMPT``), claims the attempt in Redis (one
script that also returns the record), verifies the record's HMAC signature, imports the
module that registers the task, runs it under its deadline, and records the result or the
error atomically, waking every waiter. The exit code says what happened (``EXIT_*``).

This module is the start-up path of every machine: it imports only the standard library and
balloons' own lean modules (no redis-py, no CLI, web or HTTP library).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from . import lua, registry
from .errors import SerializationError, StoreError, WorkerError
from .frozen import Frozen
from .keys import DEFAULT_NAMESPACE, JobKeys
from .resp import RespClient
from .serialize import Serializer, get_serializer, loads_call
from .signing import verify
from .states import Reason

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import FrameType
    from typing import Any

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


class Handoff(Frozen):
    """What a machine is told: its job and attempt, and how to reach Redis."""

    __slots__ = ("attempt", "job_id", "machine_id", "namespace", "redis_url", "secret")
    __match_args__ = ("job_id", "attempt", "redis_url", "secret", "namespace", "machine_id")
    job_id: str
    attempt: int
    redis_url: str
    secret: bytes
    namespace: str
    machine_id: str

    def __init__(
        self,
        job_id: str,
        attempt: int,
        redis_url: str,
        secret: bytes,
        namespace: str,
        machine_id: str,
    ) -> None:
        self._set(job_id, attempt, redis_url, secret, namespace, machine_id)

    def __repr__(self) -> str:
        return (
            f"Handoff(job_id={self.job_id!r}, attempt={self.attempt}, machine={self.machine_id!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Handoff:
        raw = env.get("BALLOONS_JOB", "")
        if not raw:
            raise WorkerError(
                "usage",
                "BALLOONS_JOB is not set: a worker runs the one job named by "
                "BALLOONS_JOB=JOB_ID/ATTEMPT, which balloons sets on every machine it launches",
            )
        job_id, _, attempt = raw.rpartition("/")
        if not job_id or not attempt.isdigit() or int(attempt) < 1:
            raise WorkerError(
                "usage",
                f"BALLOONS_JOB={raw!r} is malformed: expected JOB_ID/ATTEMPT, "
                "e.g. default.01jd3x9k2m8vq4t7w0c5r6y1zh/1",
            )
        url = env.get("BALLOONS_REDIS_URL") or env.get("REDIS_URL") or ""
        if not url:
            raise WorkerError(
                "usage",
                "no Redis URL: set BALLOONS_REDIS_URL or REDIS_URL on the worker "
                "(on Fly: `fly secrets set REDIS_URL=...` for the worker's app)",
            )
        secret = env.get("BALLOONS_SECRET", "")
        if not secret:
            raise WorkerError(
                "usage",
                "BALLOONS_SECRET is not set: the worker needs the app's signing key to verify jobs",
            )
        return cls(
            job_id=job_id,
            attempt=int(attempt),
            redis_url=url,
            secret=secret.encode(),
            namespace=env.get("BALLOONS_NAMESPACE") or DEFAULT_NAMESPACE,
            machine_id=env.get("BALLOONS_MACHINE_ID") or env.get("FLY_MACHINE_ID") or "",
        )


def _log(msg: str) -> None:
    print(f"balloons worker: {msg}", file=sys.stderr, flush=True)


def _error_json(reason: str, exc: BaseException | None, message: str = "") -> str:
    if exc is None:
        return json.dumps({"type": "", "message": message, "traceback": "", "reason": reason})
    import traceback

    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return json.dumps(
        {
            "type": name,
            "message": message or str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "reason": reason,
        }
    )


class JobRun:
    """One attempt of one job inside this worker."""

    def __init__(self, handoff: Handoff, client: RespClient) -> None:
        self.h = handoff
        self.client = client
        self.keys = JobKeys.of(handoff.namespace, handoff.job_id)

    def finish(self, status: str, result: bytes = b"", error: str = "", reason: str = "") -> int:
        return int(
            self.client.eval(
                lua.FINISH,
                [self.keys.job, self.keys.attempts, self.keys.done],
                [self.h.attempt, self.h.machine_id, status, result, error, reason, time.time()],
            )
        )

    def fail(self, reason: str, exc: BaseException | None, message: str = "") -> None:
        if self.finish("FAILED", error=_error_json(reason, exc, message), reason=reason) != 1:
            _log(f"job {self.h.job_id}: could not record failure ({reason}); it moved on")

    def run(self) -> int:
        h = self.h
        reply = self.client.eval(
            lua.CLAIM, [self.keys.job, self.keys.attempts], [h.attempt, h.machine_id, time.time()]
        )
        if reply[0] != 1:
            what = {-1: "its record is gone", -2: "it moved to another attempt"}.get(
                reply[0], f"it is {reply[1].decode() if reply[1] else 'not claimable'}"
            )
            _log(f"job {h.job_id} attempt {h.attempt} not run: {what}")
            return EXIT_SKIPPED
        payload, args, sig = reply[1], reply[2], reply[3]
        if not verify(h.secret, payload, args, sig):
            self.fail(
                Reason.SIGNATURE_INVALID,
                None,
                "the job record's signature does not match: it was altered, or signed with "
                "another secret; the task was not run",
            )
            return EXIT_REFUSED
        try:
            spec = json.loads(payload)
            if not isinstance(spec, dict) or spec.get("id") != h.job_id:
                raise ValueError("payload names another job")
            name = str(spec["task"])
            task = registry.load(name, spec.get("main"))
            ser: Serializer = _serializer_for(task, str(spec.get("ser", "json")))
            call_args, call_kwargs = loads_call(ser, args)
            timeout = float(spec.get("timeout") or 0)
        except WorkerError as exc:
            self.fail(exc.reason, exc)
            return EXIT_REFUSED
        except SerializationError as exc:
            self.fail(Reason.SERIALIZATION, exc)
            return EXIT_REFUSED
        except (ValueError, KeyError, TypeError) as exc:
            self.fail(Reason.RECORD_INVALID, exc, f"malformed job record: {exc}")
            return EXIT_REFUSED
        return self._execute(task.fn, ser, call_args, call_kwargs, timeout)

    def _execute(
        self,
        fn: Any,
        ser: Serializer,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> int:
        if timeout > 0:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            value = fn(*args, **kwargs)
        except TaskTimeout as exc:
            self.fail(Reason.TIMEOUT, exc, f"the task ran past its timeout of {timeout:g}s")
            return EXIT_TASK_FAILED
        except MemoryError as exc:
            self.fail(Reason.OOM, exc, "the task ran out of memory (its memory_mb limit)")
            return EXIT_TASK_FAILED
        except BaseException as exc:
            self.fail(Reason.TASK_ERROR, exc)
            return EXIT_TASK_FAILED
        finally:
            if timeout > 0:
                signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            data = ser.dumps(value)
        except Exception as exc:
            self.fail(
                Reason.SERIALIZATION,
                exc,
                f"the task returned {type(value).__name__}, which the {ser.name} serializer "
                f"cannot encode: {exc}",
            )
            return EXIT_TASK_FAILED
        if self.finish("SUCCEEDED", result=data) != 1:
            _log(f"job {self.h.job_id}: result not recorded, the job moved on")
        return EXIT_OK


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TaskTimeout("run timeout")


def _serializer_for(task: Any, name: str) -> Serializer:
    own: Serializer | None = getattr(getattr(task, "app", None), "serializer", None)
    if own is not None and own.name == name:
        return own
    return get_serializer(name)


def _extend_path(env: Mapping[str, str]) -> None:
    extra = env.get("BALLOONS_PYTHONPATH", "")
    for entry in reversed([p for p in extra.split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the job named by the environment; return the exit code."""
    env = os.environ if env is None else env
    try:
        handoff = Handoff.from_env(env)
    except WorkerError as exc:
        _log(str(exc))
        return EXIT_USAGE
    _extend_path(env)
    client = RespClient(handoff.redis_url)
    try:
        return JobRun(handoff, client).run()
    except StoreError as exc:
        _log(f"job {handoff.job_id}: {exc}")
        return EXIT_STORE
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
