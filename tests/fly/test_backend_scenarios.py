"""More of the core suite's job scenarios (``tests/test_pools.py``, ``tests/test_supervisor.py``)
with FlyBackend against the emulator served over real HTTP: retries on new machines, a bigger
machine after running out of memory, warm reuse under a pool's cap, delayed jobs,
cancellation, and orphan collection through ``list`` by metadata."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import balloons
from balloons import JobFailed, JobStatus
from tests import tasks
from tests.waiting import wait_for

from .conftest import FlyRig
from .test_backend_jobs import CREATE, _wait_for, on

STOP = "POST /v1/apps/{app_name}/machines/{machine_id}/stop"
DELETE = "DELETE /v1/apps/{app_name}/machines/{machine_id}"
LIST = "GET /v1/apps/{app_name}/machines"


wait_until = wait_for


def in_pool(app: balloons.App, task: balloons.Task[Any, Any], pool: str) -> balloons.Task[Any, Any]:
    """``task`` submitted through ``app`` to ``pool``."""
    return balloons.Task(app, task.fn, task.name, task.opts.replace(pool=pool))


def machine_of(rig: FlyRig, attempt: balloons.AttemptInfo) -> dict[str, Any]:
    (found,) = [
        m for m in rig.machines(include_deleted="true") if m["id"] == attempt.machine_id
    ]  # fmt: skip
    return found


def test_task_errors_retry_on_new_machines_then_succeed(rig: FlyRig, tmp_path: Path) -> None:
    app = rig.app()
    sup = app.start_supervisor(interval=0.2)  # launches each retry as soon as it is due
    try:
        job = on(app, tasks.flaky).submit(str(tmp_path / "n"), 2)
        assert job.result(timeout=60) == 3
    finally:
        sup.stop()
    attempts = job.info().attempts
    assert [a.outcome for a in attempts] == ["FAILED", "FAILED", "SUCCEEDED"]
    assert [a.reason for a in attempts[:2]] == ["task_error", "task_error"]
    # Each attempt ran on a machine of its own, made by one create (idle_timeout=0: no reuse).
    machines = [machine_of(rig, a) for a in attempts]
    assert len({m["id"] for m in machines}) == 3
    assert [m["config"]["metadata"]["balloons_attempt"] for m in machines] == ["1", "2", "3"]
    assert rig.stats()["calls"][CREATE] == 3


def test_machine_loss_retries_on_a_new_machine(rig: FlyRig, tmp_path: Path) -> None:
    app = rig.app()
    app.pool("default", isolation="none")  # the task's process is the machine's
    job = on(app, tasks.dies_once).submit(str(tmp_path / "n"))
    assert job.result(timeout=60) == 2
    first, second = job.info().attempts
    assert first.reason == "killed" and first.outcome == "FAILED"
    assert second.outcome == "SUCCEEDED" and second.machine_id != first.machine_id
    # The reason came from the first machine's exit event, which Fly keeps after destroying it.
    lost = app.backend.inspect(first.machine_id or "")
    assert lost is not None and lost.state == "destroyed" and lost.signal == signal.SIGKILL


def test_out_of_memory_retries_on_a_bigger_machine(rig: FlyRig) -> None:
    app = rig.app()
    sup = app.start_supervisor(interval=0.2)
    try:
        job = on(app, tasks.hungry).submit(200)  # 200 MiB against 128 MiB, then 512 MiB
        assert job.result(timeout=60) == 200
    finally:
        sup.stop()
    attempts = job.info().attempts
    assert attempts[0].reason == "oom" and attempts[-1].outcome == "SUCCEEDED"
    guests = [machine_of(rig, a)["config"]["guest"]["memory_mb"] for a in attempts]
    assert guests[0] == 128 and guests[-1] == 512


def test_a_machine_killed_for_its_memory_fails_its_job_with_oom(rig: FlyRig) -> None:
    # Python's MemoryError never comes: the worker dies without a word, and the reason is read
    # from the machine's exit event (oom_killed), as on Fly.
    app = rig.app()
    app.pool("default", isolation="none")  # the task's process is the machine's
    job = on(app, tasks.grow_shared).submit(400)  # 400 MiB against 128 MiB
    with pytest.raises(JobFailed) as info:
        job.result(timeout=60)
    assert info.value.reason == "oom"
    assert "oom_killed" in info.value.error_message
    (attempt,) = job.info().attempts
    gone = app.backend.inspect(attempt.machine_id or "")
    assert gone is not None and gone.oom_killed and gone.signal == signal.SIGKILL


def test_warm_machines_take_queued_jobs_without_an_api_call(rig: FlyRig) -> None:
    app = rig.app()
    app.pool("warm", max_machines=1, idle_timeout=1.0)
    add = in_pool(app, tasks.add, "warm")
    jobs = [add.submit(i, i) for i in range(3)]  # the cap is 1: two of them wait
    assert [j.result(timeout=30) for j in jobs] == [0, 2, 4]
    runs = [j.info().attempts[0] for j in jobs]
    assert len({a.machine_id for a in runs}) == 1
    assert [a.warm for a in runs] == [False, True, True]
    assert rig.stats()["calls"] == {CREATE: 1}
    rig.wait_all_destroyed()  # the machine idled out, gave its slot back, and was destroyed
    assert app.store.pool_stats("warm")["machines"] == 0


def test_machines_created_with_no_job_keep_the_pools_heartbeat(make_rig: Any) -> None:
    """Under Fly's create limit, jobs of a burst go to the queue and the machines created for
    them from the launcher take them there: such a machine never runs CLAIM, and learns the
    pool's heartbeat from its first beat. Beating at the default 2 s instead, it would let its
    lease (5 heartbeats of 0.2 s) lapse while it runs, and lose its job."""
    from balloons.fly.emulator import Faults

    rig = make_rig(faults=Faults(rate_limit=True))
    app = rig.app()
    app.pool("quick", max_machines=4, idle_timeout=0, heartbeat=0.2)
    sleep = in_pool(app, tasks.sleep, "quick")
    sup = app.start_supervisor(interval=0.1)  # reclaims any slot whose lease lapses
    try:
        jobs = [sleep.submit(2.0) for _ in range(4)]
        assert [j.result(timeout=60) for j in jobs] == [2.0] * 4
    finally:
        sup.stop()
    slots = [j.info().attempts[0].slot or "" for j in jobs]
    assert any(slot.endswith("-0") for slot in slots), slots  # created from the launcher
    assert all(len(j.info().attempts) == 1 for j in jobs)


def test_a_delayed_job_gets_its_machine_when_due(rig: FlyRig) -> None:
    app = rig.app()
    at = time.time()
    job = on(app, tasks.add).options(delay=1.0).submit(1, 2)
    assert job.status() is JobStatus.QUEUED
    assert rig.stats()["calls"] == {}  # nothing is created before the job is due
    assert job.result(timeout=30) == 3  # the waiting client launches it, no supervisor
    assert (job.info().started_at or 0) - at >= 1.0
    assert rig.stats()["calls"] == {CREATE: 1}


def test_cancelling_a_running_job_ends_it_and_its_machine(rig: FlyRig) -> None:
    app = rig.app()
    app.pool("solo", max_machines=1, idle_timeout=0)
    job = in_pool(app, tasks.sleep, "solo").submit(30)
    wait_until(lambda: job.status() is JobStatus.RUNNING)
    assert job.cancel() is True
    assert job.status() is JobStatus.CANCELLED
    with pytest.raises(JobFailed) as info:
        job.result(timeout=5)
    assert info.value.reason == "cancelled"
    # The worker noticed within a heartbeat and left: its machine destroyed itself.
    wait_until(lambda: app.store.pool_stats("solo")["machines"] == 0)
    rig.wait_all_destroyed()
    assert STOP not in rig.stats()["calls"]


def test_cancel_stops_a_fly_machine_that_ignores_it(rig: FlyRig) -> None:
    app = rig.app()
    app.pool("solo", max_machines=1, idle_timeout=0, heartbeat=0.5)
    job = in_pool(app, tasks.deaf_sleep, "solo").submit(60)
    wait_until(lambda: job.status() is JobStatus.RUNNING)
    machine = job.info().machine_id or ""
    assert job.cancel(grace=0.5, wait=True) is True
    assert rig.stats()["calls"][STOP] == 1
    wait_until(lambda: (app.backend.inspect(machine) or _gone()).state == "destroyed")
    stopped = app.backend.inspect(machine)
    assert stopped is not None and stopped.requested_stop
    # A Fly machine that is stopped says nothing to Redis: its slot is reclaimed once its
    # lease lapses, by the supervisor (no client waits on a cancelled job).
    sup = app.start_supervisor(interval=0.2)
    try:
        wait_until(lambda: app.store.pool_stats("solo")["machines"] == 0)
    finally:
        sup.stop()
    assert job.status() is JobStatus.CANCELLED


def test_orphaned_machines_are_found_by_metadata_and_destroyed(rig: FlyRig, tmp_path: Path) -> None:
    app = rig.app()
    app.pool("default", isolation="none")  # the task's process is the machine's
    pidfile = tmp_path / "pid"
    job = on(app, tasks.pid_then_sleep).submit(str(pidfile), 30)
    pid = int(_wait_for(pidfile))
    os.kill(pid, signal.SIGSTOP)  # so that its worker cannot notice it lost its slot
    machine = job.info().machine_id or ""
    slot = job.info().attempts[0].slot or ""
    pk = app.store.keys(job.id).pool
    app.store.redis.zrem(pk.slots, slot)
    app.store.redis.hdel(pk.slot, slot)
    rig.reset_stats()
    sup = app.supervisor(orphan_min_age=0)
    assert [m.id for m in sup.collect_orphans(dry_run=True)] == [machine]
    assert rig.emulator.machines[machine].state == "started"
    assert [m.id for m in sup.collect_orphans()] == [machine]
    calls = rig.stats()["calls"]
    assert calls[LIST] == 2 and calls[DELETE] == 1  # one listing by metadata per sweep
    wait_until(lambda: (app.backend.inspect(machine) or _gone()).state == "destroyed")
    job.cancel()


def _gone() -> balloons.MachineInfo:
    return balloons.MachineInfo(id="", backend="fly", state="gone")
