"""``balloons.machine.coroutine.run``: an async task's coroutine in an event loop of its own, where the
worker's job-ending signals (whose handlers raise) cancel the coroutine through the loop and
their exception is raised once it has ended. Real signals, sent to this process."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from balloons.machine.coroutine import run


class Ended(BaseException):
    """What the test's signal handlers raise, as the worker's raise TaskTimeout."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Ended(signal.Signals(signum).name)


@pytest.fixture
def handlers() -> Iterator[None]:
    """The worker's way: SIGUSR1 and SIGALRM handlers that raise; pytest's own restored."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGALRM)}
    timer = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if any
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s in saved:
        signal.signal(s, _raise)
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    signal.setitimer(signal.ITIMER_REAL, *timer)


def _signal_myself(signum: int) -> None:
    signal.pthread_kill(threading.main_thread().ident or 0, signum)


@pytest.mark.usefixtures("handlers")
def test_a_raising_handler_cancels_the_coroutine_which_cleans_up_then_it_is_raised() -> None:
    seen: list[str] = []

    async def task() -> str:
        try:
            _signal_myself(signal.SIGUSR1)  # its handler runs here, at once
            seen.append("went on")  # what it raises did not land in the coroutine
            await asyncio.sleep(3600)
            return "never"
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0)  # async cleanup still works: the loop is sound
            seen.append("cleaned up")

    with pytest.raises(Ended, match="SIGUSR1"):
        run(task())
    assert seen == ["went on", "cancelled", "cleaned up"]
    assert signal.getsignal(signal.SIGUSR1) is _raise  # the worker's handler is back


@pytest.mark.usefixtures("handlers")
def test_a_coroutine_that_swallows_the_cancellation_still_ends_with_the_exception() -> None:
    async def task() -> int:
        try:
            _signal_myself(signal.SIGUSR1)
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return 5  # as a sync task's `except BaseException` would
        return 0

    with pytest.raises(Ended, match="SIGUSR1"):
        run(task())


@pytest.mark.usefixtures("handlers")
def test_a_coroutine_that_never_awaits_gets_the_timeout_raised_where_it_runs() -> None:
    async def task() -> int:
        signal.setitimer(signal.ITIMER_REAL, 0.01)  # its run timeout
        n = 0
        while True:  # CPU-bound, never awaits, swallows every Exception
            try:
                n += 1
            except Exception:
                continue

    with pytest.raises(Ended, match="SIGALRM"):
        run(task())
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # nothing left armed


@pytest.mark.usefixtures("handlers")
def test_values_errors_and_what_a_job_leaves_running() -> None:
    left: list[str] = []

    async def forgotten() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            left.append("cancelled at the end")

    async def ok() -> dict[str, Any]:
        asyncio.get_running_loop().create_task(forgotten())
        await asyncio.sleep(0)
        return {"n": 1}

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("its own error")

    assert run(ok()) == {"n": 1}
    assert left == ["cancelled at the end"]
    with pytest.raises(ValueError, match="its own error"):
        run(fails())
