"""``App.retry``: the same task, options and arguments as a new job; altered records refused."""

from __future__ import annotations

import pytest
import redis

from balloons import JobNotFound, StoreError
from tests import tasks

pytestmark = pytest.mark.machines


def test_retry_runs_the_same_call_as_a_new_job() -> None:
    first = tasks.echo.options(memory_mb=128, pool="retries").submit(1, "two", three=3)
    first.result(timeout=30)
    again = tasks.app.retry(first.id)
    assert again.id != first.id and again.id.startswith("retries.")
    assert again.result(timeout=30) == {"args": [1, "two"], "kwargs": {"three": 3}}
    info = again.info()
    assert info.task == "tests.tasks:echo" and info.attempt == 1


def test_retry_of_a_failed_job_fails_the_same_way() -> None:
    first = tasks.fail.submit("again")
    with pytest.raises(Exception, match="again"):
        first.result(timeout=30)
    with pytest.raises(Exception, match="ValueError: again"):
        tasks.app.retry(first.id).result(timeout=30)


def test_retry_refuses_unknown_and_altered_records(r: redis.Redis) -> None:
    with pytest.raises(JobNotFound):
        tasks.app.retry("default.01jd3x9k2m8vq4t7w0c5r6y1zh")
    job = tasks.add.submit(1, 2)
    job.result(timeout=30)
    key = tasks.app.store.keys(job.id).job
    r.hset(key, "args", b'{"args":[1000,2],"kwargs":{}}')
    with pytest.raises(StoreError, match="does not verify"):
        tasks.app.retry(job.id)
    assert len(tasks.app.jobs()) == 1


def test_a_zero_backoff_retries_at_once() -> None:
    """``retry_backoff=0`` is in the options' range: the retry is scheduled with no delay, not
    the default backoff (as a missing backoff is)."""
    from balloons.retry import decide

    plan = decide({"retries": 2, "backoff": 0.0, "backoff_max": 300.0}, 1, "task_error")
    assert plan is not None and plan.delay == 0.0
    plan = decide({"retries": 2, "backoff": 5.0, "backoff_max": 0.0}, 1, "task_error")
    assert plan is not None and plan.delay == 0.0
    default = decide({"retries": 2}, 1, "task_error")
    assert default is not None and 0.5 <= default.delay <= 1.0
