"""The asyncio twins of the read and control calls of ``Job`` and ``App``: each runs the same
query as its sync call (:mod:`balloons.store.queries`), on the asyncio client, and gives the same
answer against the suite's Valkey; while one waits on Redis, the event loop runs others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import balloons
from balloons import App, Job, JobNotFound, JobStatus
from balloons.logs import LogLine
from balloons.store.keys import JobKeys
from balloons.testing import inline
from tests import inline_tasks
from tests.holdproxy import HoldProxy
from tests.test_worker import HoldBackend


def run(coro: Awaitable[Any], app: App) -> Any:
    """Run a twin in an event loop of its own, closing the loop's connections after."""

    async def main() -> Any:
        try:
            return await coro
        finally:
            await app.store.aclose()

    return asyncio.run(main())


@pytest.fixture
def ran() -> Iterator[Job[list[int]]]:
    """A job that ran (inline), with log lines and progress."""
    with inline(inline_tasks.app):
        job = inline_tasks.reports.submit(3)
        assert job.status() is JobStatus.SUCCEEDED
        yield job


def test_reads_of_a_job_that_ran(ran: Job[list[int]]) -> None:
    app = ran.app
    assert isinstance(app, App)
    first = ran.logs()[0].id
    pairs: list[tuple[Any, Callable[[], Awaitable[Any]]]] = [
        (ran.status(), ran.status_async),
        (ran.info(), ran.info_async),
        (ran.progress(), ran.progress_async),
        (ran.logs(), ran.logs_async),
        (ran.logs(after=first), lambda: ran.logs_async(after=first)),
        (ran.logs(tail=1), lambda: ran.logs_async(tail=1)),
        (ran.cost(), ran.cost_async),
        (ran.queue_position(), ran.queue_position_async),
        (app.jobs(), app.jobs_async),
        (app.jobs(limit=1, pool="default"), lambda: app.jobs_async(limit=1, pool="default")),
        (app.costs(), app.costs_async),
        (app.costs(pools=["default"], limit=1), lambda: app.costs_async(["default"], 1)),
        (ran.cancel(), ran.cancel_async),  # False: it has ended
    ]
    for sync, twin in pairs:
        assert run(twin(), app) == sync
    assert run(ran.result_async(timeout=0), app) == ran.result(timeout=0) == [0, 1, 2]

    async def streamed() -> list[LogLine]:
        return [line async for line in ran.stream_logs_async()]

    assert run(streamed(), app) == list(ran.stream_logs()) == ran.logs()
    assert ran.progress() == (0.5, "half way")
    assert [line.text for line in ran.logs()] == ["line 0", "line 1", "line 2"]
    assert ran.cancel() is False


def test_a_missing_job_and_bad_arguments_raise_alike() -> None:
    app = App(backend=HoldBackend())
    gone = app.job("default.01jd3x9k2m8vq4t7w0c5r6y1zh")
    for sync, twin in [(gone.status, gone.status_async), (gone.info, gone.info_async)]:
        with pytest.raises(JobNotFound):
            sync()
        with pytest.raises(JobNotFound):
            run(twin(), app)
    assert gone.progress() is None and run(gone.progress_async(), app) is None
    with pytest.raises(balloons.ConfigError, match="limit"):
        run(app.jobs_async(limit=0), app)
    with pytest.raises(JobNotFound):
        run(app.cancel_async(gone.id), app)


def test_control_calls_on_queued_jobs() -> None:
    """Two pools in the same state; the sync call on one, its twin on the other."""
    app = App(backend=HoldBackend())
    app.pool("a", max_machines=1)
    app.pool("b", max_machines=1)
    add = inline_tasks.add
    queued = {}
    for pool in ("a", "b"):
        task = balloons.Task(app, add.fn, add.name, add.opts.replace(pool=pool))
        task.submit(1, 1)  # takes the pool's one slot (its machine is held: never runs)
        queued[pool] = (task.submit(1, 2), task.submit(1, 3))
    (a1, a2), (b1, b2) = queued["a"], queued["b"]
    assert (a1.queue_position(), a2.queue_position()) == (1, 2)
    assert run(b1.queue_position_async(), app) == 1
    assert run(b2.queue_position_async(), app) == 2

    assert a1.cancel() is True
    assert run(b1.cancel_async(), app) is True
    assert a1.status() is b1.status() is JobStatus.CANCELLED
    assert run(b1.status_async(), app) is JobStatus.CANCELLED
    assert a2.queue_position() == run(b2.queue_position_async(), app) == 1

    again_a = app.retry(a1.id)
    again_b = run(app.retry_async(b1.id), app)
    assert again_a.status() is run(again_b.status_async(), app) is JobStatus.QUEUED
    assert again_a.info().task == run(again_b.info_async(), app).task == add.name

    a2.forget()
    run(b2.forget_async(), app)
    for gone in (a2, b2):
        with pytest.raises(JobNotFound):
            gone.status()


def test_a_twin_waiting_on_redis_leaves_the_loop_free(
    redis_url: str, secret: str, tmp_path: Path
) -> None:
    """Each twin's first command is held in a relay to Redis until another coroutine has run:
    a twin that waited on Redis with the loop blocked would end before that coroutine ran."""
    proxy = HoldProxy(redis_url.removeprefix("unix://"), tmp_path)
    app = App(redis_url=proxy.url, secret=secret, backend=HoldBackend())
    job = balloons.Task(app, inline_tasks.add.fn, inline_tasks.add.name, inline_tasks.add.opts)
    job_ = job.submit(1, 2)
    twins: list[Callable[[], Awaitable[Any]]] = [
        job_.status_async,
        job_.info_async,
        job_.progress_async,
        job_.logs_async,
        job_.cost_async,
        job_.queue_position_async,
        app.jobs_async,
        app.costs_async,
        lambda: app.retry_async(job_.id),
        job_.cancel_async,
        job_.forget_async,
    ]

    async def main() -> list[list[str]]:
        await job_.status_async()  # the asyncio client is made (and the price table read)
        await job_.cost_async()
        orders = []
        for twin in twins:
            order: list[str] = []

            async def other(order: list[str] = order) -> None:
                order.append("other ran")
                proxy.release()

            async def waiting(
                twin: Callable[[], Awaitable[Any]] = twin, order: list[str] = order
            ) -> None:
                await twin()
                order.append("twin ended")

            proxy.hold()
            await asyncio.gather(waiting(), other())
            orders.append(order)
        await app.store.aclose()
        return orders

    try:
        orders = asyncio.run(main())
    finally:
        proxy.close()
        app.close()
    assert orders == [["other ran", "twin ended"]] * len(twins)


def test_an_altered_record_reads_the_same_through_both(ran: Job[list[int]], r: Any) -> None:
    """Hostile input: the twins decode what Redis holds as their sync calls do."""
    app = ran.app
    assert isinstance(app, App)
    jk = JobKeys.of("balloons", ran.id)
    assert r.exists(jk.job)
    r.hset(jk.job, mapping={"status": "\x1b[31mDONE", "attempt": "-7", "progress": "nan"})
    r.xadd(jk.logs, {"m": b"\xff\xfe", "a": "x", "t": "later"})
    assert ran.status() is JobStatus.INVALID
    for sync, twin in [
        (ran.status(), ran.status_async),
        (ran.info(), ran.info_async),
        (ran.progress(), ran.progress_async),
        (ran.logs(), ran.logs_async),
        (app.jobs(), app.jobs_async),
    ]:
        assert run(twin(), app) == sync
