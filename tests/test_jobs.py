"""End to end: submit -> fresh local machine -> result, against a real Valkey."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

import balloons
from balloons import JobFailed, JobNotFound, JobStatus, ResultTimeout, SerializationError
from balloons.store import lua
from balloons.store.keys import JobKeys
from tests import tasks

pytestmark = pytest.mark.machines


def test_submit_returns_a_job_and_the_result_arrives() -> None:
    job = tasks.add.submit(2, 3)
    assert job.id.startswith("default.")
    assert job.status() in set(JobStatus)
    assert job.result(timeout=30) == 5
    assert job.status() is JobStatus.SUCCEEDED


def test_plain_call_runs_locally() -> None:
    assert tasks.add(4, 5) == 9


def test_args_and_kwargs_round_trip_as_json() -> None:
    job = tasks.echo.submit(1, "two", [3], key={"nested": True}, none=None)
    assert job.result(timeout=30) == {
        "args": [1, "two", [3]],
        "kwargs": {"key": {"nested": True}, "none": None},
    }


def test_remote_exception_carries_type_message_and_traceback() -> None:
    job = tasks.fail.submit("boom 42")
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    exc = info.value
    assert exc.reason == "task_error"
    assert exc.error_type == "ValueError"
    assert exc.error_message == "boom 42"
    assert "raise ValueError(message)" in exc.remote_traceback
    assert job.status() is JobStatus.FAILED


def test_info_records_the_attempt_and_its_machine() -> None:
    job = tasks.add.submit(1, 1)
    job.result(timeout=30)
    info = job.info()
    assert info.status is JobStatus.SUCCEEDED
    assert info.task == "tests.tasks:add"
    assert info.attempt == 1
    assert info.machine_id and len(info.machine_id) == 14
    (attempt,) = info.attempts
    assert attempt.number == 1
    assert attempt.machine_id == info.machine_id
    assert attempt.outcome == "SUCCEEDED"
    assert attempt.launched_at is not None and attempt.started_at is not None
    assert attempt.ended_at is not None and attempt.started_at <= attempt.ended_at
    assert info.created_at <= info.started_at <= info.finished_at  # type: ignore[operator]


def test_result_timeout_raises_timeout_error() -> None:
    job = tasks.sleep.submit(3)
    with pytest.raises(ResultTimeout) as info:
        job.result(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert job.id in str(info.value)
    assert job.result(timeout=30) == 3


def test_many_waiters_are_all_woken_by_one_finish() -> None:
    job = tasks.sleep.submit(0.5)
    results: list[float] = []

    def wait() -> None:
        results.append(tasks.app.job(job.id).result(timeout=30))

    threads = [threading.Thread(target=wait) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert results == [0.5] * 5
    # A waiter arriving after the end is answered at once, too.
    assert job.result(timeout=1) == 0.5


def test_handle_rebuilt_in_another_process(redis_url: str) -> None:
    job = tasks.add.submit(20, 22)
    code = (
        f"import sys; from tests import tasks; print(tasks.app.job({job.id!r}).result(timeout=30))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_unknown_and_malformed_job_ids() -> None:
    with pytest.raises(JobNotFound) as info:
        tasks.app.job("default.01jd3x9k2m8vq4t7w0c5r6y1zh").status()
    assert "default.01jd3x9k2m8vq4t7w0c5r6y1zh" in str(info.value)
    # A malformed id is a JobNotFound too (a BalloonsError), said at once: nothing is read.
    for bad in ("../etc/passwd", "garbage", "", "default.01JD3X9K2M8VQ4T7W0C5R6Y1ZH"):
        with pytest.raises(JobNotFound, match="not a balloons job id"):
            tasks.app.job(bad)
    with pytest.raises(JobNotFound, match="not a balloons job id"):
        tasks.app.cancel("garbage")
    with pytest.raises(JobNotFound, match="not a balloons job id"):
        tasks.app.retry("garbage")


def test_unserializable_argument_is_named_and_nothing_is_stored(r: redis.Redis) -> None:
    with pytest.raises(SerializationError) as info:
        tasks.echo.submit(1, when=object())
    assert "keyword argument 'when'" in str(info.value)
    with pytest.raises(SerializationError, match="positional argument 1"):
        tasks.echo.submit(1, {1, 2})
    assert r.keys("*job*") == []


def test_arguments_over_the_size_limit_are_refused(r: redis.Redis) -> None:
    app = balloons.App(max_arg_bytes=1000)
    big = balloons.Task(app, tasks.echo.fn, tasks.echo.name, tasks.echo.opts)
    with pytest.raises(SerializationError, match="over the limit of 1,000"):
        big.submit("x" * 2000)
    assert r.keys("*job*") == []


def test_the_default_argument_limit_is_1_mib_and_the_environment_sets_another(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_worker import HoldBackend

    def echo_of(app: balloons.App) -> balloons.Task[Any, Any]:
        return balloons.Task(app, tasks.echo.fn, tasks.echo.name, tasks.echo.opts)

    echo = echo_of(balloons.App(backend=HoldBackend()))
    mib = 1024 * 1024
    with pytest.raises(SerializationError, match="over the limit of 1,048,576 "):
        echo.submit("x" * mib)
    with pytest.raises(SerializationError, match="over the limit of 1,048,576 "):
        asyncio.run(echo.submit_async("x" * mib))
    assert r.keys("*job*") == []
    assert echo.submit("x" * (mib - 100)).status() is JobStatus.STARTING
    monkeypatch.setenv("BALLOONS_MAX_ARG_BYTES", str(2 * mib))
    assert echo_of(balloons.App(backend=HoldBackend())).submit("x" * mib).status() is (
        JobStatus.STARTING
    )


def test_unserializable_result_fails_the_job_clearly() -> None:
    job = tasks.unserializable_result.submit()
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "serialization"
    assert "object" in info.value.error_message


def test_forget_deletes_the_record(r: redis.Redis) -> None:
    job = tasks.add.submit(1, 2)
    job.result(timeout=30)
    job.forget()
    with pytest.raises(JobNotFound):
        job.status()
    # Only the job's runs marker stays (till it expires): a copy of the record put back in
    # Redis is still not run again.
    left = [k for k in r.keys("*") if job.id.split(".")[1].encode() in k]
    assert left == [JobKeys.of("balloons", job.id).runs.encode()]
    assert r.get(left[0]) == b"1 1"  # attempt 1 claimed and ended


def test_records_expire_after_their_ttl(r: redis.Redis) -> None:
    app = balloons.App(record_ttl=120)
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    job = t.submit(1, 2)
    assert job.result(timeout=30) == 3
    keys = [k for k in r.keys("*") if job.id.split(".")[1].encode() in k]
    assert len(keys) == 4  # record, attempts, done token, runs marker
    runs = JobKeys.of("balloons", job.id).runs.encode()
    for k in keys:
        # The runs marker outlives the record a while: a worker refuses the record by then.
        assert 0 < r.ttl(k) <= (120 + 2 * lua.FRESH_SLACK if k == runs else 120)
    assert r.ttl(runs) > 120


def test_async_submit_and_result() -> None:
    async def main() -> list[int]:
        jobs = [await tasks.add.submit_async(i, i) for i in range(3)]
        return list(await asyncio.gather(*(j.result_async(timeout=30) for j in jobs)))

    assert asyncio.run(main()) == [0, 2, 4]
    # A second event loop gets its own connection.
    assert asyncio.run(main()) == [0, 2, 4]


def test_async_result_times_out() -> None:
    job = tasks.sleep.submit(2)

    async def main() -> None:
        await job.result_async(timeout=0.2)

    with pytest.raises(ResultTimeout):
        asyncio.run(main())
    assert job.result(timeout=30) == 2


def test_jobs_lists_recent_jobs_newest_first() -> None:
    ids = [tasks.add.submit(i, 0).id for i in range(3)]
    for i in ids:
        tasks.app.job(i).result(timeout=30)
    listed = [j.id for j in tasks.app.jobs(limit=10)]
    assert listed[:3] == ids[::-1]


def test_task_options_override_per_call() -> None:
    quick = tasks.sleep.options(timeout=0.5)
    job = quick.submit(5)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "timeout"
    with pytest.raises(balloons.ConfigError, match="unknown task option"):
        tasks.sleep.options(memroy_mb=5)


def test_payload_is_signed_json(r: redis.Redis) -> None:
    job = tasks.add.submit(1, 2)
    job.result(timeout=30)
    pool, ulid = job.id.split(".")
    rec = r.hgetall(f"balloons:{{{pool}}}:job:{ulid}")
    payload = json.loads(rec[b"payload"])
    assert payload["task"] == "tests.tasks:add" and payload["id"] == job.id
    assert len(rec[b"sig"]) == 64
