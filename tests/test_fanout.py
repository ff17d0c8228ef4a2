"""Fan-out end to end: submit_many in pipelined batches, map/starmap in order or as jobs end,
against a real Valkey and real local machines."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any

import pytest
import redis

import balloons
from balloons import JobFailed, SerializationError
from balloons.errors import PartiallySubmitted
from balloons.fanout import as_completed
from balloons.store.batch import RUN
from balloons.store.resp import RespClient
from tests import tasks

pytestmark = pytest.mark.machines


def _stored_jobs(r: redis.Redis) -> list[bytes]:
    return [k for k in r.keys("*:job:*") if b":machine:" not in k]


def test_submit_many_runs_every_call_and_keeps_call_order() -> None:
    jobs = tasks.add.submit_many([(i, 1) for i in range(6)] + [tasks.add.s(a=10, b=5)])
    assert [j.result(timeout=60) for j in jobs] == [1, 2, 3, 4, 5, 6, 15]
    assert len({j.id for j in jobs}) == 7


def test_submit_many_costs_one_round_trip_per_batch(
    monkeypatch: pytest.MonkeyPatch, r: redis.Redis
) -> None:
    writes: list[int] = []
    real_send = RespClient.send

    def counted(self: RespClient, commands: list[list[Any]], wire: bytes | None = None) -> None:
        writes.append(len(commands))
        real_send(self, commands, wire)

    monkeypatch.setattr(RespClient, "send", counted)
    later = tasks.add.options(delay=3600)  # stored and delayed: no machine starts
    jobs = later.submit_many([(i, i) for i in range(1234)], batch_size=500)
    assert len(writes) == math.ceil(1234 / 500)  # 3 writes, not 1,234
    assert max(writes) <= math.ceil(500 / RUN) + 1  # a script per RUN jobs (and an SADD)
    assert len(jobs) == 1234
    assert len(_stored_jobs(r)) == 1234
    assert [j.status() for j in jobs[:3]] == [balloons.JobStatus.QUEUED] * 3


@pytest.mark.parametrize(
    ("calls", "error", "named"),
    [
        ([(1, 2), (3, 4), (5,)], TypeError, "call 2"),
        ([(1, 2), (object(), 1)], SerializationError, "call 1"),
        ([(1, 2), tasks.echo.s(1)], TypeError, "call 1 of tests.tasks:add.submit_many is a call"),
        ([(1, 2), [3, 4]], TypeError, "call 1 of tests.tasks:add.submit_many is list"),
    ],
)
def test_a_bad_call_names_its_index_and_nothing_is_stored(
    r: redis.Redis, calls: list[Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error) as info:
        tasks.add.submit_many(calls)
    assert named in str(info.value) + " ".join(getattr(info.value, "__notes__", []))
    assert _stored_jobs(r) == []


def test_s_checks_the_call_against_the_signature() -> None:
    with pytest.raises(TypeError, match=r"tests\.tasks:add"):
        tasks.add.s(1, 2, 3)
    assert repr(tasks.add.s(1, b=2)) == "tests.tasks:add.s(1, b=2)"


@pytest.mark.parametrize("size", [0, -1, 10_001, True, 2.5])
def test_a_bad_batch_size_is_refused(size: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="batch_size"):
        tasks.add.submit_many([(1, 2)], batch_size=size)


def test_a_redis_that_is_gone_reports_which_jobs_are_unsure(app: balloons.App) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    gone = balloons.App(redis_url=f"redis://127.0.0.1:{port}/0", secret="x" * 32)
    add = gone.task(tasks.add.fn)
    with pytest.raises(PartiallySubmitted) as info:
        add.submit_many([(i, i) for i in range(7)], batch_size=3)
    err = info.value
    assert err.jobs == []
    assert len(err.unsure) == 3
    assert err.unsent == 4
    assert isinstance(err, balloons.StoreError)
    gone.close()


def test_map_yields_results_in_input_order() -> None:
    results = tasks.add.starmap([(1, 2), (3, 4), (5, 6)])
    assert len(results) == 3
    assert list(results) == [3, 7, 11]
    assert [j.status() for j in results.jobs] == [balloons.JobStatus.SUCCEEDED] * 3


def test_map_unordered_yields_the_first_to_end_first() -> None:
    results = tasks.sleep.map([4.0, 0.0], ordered=False, timeout=120)
    assert list(results) == [0.0, 4.0]


def test_a_failed_input_raises_at_its_position_or_is_returned() -> None:
    with pytest.raises(JobFailed, match="first"):
        list(tasks.fail.map(["first", "second"]))
    got = list(tasks.fail.map(["a", "b"], return_exceptions=True))
    assert [type(g) for g in got] == [JobFailed, JobFailed]
    assert [g.error_message for g in got if isinstance(g, JobFailed)] == ["a", "b"]


def test_map_async_iterates_in_asyncio() -> None:
    async def main() -> list[Any]:
        mapped = await tasks.echo.map_async([1, 2])
        return [r async for r in mapped]

    assert asyncio.run(main()) == [{"args": [1], "kwargs": {}}, {"args": [2], "kwargs": {}}]


def test_submit_many_async_returns_the_handles() -> None:
    async def main() -> list[int]:
        jobs = await tasks.add.submit_many_async([(1, 1), (2, 2)])
        return [await j.result_async(timeout=60) for j in jobs]

    assert asyncio.run(main()) == [2, 4]


def test_as_completed_gives_an_ended_job_whose_token_is_gone(r: redis.Redis) -> None:
    job = tasks.add.submit(1, 1)
    assert job.result(timeout=60) == 2
    r.delete(job._keys.done)
    assert list(as_completed([job], timeout=30)) == [0]


def test_as_completed_leaves_the_done_token_for_other_waiters(r: redis.Redis) -> None:
    jobs = tasks.add.submit_many([(1, 1), (2, 2)])
    assert sorted(as_completed(jobs, timeout=60)) == [0, 1]
    for job in jobs:
        assert r.llen(job._keys.done) == 1
        assert 0 < r.ttl(job._keys.done) <= tasks.app.settings.record_ttl
    assert [j.result(timeout=1) for j in jobs] == [2, 4]


def test_map_runs_under_the_pools_cap() -> None:
    stamps = list(tasks.stamp.map([0.5] * 6, timeout=120))
    events = sorted([(s["start"], 1) for s in stamps] + [(s["end"], -1) for s in stamps])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2  # the capped pool's max_machines
