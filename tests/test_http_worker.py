"""The Python worker in HTTP mode: a pool with ``protocol="http"`` runs its tasks on machines
that hold no store credentials, only their attempt's URL and token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import balloons
from balloons.errors import ConfigError, JobFailed
from tests import tasks
from tests.asgiserver import ServerThread
from tests.attemptserver import attempt_server
from tests.waiting import wait_for

pytestmark = pytest.mark.machines
POOL = "untrusted"


@pytest.fixture
def server(app: balloons.App) -> Iterator[ServerThread]:
    app.pool(POOL, protocol="http", idle_timeout=0)
    with attempt_server(app) as s:
        app.service_url = s.url
        try:
            yield s
        finally:
            app.service_url = None
            app.pool(POOL)


def on_pool(task: balloons.Task[Any, Any], **options: Any) -> balloons.Task[Any, Any]:
    return task.options(pool=POOL, **options)


def test_a_task_runs_with_no_store_credentials(app: balloons.App, server: ServerThread) -> None:
    job = on_pool(tasks.environment).submit()
    env = job.result(timeout=60)["env"]
    for name in ("BALLOONS_REDIS_URL", "BALLOONS_SECRET", "REDIS_URL", "BALLOONS_JOB"):
        assert name not in env
    assert env["BALLOONS_ATTEMPT_URL"] == f"{server.url}/v1/attempts/{job.id}/1"
    assert app.secret not in repr(env)
    assert on_pool(tasks.add).submit(2, 3).result(timeout=60) == 5


def test_its_logs_and_progress_reach_the_job(app: balloons.App, server: ServerThread) -> None:
    job = on_pool(tasks.chatty).submit(3, 2)
    job.result(timeout=60)
    texts = [line.text for line in job.logs()]
    assert len(texts) >= 3
    assert job.progress() is not None


def test_a_raising_task_fails_with_its_error(app: balloons.App, server: ServerThread) -> None:
    with pytest.raises(JobFailed) as err:
        on_pool(tasks.fail).submit("boom").result(timeout=60)
    assert (err.value.reason, err.value.error_type) == ("task_error", "ValueError")
    assert err.value.error_message == "boom"
    assert "ValueError" in (err.value.remote_traceback or "")


def test_a_task_past_its_deadline_times_out(app: balloons.App, server: ServerThread) -> None:
    with pytest.raises(JobFailed) as err:
        on_pool(tasks.sleep_past_timeout).submit(30).result(timeout=60)
    assert err.value.reason == "timeout"


def test_a_cancelled_task_is_stopped(
    app: balloons.App, server: ServerThread, tmp_path: Any
) -> None:
    flag = tmp_path / "started"
    job = on_pool(tasks.pid_then_sleep).submit(str(flag), 60)
    wait_for(flag.exists, "the task to start")
    assert app.cancel(job.id, grace=30)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=30)
    assert err.value.status == "CANCELLED"
    # its heartbeat hears of the cancel and the machine ends (the task ran in it)
    pid = int(flag.read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the machine to end")


def test_a_pool_of_the_protocol_keeps_no_machines(app: balloons.App) -> None:
    with pytest.raises(ConfigError, match="min_machines and standby must be 0"):
        app.pool("p1", protocol="http", min_machines=1)
    with pytest.raises(ConfigError, match="protocol 'ftp'"):
        app.pool("p2", protocol="ftp")
