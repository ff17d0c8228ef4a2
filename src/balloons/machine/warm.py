"""A machine between jobs: after its first job it takes its pool's queued jobs (warm reuse),
waits on its wake list while there is none, and gives its slot back after the pool's idle
timeout (or keeps it stopped on standby). The worker's loop after its first job; standard
library and lean modules only: every machine imports it.
"""

from __future__ import annotations

import time

from ..errors import StoreError
from ..store import lua, replies
from ..store.replies import Code
from ..store.resp import RespError
from .attempt import log
from .execute import EXIT_OK
from .watchdog import ARMED_AT, unwatch

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from .worker import Worker


def take_jobs(w: Worker, code: int) -> int:
    """Take the pool's queued jobs until the slot is given back; the last job's exit code."""
    mode = w._mode()
    idle_until = 0.0
    while True:
        raw, w.next_take = w.next_take, None
        if raw is None:
            if w.stop:
                break
            # With no job in hand, an unreachable Redis is worth waiting for only as long
            # as the machine would have idled anyway: its slot is reclaimed once Redis is
            # back.
            patience = max(idle_until or time.monotonic() + w.idle, time.monotonic() + 2.0)
            raw = w._patient(lua.TAKE, *w._take_args(mode), until=patience)
        took = replies.take(raw)
        if took.work is not None:
            w.more = took.more
            w.job_start = time.time()
            code = w.run_job(took.work)
            mode, idle_until = w._mode(), 0.0
            continue
        if took.code is Code.STANDBY:
            # Kept stopped in the pool's standby set: a clean exit stops the machine.
            log(f"idle: machine {w.handoff.machine_id} stops, kept on standby")
            return EXIT_OK
        if took.code is not Code.NONE:
            break  # the slot was given back (idle timeout) or taken away: exit
        now = time.monotonic()
        if idle_until == 0.0 or mode == "release":
            w.idle = took.idle
            # Kept by the pool's warm floor after a release: wait a while before asking
            # again, even with no idle timeout.
            idle_until = now + (max(w.idle, 1.0) if mode == "release" else w.idle)
        left = idle_until - now
        if left <= 0:
            mode = "release"
            continue
        w._wait_for_wake(left)
        mode = "take" if time.monotonic() < idle_until else "release"
    return code


def wait_for_wake(w: Worker, left: float) -> None:
    """Wait for a wake-up token (a job handed to an idle machine, or a job delayed), never
    long, and never past the time the pool's next delayed job falls due, so that it
    starts on time. No ``TAKE`` rides behind the wait: a machine
    killed while it waits would have Redis hand it the job that wakes it. The watchdog
    stays armed for the next job (arming starts a thread) unless the wait could reach
    its time."""
    wait, limit = min(left, 5.0, until_due(w)), w.client.timeout
    if limit is None or time.monotonic() + wait + limit + 1.0 >= ARMED_AT[0]:
        unwatch()
    try:
        w.client.execute("BLPOP", *w.wake_keys, f"{wait:.3f}", block=wait)
    except (StoreError, RespError) as exc:
        log(f"waiting for work: {exc}")
        time.sleep(min(left, 0.5))  # TAKE rides out the outage


def until_due(w: Worker) -> float:
    """Seconds until the pool's first delayed job falls due (by the server's clock; the
    ``TAKE`` after it promotes the job); a long time when none is delayed. A moment at
    least: a wait of 0 would block for ever."""
    try:
        first = w.client.execute("ZRANGE", w.pk.delayed, 0, 0, "WITHSCORES")
        if not isinstance(first, list) or len(first) != 2:
            return 3600.0
        due = float(first[1])
        now = replies.clock(w._eval(lua.CLOCK))
    except (StoreError, RespError, ValueError):
        return 3600.0  # the wait rides the outage out, or the TAKE reads the set
    return min(3600.0, max(0.01, due - now + 0.001))
