"""The supervisor: reclaims dead and never-booted machines, fills pools, collects orphans, and
several at once do no double work."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import balloons
from balloons import JobFailed, JobStatus
from balloons.cli import main as cli
from balloons.task import TaskOptions
from tests import tasks
from tests.test_worker import HoldBackend
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def held_app(pool: str, **pool_opts: Any) -> tuple[balloons.App, balloons.Task[Any, Any]]:
    app = balloons.App(backend=HoldBackend())
    app.pool(pool, **pool_opts)
    task = balloons.Task(app, tasks.add.fn, tasks.add.name, TaskOptions(pool=pool, timeout=30))
    return app, task


def test_a_machine_that_never_boots_is_reclaimed_with_boot_timeout() -> None:
    app, add = held_app("boot", max_machines=2, boot_timeout=1)
    job = add.submit(1, 2)
    assert job.status() is JobStatus.STARTING
    sup = app.supervisor()
    assert not sup.step(gc=False).reclaimed  # the lease is still running
    time.sleep(1.1)
    report = sup.step(gc=False)
    assert report.reclaimed == [(f"{job.id.split('.')[1]}-1", "boot_timeout")]
    with pytest.raises(JobFailed) as info:
        job.result(timeout=5)
    assert info.value.reason == "boot_timeout"
    assert app.store.pool_stats("boot")["machines"] == 0


def test_several_supervisors_do_no_double_work() -> None:
    app, add = held_app("many", max_machines=3, boot_timeout=1)
    jobs = [add.submit(i, i) for i in range(10)]
    stats = app.store.pool_stats("many")
    assert stats["starting"] == 3 and stats["queued"] == 7
    time.sleep(1.1)
    sups = [app.supervisor() for _ in range(4)]
    reports: list[Any] = []
    barrier = threading.Barrier(len(sups))

    def run(s: balloons.Supervisor) -> None:
        barrier.wait()
        reports.append(s.step(gc=False))

    threads = [threading.Thread(target=run, args=(s,)) for s in sups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    reclaimed = [x for rep in reports for x in rep.reclaimed]
    launched = [x for rep in reports for x in rep.launched]
    assert len(reclaimed) == 3 and len({s for s, _ in reclaimed}) == 3
    assert len(launched) == 3 and len(set(launched)) == 3
    stats = app.store.pool_stats("many")
    assert stats["machines"] == 3 and stats["queued"] == 4
    statuses = [j.status() for j in jobs]
    assert statuses.count(JobStatus.FAILED) == 3
    assert statuses.count(JobStatus.STARTING) == 3


def test_a_queued_job_a_jobless_machine_is_coming_for_gets_no_second_machine() -> None:
    # A launch that had to wait sent its job back to the queue (REQUEUE), or a standby launch
    # (PICK_MACHINE): the slot, jobless and still starting, will take the job when its machine
    # boots. A step must not launch another machine for the same job.
    from balloons.ids import ulid

    app, task = held_app("coming", max_machines=3, idle_timeout=0)
    backend = app.backend
    job = task.submit(1, 2)
    assert len(backend.specs) == 1  # type: ignore[attr-defined]
    pk = app.store.keys(job.id).pool
    u = job.id.rpartition(".")[2]
    assert app.store.requeue(pk, f"{u}-1", u, ulid())
    assert job.status() is JobStatus.QUEUED
    report = app.supervisor().step(gc=False)
    assert report.launched == []
    assert len(backend.specs) == 1  # type: ignore[attr-defined]
    # A second queued job beyond what that machine will take gets a machine of its own.
    r = app.store.redis
    names = ("payload", "args", "sig")
    signed = dict(zip(names, r.hmget(pk.job(u), *names), strict=True))
    r.zadd(pk.queue, {"x" * 26: 1e15})  # a placeholder behind the first job
    # (signed as the first: the supervisor launches machines only for records that verify)
    r.hset(pk.job("x" * 26), mapping={"status": "QUEUED", "attempt": 1, **signed})
    report = app.supervisor().step(gc=False)
    assert len(report.launched) == 1


def test_a_step_interrupted_after_taking_slots_leaves_nothing_stranded() -> None:
    """SCALE_UP took slots, then its supervisor died before launching: the slots run out their
    boot lease and the next supervisor reclaims them and fills the pool again."""
    app, add = held_app("crash", max_machines=1, boot_timeout=1)
    first = add.submit(1, 1)
    second = add.submit(2, 2)
    assert second.status() is JobStatus.QUEUED
    time.sleep(1.1)
    app.supervisor().step(gc=False)  # reclaims the first, takes a slot for the second
    assert first.status() is JobStatus.FAILED and second.status() is JobStatus.STARTING
    time.sleep(1.1)
    report = app.supervisor().step(gc=False)
    assert report.reclaimed and second.status() is JobStatus.FAILED
    assert app.store.pool_stats("crash")["machines"] == 0


def test_a_frozen_machine_is_reclaimed_as_lost_and_destroyed() -> None:
    job = tasks.solo_sleep.submit(30)
    wait_for(lambda: job.status() is JobStatus.RUNNING)
    machine = job.info().machine_id or ""
    pid = int(
        (tasks.app.backend.inspect(machine) or balloons.MachineInfo("", "", "")).detail["pid"]
    )
    os.kill(pid, signal.SIGSTOP)
    sup = tasks.app.supervisor()
    try:
        wait_for(lambda: bool(sup.step(gc=False).reclaimed) or job.status().terminal, timeout=15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=5)
    assert info.value.reason == "lost"
    assert "stopped heartbeating" in info.value.error_message
    wait_for(lambda: not _alive(pid), timeout=15)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, even between open and read
        return False


def test_orphaned_machines_are_collected(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # A namespace of its own (the CLI's app reads it too): the machines of earlier tests may
    # still run, and their fork server writes their records at any time (a launch recorded
    # after this test's flush), so the sweep of the shared namespace could find them too.
    monkeypatch.setenv("BALLOONS_NAMESPACE", "orphans")
    app = balloons.App()
    app.pool("solo", max_machines=1, idle_timeout=0.5)
    sleep = balloons.Task(app, tasks.solo_sleep.fn, tasks.solo_sleep.name, tasks.solo_sleep.opts)
    job = sleep.submit(30)
    wait_for(lambda: job.status() is JobStatus.RUNNING)
    machine = job.info().machine_id or ""
    info = app.backend.inspect(machine)
    assert info is not None
    pid = int(info.detail["pid"])
    os.kill(pid, signal.SIGSTOP)  # so that it cannot notice on its own
    slot = info.detail["slot"]
    pk = app.store.keys(job.id).pool
    r.zrem(pk.slots, slot)
    r.hdel(pk.slot, slot)
    sup = app.supervisor(orphan_min_age=0)
    found = sup.collect_orphans(dry_run=True)
    assert [m.id for m in found] == [machine]
    assert _alive(pid)
    # A machine younger than --min-age is left alone (its slot may be on its way).
    out = CliRunner().invoke(cli, ["gc", "--dry-run", "--json", "--min-age", "3600"])
    assert out.exit_code == 0 and machine not in out.output
    out = CliRunner().invoke(cli, ["gc", "--dry-run", "--json", "--min-age", "0"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [{"id": machine, "pool": "solo", "job": job.id}]
    assert _alive(pid)  # a dry run changes nothing
    out = CliRunner().invoke(cli, ["gc", "--min-age", "0"])
    assert out.exit_code == 0, out.output
    assert f"destroyed {machine} (pool solo, job {job.id})" in out.output
    assert "1 machine(s) destroyed" in out.output
    wait_for(lambda: not _alive(pid), timeout=15)
    wait_for(lambda: sup.collect_orphans(dry_run=True) == [])  # once its exit is recorded
    job.cancel()
    app.close()


def test_warm_floor_keeps_a_machine_ready() -> None:
    app = tasks.app
    app.pool("floor", max_machines=2, min_machines=1, idle_timeout=0.2)
    task = balloons.Task(app, tasks.add.fn, tasks.add.name, TaskOptions(pool="floor", timeout=30))
    # The pool's settings reach Redis with its first job.
    assert task.submit(1, 1).result(timeout=30) == 2
    sup = app.supervisor()
    try:
        wait_for(lambda: sup.step(gc=False) is not None and _floor_idle(app), timeout=20)
        time.sleep(0.5)  # longer than the idle timeout: the floor machine stays
        assert app.store.pool_stats("floor")["idle"] == 1
        job = task.submit(2, 3)
        assert job.result(timeout=30) == 5
        assert job.info().attempts[0].warm
    finally:
        app.store.redis.hset(app.store.keys(job_id_of(task)).pool.cfg, "min", 0)
    wait_for(lambda: app.store.pool_stats("floor")["machines"] == 0, timeout=20)


def job_id_of(task: balloons.Task[Any, Any]) -> str:
    return f"{task.opts.pool}.01jd3x9k2m8vq4t7w0c5r6y1zh"


def _floor_idle(app: balloons.App) -> bool:
    return bool(app.store.pool_stats("floor")["idle"] >= 1)


def test_cli_pools_supervise_and_cancel() -> None:
    job = tasks.solo_sleep.submit(30)
    wait_for(lambda: job.status() is JobStatus.RUNNING)
    out = CliRunner().invoke(cli, ["pools", "--json"])
    assert out.exit_code == 0, out.output
    solo = next(p for p in json.loads(out.output) if p["pool"] == "solo")
    assert solo["max_machines"] == 1 and solo["running"] == 1
    table = CliRunner().invoke(cli, ["pools"])
    assert table.exit_code == 0 and "solo" in table.output
    out = CliRunner().invoke(cli, ["cancel", job.id, "--grace", "5"])
    assert out.exit_code == 0 and "cancelled" in out.output
    assert job.status() is JobStatus.CANCELLED
    out = CliRunner().invoke(cli, ["cancel", job.id])
    assert out.exit_code == 1 and "already ended" in out.output
    out = CliRunner().invoke(cli, ["supervise", "--once"])
    assert out.exit_code == 0, out.output
    assert set(json.loads(out.output.strip().splitlines()[-1])) >= {"reclaimed", "launched"}


def test_machine_loss_retries_on_a_new_machine(tmp_path: Any) -> None:
    # The task kills its own process: the machine's when one process runs the jobs.
    tasks.app.pool("one-process", isolation="none")
    opts = balloons.TaskOptions(pool="one-process", timeout=30, retries=1, retry_backoff=0.05)
    dies_once = balloons.Task(tasks.app, tasks.dies_once.fn, tasks.dies_once.name, opts)
    sup = tasks.app.start_supervisor(interval=0.1)
    try:
        job = dies_once.submit(str(tmp_path / "n"))
        assert job.result(timeout=60) == 2
    finally:
        sup.stop()
    first, second = job.info().attempts
    assert first.reason == "killed" and first.outcome == "FAILED"
    assert first.message == "the machine was killed by signal 9"
    assert second.outcome == "SUCCEEDED" and second.machine_id != first.machine_id


def test_async_supervisor_runs_in_the_event_loop(tmp_path: Any) -> None:
    import asyncio

    async def main() -> str:
        sup = tasks.app.supervisor(interval=0.1)
        runner = sup.start_async()
        try:
            job = await tasks.touch.options(delay=0.3).submit_async(str(tmp_path / "later"))
            return str(await job.result_async(timeout=30))
        finally:
            sup.stop()
            await asyncio.wait_for(runner, 5)

    assert asyncio.run(main()) == str(tmp_path / "later")


def test_a_waiting_client_launches_its_retry_without_a_supervisor(tmp_path: Any) -> None:
    """The machine died and its pool has no other: the retry waits in the queue, and the
    client waiting on the result takes a slot for it and launches it."""
    job = tasks.dies_once.submit(str(tmp_path / "n"))
    assert job.result(timeout=60) == 2
    first, second = job.info().attempts
    assert first.reason == "killed" and second.outcome == "SUCCEEDED"


def test_a_waiting_client_starts_its_delayed_job_when_due(tmp_path: Any) -> None:
    at = time.time()
    job = tasks.touch.options(delay=0.5).submit(str(tmp_path / "later"))
    assert job.result(timeout=30) == str(tmp_path / "later")
    started = job.info().started_at or 0.0
    assert started - at >= 0.5


class _StoppedOnRequest:
    """A backend whose every machine was stopped on request (what a supervisor's overdue stop
    leaves behind): pure logic for the reason a reclaim gives."""

    def bind(self, ctx: Any) -> None:
        pass

    def inspect(self, machine_id: str) -> Any:
        from balloons.info import MachineInfo

        return MachineInfo(machine_id, "test", "stopped", requested_stop=True)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"capped": True}, "cost_cap"),
        ({"capped": False}, "timeout"),
        ({"capped": True, "cancel": 1.0}, "cancelled"),
        ({"deadline": None}, "cancelled"),
    ],
)
def test_an_overdue_machine_stopped_by_the_supervisor_gets_its_deadlines_reason(
    extra: dict[str, Any], reason: str
) -> None:
    app = balloons.App(backend=_StoppedOnRequest())  # type: ignore[arg-type]
    sup = app.supervisor()
    info = {"machine": "m1", "job": "x", "deadline": time.time() - 30, **extra}
    got, message = sup._why(app.store.keys(f"default.{'0' * 26}").pool, "x-1", info)
    assert got == reason
    if reason != "cancelled":
        assert "ran past its" in message


def test_a_machine_past_its_deadline_is_stopped_by_the_supervisor_with_reason_timeout() -> None:
    """The task blocks the timer's signal; a supervisor whose grace (0.5 s) ends before the
    worker's own hard stop (5 s) stops the machine, and the attempt says which deadline."""
    job = tasks.ignore_timeout.submit(60)
    wait_for(lambda: job.status() is JobStatus.RUNNING)
    machine = job.info().machine_id
    sup = tasks.app.supervisor(timeout_grace=0.5)
    wait_for(lambda: machine in sup.step(gc=False).stopped, timeout=30)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "timeout"
    assert "ran past its run timeout and its machine was stopped" in info.value.error_message
    stopped = tasks.app.backend.inspect(machine or "")
    assert stopped is not None and stopped.requested_stop


def test_the_boot_timeout_does_not_limit_a_job_that_started() -> None:
    """A boot timeout of 1 s bounds the wait for the first heartbeat only: a job that runs
    for 3 s, under a supervisor stepping meanwhile, succeeds."""
    app = tasks.app
    app.pool("quickboot", boot_timeout=1, idle_timeout=0)
    slow = balloons.Task(app, tasks.sleep.fn, tasks.sleep.name,
                         TaskOptions(pool="quickboot", timeout=30))  # fmt: skip
    job = slow.submit(3.0)
    sup = app.start_supervisor(interval=0.2)
    try:
        assert job.result(timeout=30) == 3.0
    finally:
        sup.stop()
    (attempt,) = job.info().attempts
    assert attempt.outcome == "SUCCEEDED"
    assert (attempt.ended_at or 0) - (attempt.started_at or 0) >= 3.0


def test_a_warm_machine_does_not_carry_its_last_jobs_cancel_to_the_next() -> None:
    """The first job is cancelled; the same machine takes the queued second one. A
    supervisor with no grace at all must not stop it for the first job's cancel."""
    first = tasks.solo_sleep.submit(30)
    wait_for(lambda: first.status() is JobStatus.RUNNING)
    second = tasks.solo_sleep.submit(2.0)
    assert second.status() is JobStatus.QUEUED
    assert first.cancel()
    wait_for(lambda: second.status() is JobStatus.RUNNING)
    sup = tasks.app.supervisor(cancel_grace=0.0, timeout_grace=0.0)
    assert sup.step(gc=False).stopped == []
    assert second.result(timeout=30) == 2.0
    (attempt,) = second.info().attempts
    assert attempt.warm and attempt.machine_id == first.info().attempts[0].machine_id
