"""Pools: caps across processes, FIFO queue, warm reuse, retries, delays, keys, cancellation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import balloons
from balloons import JobFailed, JobStatus
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines

ROOT = Path(__file__).resolve().parent.parent


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    return peak


def test_pool_settings_are_validated() -> None:
    with pytest.raises(balloons.ConfigError, match="max_machines"):
        tasks.app.pool("bad", max_machines=0)
    with pytest.raises(balloons.ConfigError, match="min_machines"):
        tasks.app.pool("bad", max_machines=1, min_machines=2)
    with pytest.raises(balloons.ConfigError, match="pool name"):
        tasks.app.pool("Bad Name", max_machines=1)
    assert "capped" in repr(tasks.capped) and tasks.capped.max_machines == 2


def test_standby_is_validated_and_refused_by_a_backend_that_cannot_start_machines() -> None:
    from balloons.pools import Pool

    for bad in (-1, 1.5, "2", True):
        with pytest.raises(balloons.ConfigError, match=rf"standby must be an integer.*{bad!r}"):
            Pool("sb", max_machines=2, idle_timeout=1, standby=bad)  # type: ignore[arg-type]
    with pytest.raises(balloons.ConfigError, match=r"standby \(3\) exceeds max_machines \(2\)"):
        Pool("sb", max_machines=2, idle_timeout=1, standby=3)
    ok = Pool("sb", max_machines=2, idle_timeout=1, standby=2)
    assert "standby 2" in ok.redis_config() and "standby=2" in repr(ok)
    assert "standby 0" in Pool("sb", max_machines=2, idle_timeout=1).redis_config()
    # Local machines are processes: nothing of them is left to start again.
    with pytest.raises(balloons.ConfigError, match=r"standby=1 .*LocalBackend has no start"):
        balloons.App(backend=balloons.LocalBackend()).pool("sb", max_machines=2, standby=1)
    with pytest.raises(balloons.ConfigError, match=r"the 'local' backend has no start"):
        balloons.App(backend="local").pool("sb", max_machines=2, standby=1)
    assert balloons.App(backend="fly").pool("sb", max_machines=2, standby=1).standby == 1


def test_cap_holds_and_finished_machines_take_queued_jobs() -> None:
    jobs = [tasks.stamp.submit(0.3) for _ in range(8)]
    positions = [j.queue_position() for j in jobs]
    out = [j.result(timeout=60) for j in jobs]
    assert max_overlap([(o["start"], o["end"]) for o in out]) <= 2
    # Two machines ran all eight: the queued ones went to warm machines, not new ones (each
    # job in a process of its own).
    assert len({j.info().attempts[-1].machine_id for j in jobs}) <= 2
    assert len({o["pid"] for o in out}) == 8
    assert any(p is not None and p >= 1 for p in positions)
    warm = [a for j in jobs for a in j.info().attempts if a.machine_id]
    assert len({a.machine_id for a in warm}) <= 2


def test_cap_holds_across_processes() -> None:
    code = (
        "from tests import tasks\n"
        "import json\n"
        "jobs = [tasks.stamp.submit(0.2) for _ in range(5)]\n"
        "print(json.dumps([j.result(timeout=60) for j in jobs]))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        spans += [(o["start"], o["end"]) for o in json.loads(out)]
    assert len(spans) == 15
    assert max_overlap(spans) <= 2


def test_queue_is_fifo_and_priority_goes_first(tmp_path: Path) -> None:
    blocker = tasks.solo_sleep.submit(1.0)
    wait_for(lambda: blocker.status() is JobStatus.RUNNING)
    order = tmp_path / "order"
    low = [tasks.solo_touch.submit(str(order) + f".{i}") for i in range(3)]
    urgent = tasks.solo_touch.options(priority=10).submit(str(order) + ".urgent")
    assert [j.queue_position() for j in low] == [2, 3, 4]
    assert urgent.queue_position() == 1
    for j in [blocker, urgent, *low]:
        j.result(timeout=60)
    started = sorted([urgent, *low], key=lambda j: j.info().started_at or 0.0)
    assert started[0] == urgent
    assert started[1:] == low


def test_no_job_is_stranded_when_submits_race_idle_machines() -> None:
    """Many submits from several threads against machines that idle out after 20 ms: every
    job finishes without a supervisor."""
    results: list[int] = []
    errors: list[BaseException] = []

    def burst(offset: int) -> None:
        try:
            jobs = []
            for i in range(25):
                jobs.append(tasks.racy_add.submit(offset, i))
                time.sleep((i % 5) * 0.01)  # let machines go idle and give their slots back
            results.extend(j.result(timeout=90) for j in jobs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors
    assert sorted(results) == sorted(k * 100 + i for k in range(4) for i in range(25))
    stats = tasks.app.store.pool_stats("racy")
    assert stats["queued"] == 0


def test_task_errors_retry_with_backoff_then_succeed(tmp_path: Path) -> None:
    job = tasks.flaky.submit(str(tmp_path / "n"), 2)
    assert job.result(timeout=60) == 3
    attempts = job.info().attempts
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.outcome for a in attempts] == ["FAILED", "FAILED", "SUCCEEDED"]
    assert all(a.reason == "task_error" for a in attempts[:2])
    assert [a.message for a in attempts] == ["attempt 1 fails", "attempt 2 fails", None]
    assert all(a.started_at and a.ended_at for a in attempts)


def test_retries_run_out(tmp_path: Path) -> None:
    job = tasks.flaky.submit(str(tmp_path / "n"), 10)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=60)
    assert info.value.error_type == "ConnectionError"
    assert len(job.info().attempts) == 4  # retries=3


def test_only_retry_on_exceptions_retry(tmp_path: Path) -> None:
    job = tasks.wrong_kind.submit(str(tmp_path / "n"))
    with pytest.raises(JobFailed, match="not retried"):
        job.result(timeout=60)
    assert len(job.info().attempts) == 1


def test_task_can_ask_for_a_retry(tmp_path: Path) -> None:
    job = tasks.asks_retry.submit(str(tmp_path / "n"), 0.2)
    assert job.result(timeout=60) == 2
    first, second = job.info().attempts
    assert first.reason == "task_error" and first.ended_at is not None
    assert second.started_at is not None and second.started_at - first.ended_at >= 0.2


def test_out_of_memory_retries_with_more_memory() -> None:
    sup = tasks.app.start_supervisor(interval=0.2)
    try:
        job = tasks.hungry.submit(200)
        assert job.result(timeout=60) == 200
    finally:
        sup.stop()
    attempts = job.info().attempts
    assert attempts[0].reason == "oom"
    assert attempts[-1].outcome == "SUCCEEDED"
    need = tasks.app.store.record(job._keys)["need"].decode()
    assert need == "1:512"


def test_delayed_job_waits_then_runs_under_the_supervisor(tmp_path: Path) -> None:
    sup = tasks.app.start_supervisor(interval=0.1)
    try:
        at = time.time()
        job = tasks.touch.options(delay=1.0).submit(str(tmp_path / "later"))
        assert job.status() is JobStatus.QUEUED
        assert not (tmp_path / "later").exists()
        job.result(timeout=30)
        assert (job.info().started_at or 0) - at >= 1.0
        when = datetime.now(UTC) + timedelta(seconds=0.5)
        assert tasks.add.options(at=when).submit(1, 2).result(timeout=30) == 3
    finally:
        sup.stop()
    with pytest.raises(balloons.ConfigError, match="timezone"):
        tasks.add.options(at=datetime.now()).submit(1, 2)
    with pytest.raises(balloons.ConfigError, match="delay must be"):
        tasks.add.options(delay=-1).submit(1, 2)


def test_idempotency_key_returns_the_same_job() -> None:
    a = tasks.add.options(key="order-42").submit(1, 2)
    b = tasks.add.options(key="order-42").submit(1, 2)
    c = tasks.add.options(key="order-43").submit(1, 2)
    assert a.id == b.id != c.id
    assert a.result(timeout=30) == 3
    assert tasks.add.options(key="order-42").submit(5, 5).id == a.id
    a.forget()
    assert tasks.add.options(key="order-42").submit(1, 2).id != a.id


def test_cancel_a_queued_job_never_starts_it(tmp_path: Path) -> None:
    blocker = tasks.solo_sleep.submit(1.0)
    wait_for(lambda: blocker.status() is JobStatus.RUNNING)
    queued = tasks.solo_touch.submit(str(tmp_path / "never"))
    assert queued.status() is JobStatus.QUEUED
    assert queued.cancel() is True
    assert queued.status() is JobStatus.CANCELLED
    with pytest.raises(JobFailed) as info:
        queued.result(timeout=5)
    assert info.value.reason == "cancelled"
    blocker.result(timeout=30)
    time.sleep(0.5)
    assert not (tmp_path / "never").exists()
    assert queued.info().attempts == ()
    assert queued.cancel() is False


def test_cancel_a_running_job_stops_it_and_frees_the_slot() -> None:
    job = tasks.solo_sleep.submit(30)
    wait_for(lambda: job.status() is JobStatus.RUNNING)
    t0 = time.monotonic()
    assert job.cancel() is True
    assert job.status() is JobStatus.CANCELLED
    # The worker notices within a heartbeat and leaves the job: the pool runs nothing.
    wait_for(lambda: tasks.app.store.pool_stats("solo")["running"] == 0, timeout=10)
    assert time.monotonic() - t0 < 30
    assert tasks.solo_touch.submit("/dev/null").result(timeout=30) == "/dev/null"


def test_cancel_stops_a_machine_that_ignores_it() -> None:
    job = tasks.deaf_sleep.submit(60)
    wait_for(lambda: job.status() is JobStatus.RUNNING)
    machine = job.info().machine_id
    assert job.cancel(grace=0.5, wait=True) is True
    wait_for(lambda: (tasks.app.backend.inspect(machine or "") or _gone()).state == "stopped")
    info = tasks.app.backend.inspect(machine or "")
    assert info is not None and info.requested_stop
    wait_for(lambda: tasks.app.store.pool_stats("solo")["machines"] == 0, timeout=10)
    assert job.status() is JobStatus.CANCELLED


def _gone() -> balloons.MachineInfo:
    return balloons.MachineInfo(id="", backend="local", state="gone")


def test_pools_report_counts() -> None:
    jobs = [tasks.stamp.submit(0.5) for _ in range(4)]
    wait_for(lambda: tasks.app.store.pool_stats("capped")["running"] == 2)
    stats = tasks.app.store.pool_stats("capped")
    assert stats["max_machines"] == 2 and stats["queued"] == 2
    for j in jobs:
        j.result(timeout=30)
    wait_for(lambda: tasks.app.store.pool_stats("capped")["queued"] == 0)


def test_machines_exit_after_their_idle_timeout() -> None:
    tasks.stamp.submit(0).result(timeout=30)
    wait_for(lambda: tasks.app.store.pool_stats("capped")["idle"] == 1, timeout=5)
    wait_for(lambda: tasks.app.store.pool_stats("capped")["machines"] == 0, timeout=10)


def test_worker_pid_is_not_this_process() -> None:
    assert tasks.stamp.submit(0).result(timeout=30)["pid"] != os.getpid()
