"""The dispatcher's boundaries: the decoded replies it acts on, the task options as one list,
and the backend capabilities it checks."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import balloons
from balloons.backends.base import BackgroundLaunches, Imaged, RateLimited, Restartable
from balloons.dispatch import Placed, placed
from balloons.launcher import Assigned, Launch, assigned
from balloons.task import TaskOptions
from tests.test_worker import HoldBackend

SECRET = "s" * 32


class _Backend(HoldBackend):
    """The five calls of the contract, launching nothing."""


class _Restartable(_Backend):
    def start(self, machine_id: str) -> None:
        return None


def test_submit_replies_are_decoded_into_named_fields() -> None:
    launch = [1, b"launch", b"01jd3x9k2m8vq4t7w0c5r6y1zh-1", b"01jd3x9k2m8vq4t7w0c5r6y1zh",
              b"1", b"2", b"512"]  # fmt: skip
    assert placed(launch) == Placed(1, "launch", "01jd3x9k2m8vq4t7w0c5r6y1zh", 1, 2, 512)
    assert placed([1, "launch", "s", "u", "1", "1", "256"]).memory_mb == 256  # RESP3 text
    assert placed([1, b"queued", b"3"]) == Placed(1, "queued")
    assert placed([1, b"warm", b""]).where == "warm"
    assert placed([2, b"01jd3x9k2m8vq4t7w0c5r6y1zh"]) == Placed(
        2, "existing", "01jd3x9k2m8vq4t7w0c5r6y1zh"
    )
    assert placed([0]) == Placed(0, "")


def test_assign_replies_are_decoded_into_named_fields() -> None:
    assert assigned(["start", "m1", "u1", "2", "512"]) == Assigned("start", "m1", "u1", 2, 512)
    assert assigned(["create", "u2", "1", "256"]) == Assigned("create", "", "u2", 1, 256)


def test_a_launch_is_a_named_record_that_unpacks_as_before() -> None:
    launch = Launch("default", "u1", 1, 2, 512, 30.0, True)
    assert (launch.pool, launch.attempt, launch.keep) == ("default", 1, True)
    assert launch[:2] == ("default", "u1")  # the launcher's log line
    assert Launch("p", "u", 0, 1, 256, 60.0).keep is False


def test_the_task_options_are_one_list() -> None:
    # One definition: the record's annotated fields, in order, each with its default.
    assert TaskOptions.__match_args__ == tuple(TaskOptions.__annotations__)
    assert TaskOptions() == TaskOptions(
        **{n: getattr(TaskOptions, n) for n in TaskOptions.__match_args__}
    )
    opts = TaskOptions(memory_mb=512, retry_on=(ValueError,), max_cost=1.5)
    assert (opts.memory_mb, opts.cpus, opts.timeout, opts.max_cost) == (512, None, 600.0, 1.5)
    assert pickle.loads(pickle.dumps(opts)) == opts
    with pytest.raises(TypeError, match=r"unknown task option\(s\) \['memroy_mb'\]"):
        TaskOptions(memroy_mb=5)  # type: ignore[call-arg]
    with pytest.raises(balloons.ConfigError, match=r"priority must be an integer in -1000\.\.1000"):
        TaskOptions(priority=1001)


def test_app_task_takes_every_option_and_refuses_others() -> None:
    app = balloons.App(redis_url="redis://127.0.0.1:1", secret=SECRET, backend=_Backend())
    every: dict[str, Any] = {
        "cpus": 2, "memory_mb": 512, "timeout": 5.0, "pool": "p", "retries": 3,
        "retry_backoff": 2.0, "retry_backoff_max": 9.0, "retry_on": (KeyError,),
        "retry_memory_factor": 2.0, "retry_memory_max": 2048, "priority": 7, "max_cost": 3.0,
    }  # fmt: skip
    assert set(every) == set(TaskOptions.__match_args__)
    task = app.task(name="every", **every)(len)
    assert task.opts == TaskOptions(**every)
    assert app.task(name="listed", retry_on=[KeyError])(len).opts.retry_on == (KeyError,)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown task option"):
        app.task(name="bad", memroy_mb=5)(len)  # type: ignore[call-overload]
    with pytest.raises(balloons.ConfigError, match="unknown task option"):
        task.options(memroy_mb=5)  # type: ignore[call-arg]


def test_backend_capabilities_are_checked_protocols() -> None:
    fly = balloons.FlyBackend()
    assert isinstance(fly, RateLimited | BackgroundLaunches | Restartable)
    assert isinstance(fly, RateLimited) and isinstance(fly, Restartable)
    assert isinstance(fly, BackgroundLaunches) and fly.launches_in_background
    local = balloons.LocalBackend()
    assert isinstance(local, balloons.Backend)
    assert not isinstance(local, RateLimited | BackgroundLaunches | Restartable)
    assert isinstance(_Restartable(), Restartable) and not isinstance(_Backend(), Restartable)


def test_a_backend_whose_machines_run_one_image_is_a_checked_protocol() -> None:
    fly = balloons.App(backend=balloons.FlyBackend(token="t", app="a", image="reg/a:v9")).backend
    assert isinstance(fly, Imaged) and fly.image == "reg/a:v9"
    assert not isinstance(balloons.LocalBackend(), Imaged)
    assert not isinstance(_Restartable(), Imaged)


def test_standby_pools_need_a_backend_that_can_start_machines() -> None:
    app = balloons.App(redis_url="redis://127.0.0.1:1", secret=SECRET, backend=_Restartable())
    assert app.pool("sb", max_machines=2, standby=1).standby == 1
    refused = balloons.App(redis_url="redis://127.0.0.1:1", secret=SECRET, backend=_Backend())
    with pytest.raises(balloons.ConfigError, match="_Backend has no start"):
        refused.pool("sb", max_machines=2, standby=1)


def test_a_machine_spec_made_fast_is_the_dataclass_s() -> None:
    import dataclasses

    from balloons.info import MachineSpec
    from balloons.launcher import spec_of

    app = balloons.App(redis_url="redis://127.0.0.1:1", secret=SECRET, backend=_Backend())
    app.pool("p", protocol="")
    made = app.dispatcher.slots.spec("p", "01jd3x9k2m8vq4t7w0c5r6y1zh", 1, 2, 512, 30.0, True)
    fields = {f.name: getattr(made, f.name) for f in dataclasses.fields(MachineSpec)}
    assert made == MachineSpec(**fields) and repr(made) == repr(MachineSpec(**fields))
    assert spec_of(fields) == MachineSpec(**fields)
    assert made.env["BALLOONS_JOB"] == "p.01jd3x9k2m8vq4t7w0c5r6y1zh/1"
    assert made.env["BALLOONS_STANDBY"] == "1" and made.keep
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.cpus = 4  # type: ignore[misc]
    again = app.dispatcher.slots.spec("p", "01jd3x9k2m8vq4t7w0c5r6y1zz", 1, 2, 512, 30.0)
    assert "BALLOONS_STANDBY" not in again.env and again.env is not made.env


def test_a_job_launched_after_others_queued_gets_its_machine(redis_url: str) -> None:
    """A pool whose last job was queued or delayed makes no machine ready while Redis
    places the next job; one that gets a slot all the same is launched with its own."""
    backend = _Backend()
    app = balloons.App(redis_url=redis_url, secret=SECRET, backend=backend)
    try:
        app.pool("p", max_machines=5)
        task = app.task(pool="p", name="t")(len)
        first = task.submit("a")
        delayed = task.options(delay=600).submit("b")
        later = task.submit("c")
        assert [s.job_id for s in backend.specs] == [first.id, later.id]
        assert backend.specs[1].env["BALLOONS_JOB"] == f"{later.id}/1"
        assert delayed.status().value == "QUEUED"
    finally:
        app.close()
