"""The watchdog of a machine's deadlines: a ``faulthandler`` C thread that dumps every thread's
stack and ends the process when a task holds the interpreter past its deadline (when neither
the run-timeout signal nor the heartbeat thread's hard stop can run). Standard library only.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import time

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

#: When the armed watchdog ends this process (``time.monotonic()``), 0.0 when it is not armed.
ARMED_AT = [0.0]


def watch(until: float, slack: float) -> None:
    """Have the watchdog end this process no earlier than ``until`` (monotonic) and no later
    than ``until + slack``. It is re-armed only when its time falls outside that window: arming
    starts a thread and disarming joins it (about 30 µs), so a warm machine's short jobs share
    one arming rather than each paying for theirs. It is disarmed while nothing could hold the
    interpreter past a deadline (:func:`unwatch`)."""
    at = ARMED_AT[0]
    if until <= at <= until + slack:
        return
    ARMED_AT[0] = until + slack if _arm(until + slack - time.monotonic()) else 0.0


def unwatch() -> None:
    """Disarm the watchdog, while nothing could hold the interpreter past a deadline."""
    if ARMED_AT[0]:
        faulthandler.cancel_dump_traceback_later()
        ARMED_AT[0] = 0.0


def _arm(seconds: float) -> bool:
    """End this process in ``seconds`` unless disarmed, whatever holds the interpreter."""
    stream = sys.__stderr__
    try:
        fd = stream.fileno() if stream is not None else 2
        faulthandler.dump_traceback_later(max(seconds, 0.001), file=fd, exit=True)
    except (OSError, ValueError):  # no usable stderr: the heartbeat and supervisor remain
        return False
    return True


def arm_deadline(
    deadline: float | None,
    slack: float,
    grace: float,
    on_alarm: Callable[[int, FrameType | None], None],
    watchdog: bool = True,
) -> None:
    """Arm the run-timeout timer for ``deadline`` (``time.time()``; ``on_alarm`` handles its
    ``SIGALRM``) and the watchdog for ``grace`` seconds after it (see :func:`watch`); with no
    deadline, disarm the watchdog: nothing may end the job. The timer's handler runs between
    two bytecodes, and the heartbeat's hard stop needs the interpreter lock: C code that holds
    it keeps both out. The watchdog is a C thread: it dumps every thread's stack to the
    machine's log and ends the process (exit code 1). Without ``watchdog`` (a job's own
    process, which its parent kills past the deadline) only the timer is armed."""
    if deadline is None:
        unwatch()
        return
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0.001))
    if watchdog:
        watch(time.monotonic() + deadline - time.time() + grace, slack)
