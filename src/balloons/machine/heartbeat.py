"""A worker's heartbeat thread: it renews the machine's slot lease at its pool's pace, learns
that pace, interrupts a task whose job was cancelled, reassigned or deleted, and ends the
machine when a task ignores its deadline. Lean imports only: every machine imports this module.
"""

from __future__ import annotations

import contextlib
import signal
import time

from ..errors import StoreError
from ..retry import decide, retry_argv
from ..states import Reason
from ..store import lua, replies
from ..store.keys import slot_job
from ..store.replies import Beat, Code
from ..store.resp import RespClient
from . import isolate
from .attempt import error_record, log
from .execute import EXIT_TASK_FAILED

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from .worker import Worker

TIMEOUT_GRACE = 5.0  # seconds past a run timeout before the worker stops its own machine


def run(w: Worker) -> None:
    """The heartbeat thread of worker ``w``: renew the slot's lease, notice cancellation,
    enforce deadlines."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1, signal.SIGTERM})
    client = w.beat_client = RespClient(w.handoff.redis_url)
    w.claimed.wait()  # the first job's claim tells the pace (see Worker._claim)
    if w.first_beat_in > 0 and not w.stop:
        time.sleep(w.first_beat_in)
    try:
        while not w.stop:
            with w.lock:
                cur = w.current
            ulid, attempt, deadline = cur if cur else ("", 0, None)
            try:
                beat = replies.heartbeat(
                    w._eval(
                        lua.HEARTBEAT,
                        w.slot,
                        ulid,
                        attempt,
                        # The time left, not the time: the slot's deadline is reckoned on
                        # the server's clock (a supervisor's overdue stop compares them).
                        f"+{deadline - time.time():.3f}" if deadline else "",
                        "1" if w.capped else "",
                        client=client,
                        jobs=(ulid,),
                    )
                )
            except (StoreError, OSError) as exc:
                log(f"heartbeat failed: {exc}")
            else:
                heard(w, beat, ulid, attempt)
            if ulid and deadline and time.time() > deadline + TIMEOUT_GRACE:
                hard_stop(w, client, ulid, attempt)
            time.sleep(w.heartbeat)
    finally:
        client.close()


def heard(w: Worker, beat: Beat, ulid: str, attempt: int) -> None:
    """Act on a heartbeat's reply: the pool's pace, and whether the job moved on."""
    if beat.heartbeat is not None and beat.idle is not None:  # see HEARTBEAT
        w.heartbeat, w.idle = beat.heartbeat, beat.idle
    if beat.code is Code.GONE:
        w.stop = True
        interrupt(w, ulid, attempt, "its machine's slot was taken away")
    elif ulid and beat.status != "RUNNING":
        what = {"CANCELLED": "it was cancelled", "GONE": "its record vanished"}
        interrupt(w, ulid, attempt, what.get(beat.status, "it moved on to another attempt"))


def interrupt(w: Worker, ulid: str, attempt: int, why: str) -> None:
    """Interrupt the task if it still runs the job the heartbeat looked at: in its own process
    (isolation "process"), signal that; kill it if it still runs a heartbeat later."""
    with w.lock:
        cur = w.current
        if cur is None or cur[:2] != (ulid, attempt):
            return  # that job already ended here; the next one is not concerned
        if w.in_task and not w.interrupted:
            w.interrupted = why
            w.signal_task()
        elif w.child and w.interrupted:
            isolate.kill(w, signal.SIGKILL)


def hard_stop(w: Worker, client: RespClient, ulid: str, attempt: int) -> None:
    """The task ignored its timeout signal: record the failure and end the machine. A task in
    a process of its own is killed instead: the worker records its failure and goes on."""
    reason = Reason.COST_CAP if w.capped else Reason.TIMEOUT
    with w.lock:
        if w.child:
            cur = w.current
            if cur is not None and cur[:2] == (ulid, attempt) and not w.killed_for:
                w.killed_for = reason
                log(f"job {w.pool}.{ulid}: its process killed {TIMEOUT_GRACE:g}s past its deadline")
                isolate.kill(w, signal.SIGKILL)
            return
    spec = w.spec or {}
    retry = decide(spec, attempt, reason)
    what = "its max_cost" if w.capped else "its run timeout"
    error, tag = w._seal(
        ulid,
        attempt,
        error_record(reason, None, f"the task ignored {what}, so its machine was killed"),
    )
    with contextlib.suppress(Exception):
        w._eval(
            lua.LOST,
            w.slot,
            ulid,
            attempt,
            error,
            reason,
            *retry_argv(retry),
            "0",
            tag,
            w._grant(ulid, attempt, retry),
            client=client,
            jobs=(ulid, slot_job(w.slot)),
        )
    log(f"job {w.pool + '.' + ulid}: hard stop {TIMEOUT_GRACE:g}s after {what}")
    w.end_machine(EXIT_TASK_FAILED)
