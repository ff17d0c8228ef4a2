"""A submit checks its call: the arguments bind to the task's signature before anything is
stored, and the per-call options (``task.options(delay=, at=, key=, priority=)``) are typed;
the former ``_delay=``-style keywords still work, with a warning naming the new spelling."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import balloons
from balloons import JobStatus
from tests import async_tasks, tasks
from tests.test_worker import HoldBackend

NAMESPACE = "calls"  # the held app's own: no machine of another test writes there


def nothing_stored(r: redis.Redis) -> None:
    assert r.keys(f"{NAMESPACE}:*") == []


@pytest.fixture
def held() -> Iterator[balloons.App]:
    """An app whose machines are never launched: what a submit stores is all there is."""
    app = balloons.App(backend=HoldBackend(), namespace=NAMESPACE)
    yield app
    app.close()


def on(app: balloons.App, task: balloons.Task[Any, Any]) -> balloons.Task[Any, Any]:
    """``task`` on ``app``, in a pool of one machine: its first job takes the slot, the next
    ones wait in the queue."""
    app.pool("one", max_machines=1)
    return balloons.Task(app, task.fn, task.name, task.opts.replace(pool="one"))


def queued_priority(app: balloons.App, job: balloons.Job[Any]) -> int:
    """The priority a queued job is ordered by (its queue score: arrival - priority * 1e12)."""
    return round(-float(app.store.record(job._keys)["qscore"]) / 1e12)


SIGNATURE = r"cannot submit tests\.tasks:add\(a, b\): "


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        ((1,), {}, "missing 1 required positional argument: 'b'"),
        ((1, 2, 3), {}, "takes 2 positional arguments but 3 were given"),
        ((1, 2), {"c": 3}, "got an unexpected keyword argument 'c'"),
        ((1,), {"a": 2}, "got multiple values for argument 'a'"),
    ],
)
def test_a_call_that_does_not_bind_is_refused_and_nothing_is_stored(
    r: redis.Redis,
    held: balloons.App,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    problem: str,
) -> None:
    add = on(held, tasks.add)
    with pytest.raises(TypeError, match=SIGNATURE + problem):
        add.submit(*args, **kwargs)
    with pytest.raises(TypeError, match=SIGNATURE + problem):
        asyncio.run(add.submit_async(*args, **kwargs))
    with pytest.raises(TypeError, match=SIGNATURE + problem):
        add.options(delay=5, key="k").submit(*args, **kwargs)
    nothing_stored(r)
    add.submit(1, 2)  # the same app stores a call that binds
    assert r.keys(f"{NAMESPACE}:*")


def test_an_async_tasks_call_is_checked_too(r: redis.Redis, held: balloons.App) -> None:
    assert isinstance(async_tasks.add_async, balloons.AsyncTask)
    with pytest.raises(TypeError, match=r"add_async\(a, b\): missing 1"):
        on(held, async_tasks.add_async).submit(1)
    nothing_stored(r)


def test_calls_that_bind_are_stored(held: balloons.App) -> None:
    add, echo = on(held, tasks.add), on(held, tasks.echo)
    assert add.submit(1, b=2).status() is JobStatus.STARTING
    assert echo.submit(1, 2, x=3).status() is JobStatus.QUEUED
    assert echo.submit().status() is JobStatus.QUEUED


def test_the_signature_is_read_once_per_task(
    held: balloons.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[object] = []
    real = inspect.signature

    def counted(fn: Any, *a: Any, **k: Any) -> inspect.Signature:
        reads.append(fn)
        return real(fn, *a, **k)

    monkeypatch.setattr(inspect, "signature", counted)
    add = on(held, tasks.add)
    for i in range(3):
        add.submit(i, i)
    add.options(memory_mb=512).submit(1, 1)  # a task made by options() shares the check
    with pytest.raises(TypeError):
        add.submit(1)
    assert reads == [tasks.add.fn]


def test_the_signature_is_read_once_when_every_call_goes_through_options(
    held: balloons.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task submitted only through ``options()`` (the job service does this for each
    request with a per-call option) reads its signature once, not once per copy."""
    reads: list[object] = []
    real = inspect.signature

    def counted(fn: Any, *a: Any, **k: Any) -> inspect.Signature:
        reads.append(fn)
        return real(fn, *a, **k)

    monkeypatch.setattr(inspect, "signature", counted)
    echo = on(held, tasks.echo)
    for i in range(3):
        echo.options(delay=60 + i).submit(i)
    assert [f for f in reads if f is tasks.echo.fn] == [tasks.echo.fn]


def test_per_call_options_are_typed_keywords_of_options(held: balloons.App) -> None:
    add = on(held, tasks.add)
    later = add.options(delay=30).submit(1, 2)
    assert later.status() is JobStatus.QUEUED
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    assert add.options(at=at).submit(1, 2).status() is JobStatus.QUEUED
    keyed = add.options(key="order-42")
    assert keyed.opts is add.opts  # per-call options leave the task's own as they are
    first = keyed.submit(1, 2)
    assert keyed.submit(5, 5).id == first.id
    assert add.options(key="order-43").submit(1, 2).id != first.id
    urgent = add.options(priority=7, key="urgent").options(retries=1)  # options() chain
    assert urgent.call_options == {"key": "urgent"}
    assert (urgent.opts.priority, urgent.opts.retries, add.opts.priority) == (7, 1, 0)
    assert queued_priority(held, urgent.submit(1, 2)) == 7
    with pytest.raises(balloons.ConfigError, match="pass delay or at, not both"):
        add.options(delay=1, at=at).submit(1, 2)
    with pytest.raises(balloons.ConfigError, match="key must be a non-empty string"):
        add.options(key="").submit(1, 2)
    with pytest.raises(balloons.ConfigError, match=r"unknown task option\(s\) \['timeot'\]"):
        add.options(timeot=5)  # type: ignore[call-arg]


@contextlib.contextmanager
def deprecations(match: str) -> Iterator[list[warnings.WarningMessage]]:
    """The ``DeprecationWarning``s matching ``match`` raised in the block (at least one). Other
    warnings are recorded and dropped, not raised again at the end of the block: a socket an
    earlier test's app left to the garbage collector may warn at any moment (the suite
    ignores those, see ``filterwarnings`` in pyproject.toml)."""
    found: list[warnings.WarningMessage] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield found
    found.extend(
        w
        for w in seen
        if issubclass(w.category, DeprecationWarning) and re.search(match, str(w.message))
    )
    assert found, [str(w.message) for w in seen]


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [("_delay", "delay", 30), ("_key", "key", "order-7"), ("_priority", "priority", 3)],
)
def test_the_former_keywords_still_work_with_a_warning_naming_the_new_spelling(
    held: balloons.App, old: str, new: str, value: object
) -> None:
    add = on(held, tasks.add)
    add.submit(0, 0)  # takes the pool's one slot: the next jobs are queued
    message = rf"submit\(\.\.\., {old}=\.\.\.\) is deprecated: use task\.options\({new}=\.\.\.\)"
    with deprecations(message) as warned:
        job = add.submit(1, 2, **{old: value})
    assert warned[0].filename == __file__  # it points at the call

    async def submit() -> balloons.Job[int]:
        try:
            return await add.submit_async(1, 2, **{old: value})
        finally:
            await held.store.aclose()

    with deprecations(message) as warned:
        again = asyncio.run(submit())
    assert warned[0].filename == __file__
    rec = held.store.record(job._keys)
    if new == "delay":
        assert job.status() is JobStatus.QUEUED and float(rec["due"]) > 0
    elif new == "key":
        assert again.id == job.id == add.options(key="order-7").submit(1, 2).id
    else:
        assert queued_priority(held, job) == queued_priority(held, again) == 3
