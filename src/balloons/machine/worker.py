"""The worker: what runs on a machine. ``python -m balloons.machine`` (also ``balloons worker``).

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

The start-up path of every machine: the standard library and balloons' lean modules only (no
redis-py, no CLI, web or HTTP library): ``handoff``, ``attempt`` (a job's record, its failure),
``execute`` (one attempt run here, its outcome recorded), ``warm`` (the queued jobs taken after
the first), ``heartbeat``, ``watchdog``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from ..compat import tag as compat_tag
from ..compat import wake_keys
from ..errors import ConfigError, StoreError, WorkerError
from ..retry import RetryPlan, retry_argv
from ..signing import seal_error, sign_grant
from ..states import Reason
from ..store import lua, replies
from ..store.keys import PoolKeys, script_keys
from ..store.replies import NO_SLOT, Code, Work
from ..store.resp import RespClient, RespError
from . import execute, heartbeat, isolate, warm
from .attempt import BAD_SLOT, error_record, extend_path, log, refusal
from .capture import LogCapture
from .execute import (  # the exit codes are importable from here too, as they always were
    EXIT_OK,  # noqa: F401
    EXIT_REFUSED,
    EXIT_SKIPPED,
    EXIT_STORE,
    EXIT_TASK_FAILED,
    EXIT_USAGE,
    Interrupted,
    TaskTimeout,
)
from .handoff import Handoff
from .heartbeat import TIMEOUT_GRACE
from .watchdog import ARMED_AT, arm_deadline, unwatch, watch

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import FrameType
    from typing import Any

STORE_PATIENCE = 60.0  # seconds the worker keeps retrying Redis before it gives up
_TRANSIENT = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")


class Worker:
    """One machine's worker: its first job, then warm reuse until its pool's idle timeout."""

    def __init__(self, handoff: Handoff, client: RespClient) -> None:
        self.handoff = handoff
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
        # Whether jobs were queued when it took its current one: then the next TAKE rides
        # with the FINISH (one round trip per job); else it follows the FINISH's reply.
        self.more = True
        self.capture = LogCapture(handoff.redis_url, self.pk, handoff.secret)
        self.job_start = _BOOT[0]  # when this machine began the current attempt
        self.capped = False  # the current deadline is the job's max_cost, not its timeout
        # Which queued jobs this machine may take: those of its key and version.
        self.compat = compat_tag(handoff.secret, handoff.version)
        self.wake_keys = wake_keys(self.pk, self.compat)
        # Isolation (balloons.machine.isolate): the child running the job (0: none), the spare,
        # why the heartbeat killed the child; in a child, its pipe to the parent (-1: parent).
        self.child = 0
        self.spare: isolate.Child | None = None
        self.killed_for = ""
        self.events = -1
        self.beat_client: RespClient | None = None  # the heartbeat thread's connection
        # Set once the first claim told the heartbeat thread its pace (or there was none).
        self.claimed = threading.Event()
        self.retire = False  # a machine of a pool with isolation "machine" ran its job
        # In a job's own process: the outcome to record, (ulid, FINISH's arguments), which its
        # parent sends (see balloons.machine.isolate); the payload that parent verified.
        self.outcome: tuple[str, tuple[Any, ...]] | None = None
        self.opened: dict[str, Any] | None = None

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
                log(f"Redis unreachable ({exc}); retrying in {delay:.2f}s")
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def _seal(self, ulid: str, attempt: int, error: dict[str, str]) -> tuple[str, str]:
        return seal_error(self.handoff.secret, f"{self.pool}.{ulid}", attempt, error)

    def _grant(self, ulid: str, attempt: int, retry: RetryPlan | None) -> str:
        """The next attempt's permission to run, when ``retry`` schedules one."""
        if retry is None:
            return ""
        return sign_grant(self.handoff.secret, f"{self.pool}.{ulid}", attempt + 1, time.time())

    def finish(
        self,
        ulid: str,
        attempt: int,
        status: str,
        result: tuple[bytes, str] = (b"", ""),
        error: dict[str, str] | None = None,
        reason: str = "",
        retry: RetryPlan | None = None,
    ) -> Code:
        """Record the outcome: ``result`` (the encoded value and its tag) or ``error``."""
        data, tag = result
        text = ""
        if error is not None:
            text, tag = self._seal(ulid, attempt, error)
        grant = self._grant(ulid, attempt, retry)
        machine = self.handoff.machine_id
        args = (ulid, attempt, machine, status, data, text, reason, *retry_argv(retry), tag, grant)
        if self.events >= 0:  # a job's own process: its parent records the outcome
            self.outcome = (ulid, args)
            return Code.OK
        return self.record(ulid, args)

    def record(self, ulid: str, args: tuple[Any, ...]) -> Code:
        """Send ``FINISH`` with the outcome's arguments (see :meth:`finish`); its reply."""
        fin = None if self.stop else self._finish_and_take(ulid, args)
        if fin is None:
            # An outcome is worth waiting for: keep trying through a Redis restart, for
            # STORE_PATIENCE seconds or until the job's deadline, whichever is later.
            until = max(time.monotonic() + STORE_PATIENCE, self.result_until)
            fin = self._patient(lua.FINISH, *args, until=until, jobs=(ulid,))
        return replies.ended(fin)

    def _finish_and_take(self, ulid: str, args: tuple[Any, ...]) -> Any:
        """``FINISH``, with the machine's next ``TAKE`` in the same write while jobs were
        queued, so a busy machine pays one round trip per job, not two; run() uses the TAKE's
        reply. Returns FINISH's reply, or None when it must be sent again on its own (riding
        out an outage)."""
        now = time.time()
        commands = [lua.evalsha(lua.FINISH, script_keys(self.pk, ulid), [self.pk.tag, now, *args])]
        if self.more:
            take_args = [self.pk.tag, now, *self._take_args(self._mode())]
            commands.append(lua.evalsha(lua.TAKE, script_keys(self.pk), take_args))
        try:
            fin, *take = self.client.pipeline(commands)
        except StoreError:  # the connection failed: ride it out (run() takes the next job)
            return None
        if isinstance(fin, RespError):
            if not str(fin).startswith(("NOSCRIPT", *_TRANSIENT)):
                raise fin
            # The TAKE ran before the outcome was recorded: its reply may be this very job,
            # still running on this machine then. Not used: run() asks again, and a job the
            # TAKE did give this machine is handed back to it then (TAKE returns a held job).
            return None
        if take and not isinstance(take[0], RespError):
            self.next_take = take[0]
        return fin

    # ------------------------------------------------------------------ loop
    #: Until when (``time.monotonic()``) the current job's outcome is worth riding out an
    #: outage for: its deadline (0.0: none, STORE_PATIENCE then).
    result_until = 0.0
    #: Seconds before the heartbeat thread's first beat: none for a machine with no job of its
    #: own, which learns its pool's pace from that beat.
    first_beat_in = 0.0

    def run(self) -> int:
        """Run the machine: claim and run the handoff's job (if any), then take the pool's queued
        jobs until the slot is given back; the machine's exit code."""
        beat = threading.Thread(
            target=heartbeat.run, args=(self,), name="balloons-heartbeat", daemon=True
        )
        code = EXIT_SKIPPED
        if self.handoff.attempt > 0:
            done = True
            try:
                code, done = self._first_job(beat)
            finally:  # a machine done here ends its heartbeat thread before any beat
                self.stop = self.stop or done
                self.claimed.set()
            if done:
                return code
        self.claimed.set()
        if not beat.is_alive() and not self.stop:
            beat.start()
        code = self._take_jobs(code)
        _unwatch()  # no job left to end
        self.stop = True
        isolate.close(self)
        self.capture.close()
        return code

    def _first_job(self, beat: threading.Thread) -> tuple[int, bool]:
        """Claim the handoff's job and run it (starting the heartbeat thread). Returns the
        exit code so far, and whether the machine is done (no slot, or an altered one)."""
        h = self.handoff
        ulid = self.slot.rpartition("-")[0]
        raw = self._claim(
            beat, ulid, (ulid, h.attempt, h.machine_id, *self._seal(ulid, h.attempt, BAD_SLOT))
        )
        claim = replies.claim(raw, ulid, h.attempt)
        if claim.code is Code.BAD_SLOT:
            log(f"job {h.job_id}: its slot's entry in Redis is unreadable; refused")
            return EXIT_REFUSED, True
        if claim.work is not None:
            self.heartbeat, self.idle = claim.heartbeat, claim.idle
            # The claim has just renewed the lease at the pool's pace: the first beat can
            # wait a period (a short job then ends before it, on one connection).
            self.first_beat_in = self.heartbeat
            self.claimed.set()
            return self.run_job(claim.work), False
        log(f"job {h.job_id} attempt {h.attempt} not run: {refusal(claim)}")
        return EXIT_SKIPPED, claim.status == NO_SLOT

    def _claim(self, beat: threading.Thread, ulid: str, args: tuple[Any, ...]) -> Any:
        """``CLAIM``'s reply, the heartbeat thread started while Redis runs it (starting a
        thread waits for it to run: here that wait overlaps the round trip). Sent again,
        riding out an outage, when the first try fails."""
        try:
            keys = script_keys(self.pk, ulid)
            reply = self.client.eval_send(lua.CLAIM, keys, [self.pk.tag, time.time(), *args])
        except StoreError:
            reply = None
        beat.start()  # it waits for self.claimed before its first beat
        if reply is not None:
            try:
                return reply()
            except StoreError:
                pass
            except RespError as exc:
                if not str(exc).startswith(_TRANSIENT):
                    raise
        return self._patient(lua.CLAIM, *args, jobs=(ulid,))

    def _mode(self) -> str:
        """How a TAKE with no job to give ends: with no idle timeout, a machine never waits:
        it takes a job or gives its slot back. A machine of a pool with isolation "machine"
        takes no second job."""
        if self.retire:
            return "retire"
        return "release" if self.idle <= 0 else "take"

    def _take_jobs(self, code: int) -> int:
        """Take the pool's queued jobs until the slot is given back (see :mod:`.warm`)."""
        return warm.take_jobs(self, code)

    def _wait_for_wake(self, left: float) -> None:
        """Wait up to ``left`` seconds for work (see :func:`.warm.wait_for_wake`)."""
        warm.wait_for_wake(self, left)

    def take(self, mode: str) -> Any:
        """``TAKE`` in ``mode`` now, riding out an outage; its reply."""
        return self._patient(lua.TAKE, *self._take_args(mode))

    def _take_args(self, mode: str) -> tuple[str, str, str, str, str]:
        standby = "1" if self.handoff.standby else ""
        return (self.slot, self.handoff.machine_id, mode, standby, self.compat)

    # ------------------------------------------------------------------- job
    spec: dict[str, Any] | None = None
    #: Whether a job of a pool with isolation "process" runs in a child forked for it.
    forks = True

    def run_job(self, work: Work) -> int:
        """Run a job as its pool's isolation says: in a child process forked for it (see
        :mod:`balloons.machine.isolate`), or in this one (``"none"``; ``"machine"``, whose machine
        then gives its slot back)."""
        self.retire = work.isolation == "machine"
        link = b'"link":"' in work.payload and self.events < 0  # a chain's or group's member
        self.more = self.more and not link  # its advance (links.py) comes before a TAKE
        if work.isolation == "process" and self.events < 0 and self.forks:
            code = isolate.run(self, work)
        else:
            code = self.run_here(work)
        if link:
            from . import links  # only a machine that runs a flow's member needs it

            self.next_take = links.advance(self, work)
        return code

    def run_here(self, work: Work) -> int:
        """Run a job in this process."""
        try:
            return execute.run(self, work)
        except Interrupted:  # delivered just as the task returned: the job moved on anyway
            return EXIT_SKIPPED
        except TaskTimeout as exc:  # the timer fired just as the task returned
            _unwatch()  # recording it may ride out an outage
            error = error_record(Reason.TIMEOUT, exc, "the task reached its run timeout")
            self.finish(work.ulid, work.attempt, "FAILED", error=error, reason=Reason.TIMEOUT)
            return EXIT_TASK_FAILED
        finally:
            self.in_task = False
            self.capture.end()

    def fail(self, work: Work, reason: str, message: str) -> int:
        """Record a failed attempt that raised nothing here (its process crashed), with a
        retry as the job's policy allows."""
        return execute.fail(self, work, reason, None, message)

    # What a worker does to the process it runs in: its own on a machine. A worker run inside
    # another program (:mod:`balloons.testing`) overrides these three.
    def arm(self, deadline: float | None, timeout: float) -> None:
        """Arm the attempt's run-timeout signal and the watchdog (see
        :func:`balloons.watchdog.arm_deadline`)."""
        # The watchdog fires after the timer and the heartbeat's hard stop had their chance.
        grace = TIMEOUT_GRACE + self.heartbeat + 1.0
        # A job's own process needs no watchdog: its parent kills it past the deadline.
        arm_deadline(deadline, min(timeout, 60.0), grace, _on_alarm, self.events < 0)

    def signal_task(self) -> None:
        """Interrupt the running task (the heartbeat thread's call, under ``self.lock``): in
        a process of its own (isolation "process"), signal that process."""
        if self.child:
            isolate.kill(self, signal.SIGUSR1)
        else:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    def end_machine(self, code: int) -> None:
        """End the machine at once (the heartbeat's hard stop of a task past its deadline)."""
        os._exit(code)


#: The scripts a machine sends (its log capture's too).
SCRIPTS = ("CLAIM", "TAKE", "FINISH", "HEARTBEAT", "APPEND_LOGS", "LOST")


def prepare() -> None:
    """Make what a machine would otherwise make on its way to its first job, in a parent that
    forks machines (the local fork server) or job processes (isolation "process"): the texts
    of the scripts a machine sends and their digests (reading and linking them costs a machine
    milliseconds). A forked process finds them made, and, with the parent's objects moved to
    the collector's permanent generation as it forks (``gc.freeze``), its own collections
    never visit (and so never copy) the pages holding them."""
    for name in SCRIPTS:
        lua.sha(getattr(lua, name))


_WORKER: list[Worker] = []  # the worker of this process, for the signal handler
_INLINE = threading.local()  # a worker run in another program's thread (balloons.testing)


def running() -> Worker | None:
    """The worker whose job this thread runs: one run inline in this thread (by
    :mod:`balloons.testing`), else this process's (a machine's)."""
    here: Worker | None = getattr(_INLINE, "worker", None)
    if here is not None:
        return here
    return _WORKER[0] if _WORKER else None


_BOOT = [time.time()]  # when this process started: the first attempt's machine time begins


#: The watchdog's (see :mod:`.watchdog`), by the names this module has long given them.
_WATCHDOG_AT, _watch, _unwatch = ARMED_AT, watch, unwatch


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    if _WORKER and _WORKER[0].in_task:
        raise Interrupted


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TaskTimeout("run timeout")


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the job named by the environment; return the exit code."""
    env = os.environ if env is None else env
    if env.get("BALLOONS_ATTEMPT_URL") and not env.get("BALLOONS_JOB"):
        from .http import main as http_main  # the worker protocol: no store, one attempt

        return http_main(env)
    try:
        handoff = Handoff.from_env(env)
    except WorkerError as exc:
        log(str(exc))
        return EXIT_USAGE
    extend_path(env)
    _BOOT[0] = time.time()
    try:
        client = RespClient(handoff.redis_url)
    except ConfigError as exc:  # an option of the URL it would not act on
        log(f"job {handoff.job_id}: {exc}")
        return EXIT_USAGE
    signal.signal(signal.SIGUSR1, _on_interrupt)
    worker = None
    try:
        worker = Worker(handoff, client)
        _WORKER[:] = [worker]
        return worker.run()
    except StoreError as exc:
        log(f"job {handoff.job_id}: {exc}")
        return EXIT_STORE
    finally:
        _unwatch()  # on every way out (a process that called main() lives on)
        if worker is not None:
            worker.stop = True  # ends the heartbeat thread on every way out
            worker.claimed.set()
            isolate.close(worker)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
