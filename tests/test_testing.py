"""The test mode (``balloons.testing``): jobs run inline at submit by the worker's own code, on
the suite's Valkey, with the serialization, signing, failure reasons and retries of a
machine; and the pytest fixture, used as a user would in a project of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from balloons import App, Job, JobFailed, JobStatus, SerializationError
from balloons.errors import ConfigError
from balloons.testing import InlineBackend, inline
from tests import inline_tasks
from tests.inline_tasks import add, always_fails, fails_with_backoff, flaky, sleeps, unencodable
from tests.waiting import wait_for


@pytest.fixture
def inline_app() -> Iterator[App]:
    inline_tasks.CALLS.clear()
    with inline(inline_tasks.app) as app:
        yield app


def test_a_job_runs_at_submit_and_reads_as_any_job(inline_app: App) -> None:
    job = add.submit(2, 3)
    # Ended by the time submit returns: no machine, no wait.
    assert job.status() is JobStatus.SUCCEEDED
    assert job.result(timeout=0) == 5
    info = job.info()
    assert [a.outcome for a in info.attempts] == ["SUCCEEDED"]
    assert info.machine_id and info.machine_id.startswith("inline-")
    assert [line.text for line in job.logs()] == ["adding 2 and 3"]
    assert [j.id for j in inline_app.jobs()] == [job.id]
    assert isinstance(inline_app.backend, InlineBackend)


def test_a_failing_task_is_retried_then_succeeds(inline_app: App) -> None:
    job = flaky.submit(3)
    assert job.result(timeout=0) == 3
    info = job.info()
    assert [(a.outcome, a.reason, a.message) for a in info.attempts] == [
        ("FAILED", "task_error", "attempt 1 fails"),
        ("FAILED", "task_error", "attempt 2 fails"),
        ("SUCCEEDED", None, None),
    ]
    assert inline_tasks.CALLS == [3, 3, 3]


def test_a_retry_after_a_backoff_runs_within_the_submit(inline_app: App) -> None:
    job = fails_with_backoff.submit()
    assert job.status() is JobStatus.FAILED
    with pytest.raises(JobFailed) as err:
        job.result(timeout=0)
    assert (err.value.reason, err.value.error_message) == ("task_error", "failure 2")
    assert [a.reason for a in job.info().attempts] == ["task_error", "task_error"]


def test_an_unserializable_argument_fails_at_submit_and_stores_nothing(inline_app: App) -> None:
    with pytest.raises(SerializationError, match="positional argument 0"):
        add.submit(object(), 1)  # type: ignore[arg-type]
    assert inline_app.jobs() == []


def test_an_unencodable_result_fails_as_on_a_machine(inline_app: App) -> None:
    with pytest.raises(JobFailed) as err:
        unencodable.submit().result(timeout=0)
    assert err.value.reason == "serialization"
    assert "cannot encode" in err.value.error_message


def test_the_payload_is_verified(inline_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline run verifies the signature as a machine does: a payload signed wrongly is
    refused, unrun."""
    import balloons.dispatch

    monkeypatch.setattr(balloons.dispatch, "sign", lambda key, payload, args: "0" * 64)
    job = add.submit(1, 1)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=0)
    assert err.value.reason == "signature_invalid"
    assert job.logs() == []


def test_a_timeout_interrupts_the_task_and_the_caller_alarm_is_restored(inline_app: App) -> None:
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(JobFailed) as err:
        sleeps.submit(30).result(timeout=0)
    assert err.value.reason == "timeout"
    assert err.value.error_type == "balloons.machine.worker.TaskTimeout"
    assert signal.getsignal(signal.SIGALRM) is before


def test_a_submit_from_another_thread_runs_there(inline_app: App) -> None:
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(add.submit(4, 5).result(timeout=0)))
    t.start()
    t.join()
    assert got == [9]


def test_inline_refuses_pools_that_keep_machines() -> None:
    app = App()
    app.pool("warm", min_machines=1)
    with pytest.raises(ConfigError, match=r"\['warm'\] have min_machines"), inline(app):
        pass


def test_the_app_is_as_it_was_after_the_block() -> None:
    app = inline_tasks.app
    before = app.settings
    with inline(app):
        assert app.settings.backend == "inline"
    assert app.settings is before
    assert app.settings.backend == "local"


def test_an_app_made_with_the_inline_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """``BALLOONS_BACKEND=inline`` (or ``App(backend="inline")``) with no block."""
    monkeypatch.setenv("BALLOONS_BACKEND", "inline")
    app = App()
    assert isinstance(app.backend, InlineBackend)
    assert App(backend="inline").settings.backend == "inline"


@pytest.mark.machines
def test_failures_read_the_same_inline_and_on_a_machine() -> None:
    """The same failing tasks, on local machines, then inline: the same JobFailed, after as
    many attempts."""

    def ended(job: Job[object]) -> tuple[tuple[str, str, str, str], int]:
        with pytest.raises(JobFailed) as err:
            job.result(timeout=60)
        e = err.value
        return (e.status, e.reason, e.error_type, e.error_message), len(job.info().attempts)

    def run_both() -> list[tuple[tuple[str, str, str, str], int]]:
        return [ended(always_fails.submit("gone")), ended(unencodable.submit())]

    app = inline_tasks.app
    assert app.settings.backend == "local"
    on_machines = run_both()
    # Its machines idle out before the next test (their exit records would land in its data).
    wait_for(lambda: not any(m.running for m in app.backend.list()), "the machines to exit")
    with inline(app):
        inlined = run_both()
    assert inlined == on_machines
    assert [n for _, n in inlined] == [2, 1]


@pytest.mark.slow
def test_a_user_project_tests_its_tasks_with_the_fixture(tmp_path: Path) -> None:
    """A project of its own, tested with pytest as its developer would: the plugin's
    ``balloons_server`` fixture (enabled in the project's conftest.py) and ``inline``."""
    (tmp_path / "shop.py").write_text(
        textwrap.dedent(
            """
            from balloons import App

            app = App()

            @app.task(retries=1, retry_backoff=0)
            def total(prices: list[float]) -> float:
                if any(p < 0 for p in prices):
                    raise ValueError("a negative price")
                return sum(prices)
            """
        )
    )
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["balloons.testing.pytest_plugin"]\n')
    (tmp_path / "test_shop.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from balloons import JobFailed
            from balloons.testing import inline

            import shop

            @pytest.fixture
            def jobs(balloons_server):
                with inline(shop.app, balloons_server):
                    yield shop.app

            def test_total(jobs):
                assert shop.total.submit([1.5, 2.5]).result() == 4.0

            def test_negative(jobs):
                job = shop.total.submit([-1.0])
                with pytest.raises(JobFailed) as err:
                    job.result()
                assert err.value.reason == "task_error"
                assert err.value.error_message == "a negative price"
                assert len(job.info().attempts) == 2

            def test_each_test_has_its_own_server(jobs, balloons_server):
                assert jobs.jobs() == []
                assert balloons_server.namespace.startswith("test-")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALLOONS_", "REDIS_"))}
    env["BALLOONS_HOME"] = str(tmp_path / "home")  # the app's own embedded server: never used
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_off_the_main_thread_a_timeout_ends_the_attempt_not_the_task(inline_app: App) -> None:
    """From another thread no signal reaches the task: its heartbeat fails the attempt with
    reason timeout five seconds past its deadline, the task runs on, and what it returns is
    discarded (the test process lives on)."""
    from balloons.machine.heartbeat import TIMEOUT_GRACE

    got: list[Job[float]] = []
    t = threading.Thread(target=lambda: got.append(sleeps.submit(TIMEOUT_GRACE + 1.5)))
    t.start()
    t.join()
    with pytest.raises(JobFailed) as err:
        got[0].result(timeout=0)
    assert err.value.reason == "timeout"
    assert "ignored its run timeout" in err.value.error_message


def test_a_delayed_job_runs_when_it_is_waited_for(inline_app: App) -> None:
    """``delay`` keeps the job in the delayed set, as on machines; the waiter that finds it
    due takes its slot, and the inline backend runs it in the waiting thread."""
    job = add.options(delay=0.2).submit(2, 2)
    assert job.status() is JobStatus.QUEUED
    assert job.result(timeout=30) == 4


def test_a_task_that_submits_a_job_gets_its_result(inline_app: App) -> None:
    """The inner job runs inline too, inside the outer one's run."""
    before = signal.getitimer(signal.ITIMER_REAL)
    job = inline_tasks.add_twice.submit(1, 2)
    assert job.result(timeout=0) == 6
    (inner,) = [j for j in inline_app.jobs() if j.id != job.id]
    assert inner.status is JobStatus.SUCCEEDED and inner.task == add.name
    # The caller's timer (pytest-timeout's) runs on, from where it was.
    after = signal.getitimer(signal.ITIMER_REAL)
    assert (after[0] > 0) == (before[0] > 0) and after[0] <= before[0]


def test_an_async_task_runs_inline_in_its_own_event_loop(inline_app: App) -> None:
    assert inline_tasks.add_async.submit(2, 3).result(timeout=0) == 5
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(JobFailed) as err:
        inline_tasks.sleeps_async.submit(30).result(timeout=0)
    assert err.value.reason == "timeout"
    assert err.value.error_type == "balloons.machine.worker.TaskTimeout"
    assert signal.getsignal(signal.SIGALRM) is before


def test_an_async_task_submitted_from_a_running_event_loop_runs_inline(inline_app: App) -> None:
    """A test's own coroutine submits: the job's loop cannot run inside the caller's, so it
    runs in a thread of its own (``submit``), or in the thread ``submit_async`` launches in."""
    import asyncio

    async def main() -> list[int]:
        first = inline_tasks.add_async.submit(1, 2)
        second = await inline_tasks.add_async.submit_async(3, 4)
        try:
            return [first.result(timeout=0), await second.result_async(timeout=0)]
        finally:
            await inline_app.aclose()

    assert asyncio.run(main()) == [3, 7]
