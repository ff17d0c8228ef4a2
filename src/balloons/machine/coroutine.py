"""Running an ``async def`` task's coroutine on a machine, in an event loop of its own.

Each job gets a fresh loop, closed when the job ends, as ``asyncio.run`` does: nothing of one
job's loop (its tasks, callbacks, transports) reaches the next on a warm machine, and a loop
that a timeout or a cancel interrupted is never reused. ``asyncio`` is imported by the first
async job only: a machine running sync tasks never pays for it.

The worker ends a job with a signal whose handler raises (the run timeout's ``SIGALRM``, the
interrupt of a cancelled job's ``SIGUSR1``). Raised into a running loop, such an exception
may land in one of its callbacks, which the loop logs and swallows; so while a coroutine runs,
what the handler raises cancels the coroutine's task instead (through the loop, which the
signal wakes), and is raised once the task has ended: the attempt ends with the same
exception, reason and retry as a sync task's. A coroutine that does not reach an ``await``
within ``ESCALATE`` seconds of its run timeout gets the timeout raised where it runs, as a
sync task does. Standard library only.
"""

from __future__ import annotations

import signal
import threading

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine
    from types import FrameType
    from typing import Any

    Handler = Callable[[int, FrameType | None], Any]

#: Seconds a coroutine whose run timeout fired has to reach an ``await`` and take the
#: cancellation, before the timeout is raised wherever it runs.
ESCALATE = 1.0
#: The signals whose handlers end a job (see :mod:`balloons.machine.worker`).
_SIGNALS = (signal.SIGALRM, signal.SIGUSR1)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end in a new event loop and return its value; what a job-ending
    signal's handler raises meanwhile cancels it, and is raised when it has ended. (Signal
    handlers are the main thread's: elsewhere none is changed. A thread that already runs a
    loop, as the test mode's can, runs it in a thread of its own.)"""
    import asyncio

    if asyncio._get_running_loop() is not None:
        return _in_thread(coro)
    loop = asyncio.new_event_loop()
    raised: list[BaseException] = []
    saved: dict[signal.Signals, Any] = {}
    value = None
    try:
        main = loop.create_task(coro)
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):
                    saved[signum] = handler
                    signal.signal(signum, _deferred(handler, signum, loop, main, raised))
        try:
            value = loop.run_until_complete(main)
        except BaseException:
            if not raised:
                raise
        finally:
            _close(loop, clean=not raised)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        if raised and signal.SIGALRM in saved:
            signal.setitimer(signal.ITIMER_REAL, 0)  # the escalation, if still armed
    if raised:  # also when the task took the cancellation and returned all the same
        raise raised[0]
    return value


def _in_thread(coro: Coroutine[Any, Any, Any]) -> Any:
    """:func:`run` in a thread of its own, waited for; its value or what it raised."""
    out: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            out.append((True, run(coro)))
        except BaseException as exc:
            out.append((False, exc))

    thread = threading.Thread(target=target, name="balloons-async-task", daemon=True)
    thread.start()
    thread.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


def _deferred(
    handler: Handler,
    signum: int,
    loop: asyncio.AbstractEventLoop,
    main: asyncio.Task[Any],
    raised: list[BaseException],
) -> Handler:
    """``handler``, with what it raises turned into a cancellation of ``main``."""

    def on_signal(num: int, frame: FrameType | None) -> None:
        if raised and signum == signal.SIGALRM:
            handler(num, frame)  # the escalation: raise where the coroutine runs
            return
        try:
            handler(num, frame)
        except BaseException as exc:
            if raised:
                return
            raised.append(exc)
            loop.call_soon_threadsafe(main.cancel)
            if signum == signal.SIGALRM:
                signal.setitimer(signal.ITIMER_REAL, ESCALATE)

    return on_signal


def _close(loop: asyncio.AbstractEventLoop, clean: bool) -> None:
    """Cancel what the job left running in ``loop``, finish its async generators and close
    it, as ``asyncio.run`` does; the threads of its default executor are waited for only
    after a ``clean`` end (a job stopped by a timeout or a cancel leaves them, as a sync
    task's threads are left)."""
    import asyncio

    try:
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        if clean:
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
