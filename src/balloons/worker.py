"""The worker: what runs on a machine. ``python -m balloons.worker`` (also ``balloons worker``).

Its handoff ``BALLOONS_JOB=POOL.ULID/ATTEMPT`` names its first job and its slot (``ULID-ATTEMPT``;
attempt 0 is a warm-floor machine with no job yet). It claims that attempt in Redis (one script
that also returns the record), verifies the record's HMAC signature, imports the module that
registers the task, runs it under its deadline and records the result or the error (or a
retry), waking every waiter. Then it takes the next queued job of its pool, waits on the pool's
wake list while there is none, and gives its slot back after the pool's idle timeout. A
heartbeat thread renews the slot's lease, interrupts a task whose job was cancelled or
reassigned, and ends the machine if a task ignores its deadline. The exit code is that of the
last job (``EXIT_*``). A machine of a pool with standby machines (``BALLOONS_STANDBY=1``, attempt
0) may instead be kept in the pool's standby set as it gives its slot back: it exits 0, its
machine stops, and a later launch starts it again under the same handoff.

This module is the start-up path of every machine: it imports only the standard library and
balloons' own lean modules (no redis-py, no CLI, web or HTTP library).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
import threading
import time

from . import lua, registry
from .capture import LogCapture
from .config import check_secret
from .errors import ConfigError, SerializationError, StoreError, WorkerError
from .frozen import Frozen
from .keys import DEFAULT_NAMESPACE, PoolKeys, script_keys, slot_job, split_job_id
from .resp import RespClient, RespError
from .retry import Retry, decide
from .serialize import Serializer, get_serializer, loads_call
from .signing import run_by, seal_error, sign_grant, sign_outcome, verify
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
TIMEOUT_GRACE = 5.0  # seconds past a run timeout before the worker stops its own machine
MAX_TIMEOUT = 1e9  # seconds; the run-timeout timer takes no more
STORE_PATIENCE = 60.0  # seconds the worker keeps retrying Redis before it gives up
_TRANSIENT = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")


class TaskTimeout(BaseException):
    """Raised inside a task when its run timeout fires. A ``BaseException`` so that a task's
    ``except Exception`` cannot swallow it."""


class Handoff(Frozen):
    """What a machine is told: its job and attempt, and how to reach Redis."""

    __slots__ = (
        "attempt", "job_id", "machine_id", "namespace", "redis_url", "secret", "standby",
    )  # fmt: skip
    __match_args__ = (
        "job_id", "attempt", "redis_url", "secret", "namespace", "machine_id", "standby",
    )  # fmt: skip
    job_id: str
    attempt: int
    redis_url: str
    secret: bytes
    namespace: str
    machine_id: str
    standby: bool  # the machine stops rather than vanishing when the worker exits

    def __init__(
        self,
        job_id: str,
        attempt: int,
        redis_url: str,
        secret: bytes,
        namespace: str,
        machine_id: str,
        standby: bool = False,
    ) -> None:
        self._set(job_id, attempt, redis_url, secret, namespace, machine_id, standby)

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
        if not job_id or not (attempt.isascii() and attempt.isdigit()):
            raise WorkerError(
                "usage",
                f"BALLOONS_JOB={raw!r} is malformed: expected JOB_ID/ATTEMPT, "
                "e.g. default.01jd3x9k2m8vq4t7w0c5r6y1zh/1",
            )
        try:
            split_job_id(job_id)
        except ValueError as exc:
            raise WorkerError("usage", f"BALLOONS_JOB={raw!r} is malformed: {exc}") from None
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
        try:
            check_secret(secret, "BALLOONS_SECRET")  # a short key is guessed: refused here too
        except ConfigError as exc:
            raise WorkerError("usage", str(exc)) from None
        return cls(
            job_id=job_id,
            attempt=int(attempt),
            redis_url=url,
            secret=secret.encode(),
            namespace=env.get("BALLOONS_NAMESPACE") or DEFAULT_NAMESPACE,
            machine_id=env.get("BALLOONS_MACHINE_ID") or env.get("FLY_MACHINE_ID") or "",
            standby=env.get("BALLOONS_STANDBY") == "1" and attempt == "0",
        )


def _log(msg: str) -> None:
    print(f"balloons worker: {msg}", file=sys.stderr, flush=True)


def _error(reason: str, exc: BaseException | None, message: str = "") -> dict[str, str]:
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


_BAD_SLOT = _error(
    "record_invalid",
    None,
    "the machine's slot entry in Redis is not one balloons wrote (altered?): the task was not "
    "run and the slot was freed",
)


class _Interrupted(BaseException):
    """Raised inside a task when its job was cancelled, reassigned or deleted meanwhile."""


class Worker:
    """One machine's worker: its first job, then warm reuse until its pool's idle timeout."""

    def __init__(self, handoff: Handoff, client: RespClient) -> None:
        self.h = handoff
        self.client = client
        self.pool, _, first = handoff.job_id.rpartition(".")
        self.pk = PoolKeys(handoff.namespace, self.pool)
        self.slot = f"{first}-{handoff.attempt}"
        self.heartbeat = 2.0
        self.idle = 10.0
        # The job running now, for the heartbeat thread: (ulid, attempt, deadline).
        self.current: tuple[str, int, float | None] | None = None
        self.in_task = False
        self.interrupted = ""
        self.stop = False
        self.lock = threading.Lock()
        # The reply of a TAKE sent along with the last FINISH, for run() to act on.
        self.next_take: Any = None
        self.capture = LogCapture(handoff.redis_url, self.pk, handoff.secret)
        self.job_start = _BOOT[0]  # when this machine began the current attempt
        self.capped = False  # the current deadline is the job's max_cost, not its timeout

    # --------------------------------------------------------------- scripts
    def _eval(
        self, script: str, *args: Any, client: RespClient | None = None, jobs: tuple[str, ...] = ()
    ) -> Any:
        """Run a script of the pool, given the keys of the ``jobs`` (ULIDs) its args name."""
        return (client or self.client).eval(
            script, script_keys(self.pk, *jobs), [self.pk.tag, time.time(), *args]
        )

    def _patient(
        self, script: str, *args: Any, until: float | None = None, jobs: tuple[str, ...] = ()
    ) -> Any:
        """Run a script, riding out a Redis restart: reconnect with backoff until ``until``
        (monotonic; default: STORE_PATIENCE seconds from now), then give up."""
        give_up = until if until is not None else time.monotonic() + STORE_PATIENCE
        delay = 0.05
        while True:
            try:
                return self._eval(script, *args, jobs=jobs)
            except (StoreError, RespError) as exc:
                if isinstance(exc, RespError) and not str(exc).startswith(_TRANSIENT):
                    raise
                _unwatch()  # riding out an outage is not a task holding the interpreter
                if time.monotonic() + delay > give_up:
                    raise StoreError(f"gave up after Redis stayed unreachable: {exc}") from None
                _log(f"Redis unreachable ({exc}); retrying in {delay:.2f}s")
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def _seal(self, ulid: str, attempt: int, error: dict[str, str]) -> tuple[str, str]:
        return seal_error(self.h.secret, f"{self.pool}.{ulid}", attempt, error)

    def _grant(self, ulid: str, attempt: int, retry: tuple[str, str]) -> str:
        """The next attempt's permission to run, when ``retry`` schedules one."""
        if not retry[0]:
            return ""
        return sign_grant(self.h.secret, f"{self.pool}.{ulid}", attempt + 1, time.time())

    def finish(
        self,
        ulid: str,
        attempt: int,
        status: str,
        result: tuple[bytes, str] = (b"", ""),
        error: dict[str, str] | None = None,
        reason: str = "",
        retry: tuple[str, str] = ("", ""),
    ) -> int:
        """Record the outcome: ``result`` (the encoded value and its tag) or ``error``."""
        data, tag = result
        text = ""
        if error is not None:
            text, tag = self._seal(ulid, attempt, error)
        grant = self._grant(ulid, attempt, retry)
        args = (ulid, attempt, self.h.machine_id, status, data, text, reason, *retry, tag, grant)
        # An outcome is worth waiting for: keep trying through a Redis restart, for
        # STORE_PATIENCE seconds or until the job's deadline, whichever is later.
        until = max(time.monotonic() + STORE_PATIENCE, self.result_until)
        if self.stop:
            return int(self._patient(lua.FINISH, *args, until=until, jobs=(ulid,)))
        # The machine's next TAKE rides in the same write as the outcome, so a busy machine
        # pays one round trip per job, not two; run() uses its reply.
        now, keys = time.time(), script_keys(self.pk)
        mode = "release" if self.idle <= 0 else "take"
        try:
            fin, take = self.client.pipeline(
                [
                    _evalsha(lua.FINISH, script_keys(self.pk, ulid), [self.pk.tag, now, *args]),
                    _evalsha(lua.TAKE, keys, [self.pk.tag, now, *self._take_args(mode)]),
                ]
            )
        except StoreError:  # the connection failed: ride it out (run() takes the next job)
            return int(self._patient(lua.FINISH, *args, until=until, jobs=(ulid,)))
        if isinstance(fin, RespError):
            if not str(fin).startswith(("NOSCRIPT", *_TRANSIENT)):
                raise fin
            # The TAKE ran before the outcome was recorded: its reply may be this very job,
            # still running on this machine then. Not used: run() asks again, and a job the
            # TAKE did give this machine is handed back to it then (TAKE returns a held job).
            return int(self._patient(lua.FINISH, *args, until=until, jobs=(ulid,)))
        if not isinstance(take, RespError):
            self.next_take = take
        return int(fin)

    # ------------------------------------------------------------------ loop
    #: Until when (``time.monotonic()``) the current job's outcome is worth riding out an
    #: outage for: its deadline (0.0: none, STORE_PATIENCE then).
    result_until = 0.0
    #: Seconds before the heartbeat thread's first beat: none for a machine with no job of its
    #: own, which learns its pool's pace from that beat.
    first_beat_in = 0.0

    def run(self) -> int:
        code = EXIT_SKIPPED
        beat = threading.Thread(target=self._beat, name="balloons-heartbeat", daemon=True)
        if self.h.attempt > 0:
            ulid = self.slot.rpartition("-")[0]
            bad_slot = self._seal(ulid, self.h.attempt, _BAD_SLOT)
            reply = self._patient(
                lua.CLAIM, ulid, self.h.attempt, self.h.machine_id, *bad_slot, jobs=(ulid,)
            )
            if reply[0] == -4:
                _log(f"job {self.h.job_id}: its slot's entry in Redis is unreadable; refused")
                return EXIT_REFUSED
            if reply[0] == 1:
                self.heartbeat, self.idle = float(reply[4]), float(reply[5])
                # The claim has just renewed the lease at the pool's pace: the first beat can
                # wait a period (a short job then ends before it, on one connection).
                self.first_beat_in = self.heartbeat
                beat.start()
                code = self.run_job(
                    ulid, self.h.attempt, reply[1], reply[2], reply[3], _at(reply, 6)
                )
            else:
                what = {
                    -1: "its record is gone",
                    -2: "it moved to another attempt",
                    -5: "it was claimed or ended before (its record was put back): a replay",
                }
                if reply[1] == b"no slot":
                    what[-1] = "its machine's slot is gone"
                _log(
                    f"job {self.h.job_id} attempt {self.h.attempt} not run: "
                    + what.get(reply[0], f"it is {reply[1].decode() if reply[1] else '?'}")
                )
                if reply[1] == b"no slot":
                    return EXIT_SKIPPED
        if not beat.is_alive() and not self.stop:
            beat.start()
        # With no idle timeout, a machine never waits: it takes a job or gives its slot back.
        mode = "release" if self.idle <= 0 else "take"
        idle_until = 0.0
        while True:
            reply, self.next_take = self.next_take, None
            if reply is None:
                if self.stop:
                    break
                # With no job in hand, an unreachable Redis is worth waiting for only as long
                # as the machine would have idled anyway: its slot is reclaimed once Redis is
                # back.
                patience = max(idle_until or time.monotonic() + self.idle, time.monotonic() + 2.0)
                reply = self._patient(lua.TAKE, *self._take_args(mode), until=patience)
            if reply[0] == 1:
                self.job_start = time.time()
                code = self.run_job(
                    reply[1].decode(), int(reply[2]), reply[3], reply[4], reply[5], _at(reply, 6)
                )
                mode, idle_until = "release" if self.idle <= 0 else "take", 0.0
                continue
            if reply[0] == -6:
                # Kept stopped in the pool's standby set: a clean exit stops the machine.
                _log(f"idle: machine {self.h.machine_id} stops, kept on standby")
                code = EXIT_OK
                break
            if reply[0] != 0:
                break  # the slot was given back (idle timeout) or taken away: exit
            now = time.monotonic()
            if idle_until == 0.0 or mode == "release":
                self.idle = float(reply[1])
                # Kept by the pool's warm floor after a release: wait a while before asking
                # again, even with no idle timeout.
                idle_until = now + (max(self.idle, 1.0) if mode == "release" else self.idle)
            left = idle_until - now
            if left <= 0:
                mode = "release"
                continue
            # Wait for a wake-up token (a job handed to an idle machine), never long, so that
            # delayed jobs falling due are seen too.
            # Idle: no job to end. The watchdog stays armed for the next job (arming starts a
            # thread) unless this wait, or a reply overdue by the client's timeout, could
            # reach its time.
            wait, limit = min(left, 5.0), self.client.timeout
            if limit is None or time.monotonic() + wait + limit + 1.0 >= _WATCHDOG_AT[0]:
                _unwatch()
            # A TAKE rides behind the wait, run by Redis as soon as the wait ends: a woken
            # machine has its job without another round trip.
            took: Any = None
            try:
                woke, took = self.client.pipeline(
                    [
                        ["BLPOP", self.pk.wake, f"{wait:.3f}"],
                        _evalsha(
                            lua.TAKE,
                            script_keys(self.pk),
                            [self.pk.tag, time.time(), *self._take_args("take")],
                        ),
                    ]
                )
                failed = isinstance(woke, RespError)
            except StoreError:
                failed = True
            if failed:
                time.sleep(min(left, 0.5))  # TAKE rides out the outage
            mode = "take" if time.monotonic() < idle_until else "release"
            if isinstance(took, list) and took and (took[0] == 1 or mode == "take"):
                self.next_take = took  # else its idle time is up: run() gives the slot back
        _unwatch()  # no job left to end
        self.stop = True
        self.capture.close()
        return code

    def _take_args(self, mode: str) -> tuple[str, str, str, str]:
        return (self.slot, self.h.machine_id, mode, "1" if self.h.standby else "")

    def _beat(self) -> None:
        """Heartbeat thread: renew the slot's lease, notice cancellation, enforce deadlines."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1, signal.SIGTERM})
        client = RespClient(self.h.redis_url)
        if self.first_beat_in > 0:
            time.sleep(self.first_beat_in)
        try:
            while not self.stop:
                with self.lock:
                    cur = self.current
                ulid, attempt, deadline = cur if cur else ("", 0, None)
                try:
                    reply = self._eval(
                        lua.HEARTBEAT,
                        self.slot,
                        ulid,
                        attempt,
                        # The time left, not the time: the slot's deadline is reckoned on
                        # the server's clock (a supervisor's overdue stop compares it with that).
                        f"+{deadline - time.time():.3f}" if deadline else "",
                        "1" if self.capped else "",
                        client=client,
                        jobs=(ulid,),
                    )
                except (StoreError, OSError) as exc:
                    _log(f"heartbeat failed: {exc}")
                    reply = None
                if reply is not None:
                    if reply[0] == 1 and len(reply) >= 4:  # the pool's pace (see HEARTBEAT)
                        self.heartbeat, self.idle = float(reply[2]), float(reply[3])
                    if reply[0] == -1:
                        self.stop = True
                        self._interrupt(ulid, attempt, "its machine's slot was taken away")
                    elif ulid and reply[1] != b"RUNNING":
                        what = {b"CANCELLED": "it was cancelled", b"GONE": "its record vanished"}
                        self._interrupt(
                            ulid, attempt, what.get(reply[1], "it moved on to another attempt")
                        )
                if ulid and deadline and time.time() > deadline + TIMEOUT_GRACE:
                    self._hard_timeout(client, ulid, attempt)
                time.sleep(self.heartbeat)
        finally:
            client.close()

    def _interrupt(self, ulid: str, attempt: int, why: str) -> None:
        """Interrupt the task if it still runs the job the heartbeat looked at."""
        with self.lock:
            cur = self.current
            if cur is None or cur[:2] != (ulid, attempt):
                return  # that job already ended here; the next one is not concerned
            if self.in_task and not self.interrupted:
                self.interrupted = why
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    def _hard_timeout(self, client: RespClient, ulid: str, attempt: int) -> None:
        """The task ignored its timeout signal: record the failure and end the machine."""
        spec = self.spec or {}
        reason = Reason.COST_CAP if self.capped else Reason.TIMEOUT
        retry = decide(spec, attempt, reason)
        what = "its max_cost" if self.capped else "its run timeout"
        error, tag = self._seal(
            ulid,
            attempt,
            _error(reason, None, f"the task ignored {what}, so its machine was killed"),
        )
        with contextlib.suppress(Exception):
            self._eval(
                lua.LOST,
                self.slot,
                ulid,
                attempt,
                error,
                reason,
                *retry,
                "0",
                tag,
                self._grant(ulid, attempt, retry),
                client=client,
                jobs=(ulid, slot_job(self.slot)),
            )
        _log(f"job {self.pool + '.' + ulid}: hard stop {TIMEOUT_GRACE:g}s after {what}")
        os._exit(EXIT_TASK_FAILED)

    # ------------------------------------------------------------------- job
    spec: dict[str, Any] | None = None

    def run_job(
        self, ulid: str, attempt: int, payload: bytes, args: bytes, sig: bytes, grant: bytes
    ) -> int:
        try:
            return self._run_job(ulid, attempt, payload, args, sig, grant)
        except _Interrupted:  # delivered just as the task returned: the job moved on anyway
            return EXIT_SKIPPED
        except TaskTimeout as exc:  # the timer fired just as the task returned
            _unwatch()  # recording it may ride out an outage
            error = _error(Reason.TIMEOUT, exc, "the task reached its run timeout")
            self.finish(ulid, attempt, "FAILED", error=error, reason=Reason.TIMEOUT)
            return EXIT_TASK_FAILED
        finally:
            self.in_task = False
            self.capture.end()

    def _run_job(
        self, ulid: str, attempt: int, payload: bytes, args: bytes, sig: bytes, grant: bytes
    ) -> int:
        job_id = f"{self.pool}.{ulid}"
        self.spec = None
        self.result_until = 0.0

        def fail(reason: str, exc: BaseException | None, message: str = "") -> int:
            retry = ("", "")
            if self.spec is not None:
                delay = exc.delay if isinstance(exc, Retry) else None
                retry = decide(self.spec, attempt, reason, requested_delay=delay)
            ended = self.finish(
                ulid,
                attempt,
                "FAILED",
                error=_error(reason, exc, message),
                reason=reason,
                retry=retry,
            )
            if ended < 0:
                _log(f"job {job_id}: could not record failure ({reason}); it moved on")
            else:
                _log(
                    f"event=failed job={job_id} attempt={attempt} reason={reason} "
                    f"retry={'yes' if retry[0] else 'no'} "
                    f"machine_s={time.time() - self.job_start:.3f}"
                )
            return EXIT_TASK_FAILED

        if not verify(self.h.secret, payload, args, sig):
            fail(
                Reason.SIGNATURE_INVALID,
                None,
                "the job record's signature does not match: it was altered, or signed with "
                "another secret; the task was not run",
            )
            return EXIT_REFUSED
        try:
            spec = json.loads(payload)
            if not isinstance(spec, dict) or spec.get("id") != job_id:
                raise ValueError("payload names another job")
            # Each attempt runs once: one after the first needs the permission its retry was
            # given, and no record is run past its TTL (counted from its creation or that
            # permission): the claim scripts refuse an attempt claimed before, for that long.
            until = run_by(self.h.secret, job_id, attempt, spec, grant)
            if until is None:
                raise WorkerError(
                    Reason.SIGNATURE_INVALID,
                    f"attempt {attempt} of this job was never granted by a holder of the app's "
                    "secret (its record was altered): the task was not run",
                )
            if time.time() > until + lua.FRESH_SLACK:
                raise ValueError(
                    "the record is older than its TTL (a record put back in Redis); the task "
                    "was not run"
                )
            name = str(spec["task"])
            task = registry.load(name, spec.get("main"))
            ser: Serializer = _serializer_for(task, str(spec.get("ser", "json")))
            call_args, call_kwargs = loads_call(ser, args)
            timeout = float(spec.get("timeout") or 0)
            if not 0 <= timeout <= MAX_TIMEOUT:  # nan fails too
                raise ValueError(f"timeout {timeout!r} is not in 0..{MAX_TIMEOUT:g} seconds")
        except WorkerError as exc:
            fail(exc.reason, exc)
            return EXIT_REFUSED
        except SerializationError as exc:
            fail(Reason.SERIALIZATION, exc)
            return EXIT_REFUSED
        except (ValueError, KeyError, TypeError) as exc:
            fail(Reason.RECORD_INVALID, exc, f"malformed job record: {exc}")
            return EXIT_REFUSED
        self.spec = spec
        retry_on: tuple[type[BaseException], ...] = getattr(
            getattr(task, "opts", None), "retry_on", (Exception,)
        )
        started = time.time()
        deadline = started + timeout if timeout > 0 else None
        cap_at = _cost_cap_at(spec, self.job_start)
        capped = cap_at is not None and (deadline is None or cap_at < deadline)
        if capped:
            deadline = cap_at
        self.capped = capped
        # The outcome is worth waiting for through a Redis outage until the job's deadline.
        self.result_until = time.monotonic() + deadline - time.time() if deadline else 0.0
        with self.lock:
            self.current = (ulid, attempt, deadline)
            self.interrupted = ""
            self.in_task = True
        _log(
            f"event=started job={job_id} attempt={attempt} task={name} "
            f"wait_s={started - float(spec.get('created') or started):.3f}"
        )
        self.capture.begin(ulid, attempt)
        if deadline is not None:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0.001))
            # The timer's handler runs between two bytecodes, and the heartbeat's hard stop
            # needs the interpreter lock: C code that holds it keeps both out. faulthandler's
            # watchdog is a C thread: after both had their chance it dumps every thread's
            # stack to the machine's log and ends the process (exit code 1).
            grace = TIMEOUT_GRACE + self.heartbeat + 1.0
            _watch(time.monotonic() + deadline - time.time() + grace, min(timeout, 60.0))
        else:
            _unwatch()  # no deadline: nothing may end this job
        try:
            try:
                value = task.fn(*call_args, **call_kwargs)
            finally:
                self.in_task = False  # first: from here on a cancel signal is ignored
                if deadline is not None:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                with self.lock:
                    self.current = None
                self.capture.end()  # every line is stored before the outcome is
        except _Interrupted:
            _log(f"job {job_id} attempt {attempt} stopped: {self.interrupted}")
            return EXIT_SKIPPED
        except TaskTimeout as exc:
            if capped:
                return fail(
                    Reason.COST_CAP,
                    exc,
                    f"the job reached its max_cost of ${float(spec['max_cost']):g} after "
                    f"{time.time() - self.job_start:.1f}s on its machine",
                )
            return fail(Reason.TIMEOUT, exc, f"the task ran past its timeout of {timeout:g}s")
        except MemoryError as exc:
            return fail(Reason.OOM, exc, "the task ran out of memory (its memory_mb limit)")
        except Retry as exc:
            return fail(Reason.TASK_ERROR, exc)
        except BaseException as exc:
            if isinstance(exc, retry_on):
                return fail(Reason.TASK_ERROR, exc)
            saved, self.spec = self.spec, None  # not retryable: record it as final
            try:
                return fail(Reason.TASK_ERROR, exc)
            finally:
                self.spec = saved
        try:
            data = ser.dumps(value)
        except Exception as exc:
            return fail(
                Reason.SERIALIZATION,
                exc,
                f"the task returned {type(value).__name__}, which the {ser.name} serializer "
                f"cannot encode: {exc}",
            )
        tag = sign_outcome(self.h.secret, f"result/{ser.name}", job_id, attempt, data)
        if self.finish(ulid, attempt, "SUCCEEDED", result=(data, tag)) < 0:
            _log(f"job {job_id}: result not recorded, the job moved on")
            return EXIT_OK
        _log(f"event=succeeded job={job_id} attempt={attempt} run_s={time.time() - started:.3f}")
        return EXIT_OK


_WORKER: list[Worker] = []  # the worker of this process, for the signal handler
_BOOT = [time.time()]  # when this process started: the first attempt's machine time begins


def _cost_cap_at(spec: Mapping[str, Any], since: float) -> float | None:
    """When the job's ``max_cost`` is spent, its machine billed from ``since`` at the price
    per second the client worked out at submit (``usd_per_s``); None without a cap."""
    cap, rate = spec.get("max_cost"), spec.get("usd_per_s")
    if not cap or not rate:
        return None
    return since + float(cap) / float(rate)


def _evalsha(script: str, keys: list[str], args: list[Any]) -> list[Any]:
    """An ``EVALSHA`` command for :meth:`RespClient.pipeline` (NOSCRIPT comes back as a
    reply; the caller falls back to :meth:`RespClient.eval`)."""
    return ["EVALSHA", lua.sha(script), len(keys), *keys, *args]


#: When the armed watchdog ends this process (``time.monotonic()``), 0.0 when it is not armed.
_WATCHDOG_AT = [0.0]


def _watch(until: float, slack: float) -> None:
    """Have the watchdog end this process no earlier than ``until`` (monotonic) and no later
    than ``until + slack``. It is re-armed only when its time falls outside that window: arming
    starts a thread and disarming joins it (about 30 µs), so a warm machine's short jobs share
    one arming rather than each paying for theirs, idle waits between them included (those that
    could reach its time disarm it). It is disarmed while nothing could hold the interpreter past
    a deadline (:func:`_unwatch`)."""
    at = _WATCHDOG_AT[0]
    if until <= at <= until + slack:
        return
    _WATCHDOG_AT[0] = until + slack if _arm_watchdog(until + slack - time.monotonic()) else 0.0


def _unwatch() -> None:
    if _WATCHDOG_AT[0]:
        faulthandler.cancel_dump_traceback_later()
        _WATCHDOG_AT[0] = 0.0


def _arm_watchdog(seconds: float) -> bool:
    """End this process in ``seconds`` unless disarmed, whatever holds the interpreter."""
    stream = sys.__stderr__
    try:
        fd = stream.fileno() if stream is not None else 2
        faulthandler.dump_traceback_later(max(seconds, 0.001), file=fd, exit=True)
    except (OSError, ValueError):  # no usable stderr: the heartbeat and supervisor remain
        return False
    return True


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    if _WORKER and _WORKER[0].in_task:
        raise _Interrupted


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TaskTimeout("run timeout")


def _at(reply: list[Any], i: int) -> bytes:
    """Item ``i`` of a script's reply, or b"" when the reply is shorter."""
    return bytes(reply[i]) if len(reply) > i and reply[i] is not None else b""


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
    _BOOT[0] = time.time()
    try:
        client = RespClient(handoff.redis_url)
    except ConfigError as exc:  # an option of the URL it would not act on
        _log(f"job {handoff.job_id}: {exc}")
        return EXIT_USAGE
    signal.signal(signal.SIGUSR1, _on_interrupt)
    worker = None
    try:
        worker = Worker(handoff, client)
        _WORKER[:] = [worker]
        return worker.run()
    except StoreError as exc:
        _log(f"job {handoff.job_id}: {exc}")
        return EXIT_STORE
    finally:
        _unwatch()  # on every way out (a process that called main() lives on)
        if worker is not None:
            worker.stop = True  # ends the heartbeat thread on every way out
        client.close()


if __name__ == "__main__":
    sys.exit(main())
