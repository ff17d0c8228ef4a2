"""Command jobs in test mode: ``submit_command`` under ``backend="inline"`` runs the process in
the submitting thread, by the worker's own code, as a machine's worker would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from balloons import App, JobFailed, JobStatus
from balloons.testing import inline
from tests import inline_tasks


@pytest.fixture
def inline_app() -> Iterator[App]:
    with inline(inline_tasks.app) as app:
        yield app


def sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "sh", *args]


def test_a_command_job_runs_inline(inline_app: App) -> None:
    job = inline_app.submit_command(sh('echo "input in $BALLOONS_INPUT_PATH"'), input=[1, 2])
    assert job.status() is JobStatus.SUCCEEDED
    assert job.result(timeout=0) is None
    (line,) = [line.text for line in job.logs()]
    assert line.startswith("input in /") and line.endswith("/input.json")


def test_a_command_job_that_exits_non_zero_fails_inline_as_on_a_machine(inline_app: App) -> None:
    job = inline_app.submit_command(sh("exit 3"), retries=1, retry_on_exit_codes=[3])
    with pytest.raises(JobFailed) as err:
        job.result(timeout=0)
    assert err.value.reason == "exit_code=3"
    assert [a.reason for a in job.info().attempts] == ["exit_code=3", "exit_code=3"]


def test_a_command_job_given_a_service_url_gets_its_attempt_url_and_token(
    inline_app: App, tmp_path: Path
) -> None:
    out = tmp_path / "seen"
    script = 'echo "$BALLOONS_ATTEMPT_URL ${BALLOONS_ATTEMPT_TOKEN:+token} ${BALLOONS_REDIS_URL:-none}" > "$1"'
    job = inline_app.submit_command(sh(script, str(out)), service_url="http://127.0.0.1:9")
    assert job.result(timeout=0) is None
    url, token, store = out.read_text().split()
    assert url.startswith("http://127.0.0.1:9/") and job.id in url and url.endswith("/1")
    assert (token, store) == ("token", "none")  # never the store's credentials


def test_command_jobs_run_inline_in_threads_at_once_each_its_own_attempt(
    inline_app: App, tmp_path: Path
) -> None:
    """Each thread runs its own job: a command job is given its own attempt, not the one
    another thread runs at the same moment."""
    gate = threading.Barrier(3)
    jobs: dict[int, str] = {}
    script = 'echo "$BALLOONS_ATTEMPT_URL" > "$1"; sleep 0.2'

    def submit(i: int) -> None:
        gate.wait()
        job = inline_app.submit_command(
            sh(script, str(tmp_path / str(i))), service_url="http://127.0.0.1:9"
        )
        assert job.status() is JobStatus.SUCCEEDED
        jobs[i] = job.id

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(jobs) == 3
    for i, job_id in jobs.items():
        assert job_id in (tmp_path / str(i)).read_text()


def test_a_job_of_a_worker_protocol_pool_runs_inline_as_any_job() -> None:
    """A pool whose machines speak the HTTP worker protocol: inline, its job runs here by the
    worker's code, as any job does (nothing to call over HTTP in the caller's process)."""
    app = App()
    app.service_url = "http://127.0.0.1:9"
    app.pool("web", protocol="http")
    add = app.task(timeout=30, pool="web")(inline_tasks.add.fn)
    with inline(app):
        job = add.submit(2, 3)
        assert job.result(timeout=0) == 5
        assert [a.outcome for a in job.info().attempts] == ["SUCCEEDED"]
