"""Tasks the test mode's tests run, inline and on machines (machines import this module)."""

from __future__ import annotations

import time
from typing import Any

import balloons

app = balloons.App()

#: What the inline runs of ``flaky`` saw (inline: this process's own list).
CALLS: list[int] = []


@app.task(timeout=30)
def add(a: int, b: int) -> int:
    print(f"adding {a} and {b}")
    return a + b


@app.task(timeout=30, retries=2, retry_backoff=0)
def flaky(succeed_on: int) -> int:
    CALLS.append(succeed_on)
    if len(CALLS) < succeed_on:
        raise ValueError(f"attempt {len(CALLS)} fails")
    return len(CALLS)


@app.task(timeout=30, retries=1, retry_backoff=0)
def always_fails(message: str) -> None:
    raise KeyError(message)


@app.task(timeout=30, retries=1, retry_backoff=0.2)
def fails_with_backoff() -> None:
    CALLS.append(0)
    raise RuntimeError(f"failure {len(CALLS)}")


@app.task(timeout=30)
def unencodable() -> Any:
    return {1, 2}


@app.task(timeout=0.3)
def sleeps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(timeout=30)
def reports(n: int) -> list[int]:
    for i in range(n):
        print(f"line {i}")
    balloons.progress(0.5, "half way")
    return list(range(n))


@app.task(timeout=30)
def add_twice(a: int, b: int) -> int:
    """Submits a job of its own and waits for it (inline: run at once, inside this run)."""
    return add.submit(a, b).result(timeout=30) * 2


@app.task(timeout=30)
async def add_async(a: int, b: int) -> int:
    import asyncio

    await asyncio.sleep(0)
    return a + b


@app.task(timeout=1)
async def sleeps_async(seconds: float) -> float:
    import asyncio

    await asyncio.sleep(seconds)
    return seconds
