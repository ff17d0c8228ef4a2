"""``async def`` tasks the suite submits, on the app of :mod:`tests.tasks` (one app mixes sync
and async tasks). Machines import this module to find them; :mod:`tests.tasks` stays free of
``asyncio``, so a machine running only its tasks shows whether the worker imports it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import balloons
from tests.tasks import _count, app


@app.task(timeout=30)
async def add_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@app.task(timeout=1)
async def sleep_past_timeout_async(seconds: float, path: str = "") -> float:
    """Awaits past its timeout; says in ``path`` that its ``finally`` ran."""
    try:
        await asyncio.sleep(seconds)
    finally:
        if path:
            Path(path).write_text("cleaned up")
    return seconds


@app.task(timeout=1)
async def spin_python_async() -> int:
    """CPU-bound pure Python that never reaches an ``await`` and swallows every
    ``Exception`` it meets."""
    n = 0
    while True:
        try:
            n += 1
        except Exception:  # a task that tries to outlive its timeout
            continue


@app.task(timeout=30, retries=3, retry_backoff=0.05, retry_on=(ConnectionError,))
async def flaky_async(path: str, failures: int) -> int:
    """Fails with ConnectionError ``failures`` times, then returns the attempt count."""
    n = _count(path)
    await asyncio.sleep(0)
    if n <= failures:
        raise ConnectionError(f"attempt {n} fails")
    return n


@app.task(timeout=30, retries=3, retry_backoff=0.05, retry_on=(ConnectionError,))
async def wrong_kind_async(path: str) -> None:
    _count(path)
    await asyncio.sleep(0)
    raise KeyError("not retried: not a ConnectionError")


@app.task(timeout=30, retries=1)
async def asks_retry_async(path: str, delay: float) -> int:
    n = _count(path)
    if n == 1:
        raise balloons.Retry("not yet", delay=delay)
    return n


@app.task(pool="solo", timeout=60)
async def solo_sleep_async(seconds: float, path: str) -> float:
    """Sleeps in the pool of one machine; says in ``path`` that it started, then that its
    ``finally`` ran."""
    Path(path).write_text("started")
    try:
        await asyncio.sleep(seconds)
    finally:
        Path(path).write_text("cleaned up")
    return seconds


@app.task(timeout=30)
async def gather_then_leave_a_task(n: int) -> list[int]:
    """Runs coroutines together, and leaves one running when it returns."""

    async def square(i: int) -> int:
        await asyncio.sleep(0.01)
        return i * i

    asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    return list(await asyncio.gather(*(square(i) for i in range(n))))
