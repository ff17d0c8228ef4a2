"""``async def`` tasks: run in an event loop on their machine, with the results, failures,
timeouts, cancels and retries of sync tasks, beside sync tasks in one app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import balloons
from balloons import JobFailed, JobStatus
from balloons.task import AsyncTask
from tests import async_tasks, tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def test_an_async_task_runs_on_its_machine_beside_sync_tasks() -> None:
    assert isinstance(async_tasks.add_async, AsyncTask)
    assert not isinstance(tasks.add, AsyncTask)
    jobs = [async_tasks.add_async.submit(1, 2), tasks.add.submit(3, 4)]
    jobs += [async_tasks.add_async.submit(5, 6), tasks.add.submit(7, 8)]
    assert [j.result(timeout=30) for j in jobs] == [3, 7, 11, 15]


def test_calling_an_async_task_here_returns_its_coroutine() -> None:
    coro = async_tasks.add_async(1, 2)
    assert asyncio.iscoroutine(coro)
    assert asyncio.run(coro) == 3


def test_an_async_task_gathers_and_what_it_leaves_running_is_cancelled() -> None:
    job = async_tasks.gather_then_leave_a_task.submit(4)
    assert job.result(timeout=30) == [0, 1, 4, 9]
    # The machine goes on to the next job: the task left behind did not hold its loop.
    assert async_tasks.add_async.submit(2, 2).result(timeout=30) == 4


def test_a_machine_imports_asyncio_only_for_an_async_task() -> None:
    tasks.app.pool("fresh", idle_timeout=0)  # a machine per job
    assert tasks.imported.options(pool="fresh").submit("asyncio").result(timeout=30) is False
    assert async_tasks.add_async.options(pool="fresh").submit(1, 1).result(timeout=30) == 2


def _attempts(job: balloons.Job[object]) -> list[tuple[str, str, str]]:
    return [(a.outcome, a.reason or "", a.message or "") for a in job.info().attempts]


@pytest.mark.parametrize(
    ("sync", "coro"),
    [(tasks.sleep_past_timeout, async_tasks.sleep_past_timeout_async)],
    ids=["sleep"],
)
def test_a_timed_out_async_attempt_fails_and_retries_as_a_sync_one(
    sync: balloons.Task[..., float], coro: balloons.Task[..., float]
) -> None:
    outcomes = []
    for task in (sync, coro):
        job = task.options(retries=1, retry_backoff=0.05).submit(20)
        with pytest.raises(JobFailed) as info:
            job.result(timeout=30)
        outcomes.append((info.value.reason, info.value.error_type, _attempts(job)))
    assert outcomes[0] == outcomes[1]
    reason, error_type, attempts = outcomes[1]
    assert (reason, error_type) == ("timeout", "balloons.machine.worker.TaskTimeout")
    assert attempts == [("FAILED", "timeout", "the task ran past its timeout of 1s")] * 2


def test_a_timed_out_async_task_is_cancelled_and_its_cleanup_runs(tmp_path: Path) -> None:
    done = tmp_path / "done"
    job = async_tasks.sleep_past_timeout_async.submit(20, str(done))
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "timeout"
    assert done.read_text() == "cleaned up"  # the CancelledError reached its finally


def test_an_async_task_that_never_awaits_times_out_as_a_sync_one() -> None:
    """CPU-bound and swallowing every ``Exception``: the cancellation never reaches it, so
    the timeout is raised where it runs, as in a sync task: its attempt fails with the
    task's timeout, not with its machine killed."""
    outcomes = []
    for task in (tasks.spin_python, async_tasks.spin_python_async):
        job = task.submit()
        with pytest.raises(JobFailed) as info:
            job.result(timeout=30)
        outcomes.append((info.value.reason, info.value.error_type, _attempts(job)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][:2] == ("timeout", "balloons.machine.worker.TaskTimeout")


def test_async_failures_and_retries_follow_the_tasks_policy(tmp_path: Path) -> None:
    assert async_tasks.flaky_async.submit(str(tmp_path / "a"), 2).result(timeout=30) == 3
    with pytest.raises(JobFailed) as info:
        async_tasks.flaky_async.submit(str(tmp_path / "b"), 9).result(timeout=30)
    assert info.value.reason == "task_error" and "ConnectionError" in info.value.error_type
    assert (tmp_path / "b").read_text() == "4"  # 1 + retries=3
    with pytest.raises(JobFailed) as info:
        async_tasks.wrong_kind_async.submit(str(tmp_path / "c")).result(timeout=30)
    assert info.value.error_type == "KeyError" and (tmp_path / "c").read_text() == "1"
    assert async_tasks.asks_retry_async.submit(str(tmp_path / "d"), 0.1).result(timeout=30) == 2


def test_cancelling_a_running_async_job_stops_it_and_frees_the_slot(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    job = async_tasks.solo_sleep_async.submit(30, str(mark))
    wait_for(lambda: job.status() is JobStatus.RUNNING and mark.exists())
    assert job.cancel() is True
    assert job.status() is JobStatus.CANCELLED
    # The worker notices within a heartbeat: the coroutine is cancelled in its loop (its
    # finally runs: the machine was not stopped under it) and the slot is free again.
    wait_for(lambda: mark.read_text() == "cleaned up", timeout=10)
    wait_for(lambda: tasks.app.store.pool_stats("solo")["running"] == 0, timeout=10)
    after = tasks.solo_touch.submit(str(tmp_path / "next"))
    assert after.result(timeout=30) == str(tmp_path / "next")
    with pytest.raises(JobFailed) as info:
        job.result(timeout=5)
    assert info.value.reason == "cancelled"
