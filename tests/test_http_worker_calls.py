"""The Python worker in HTTP mode, run in this process against the real attempt routes: its
answers to what the service says (a finished attempt, a cancel, a record it cannot run), and
to what the task does (returns, raises, prints, runs past its deadline, returns what JSON
cannot hold). The launch is held, so the test runs the machine's code itself."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import balloons
from balloons import JobStatus
from balloons.errors import JobFailed
from balloons.machine import http
from tests import tasks
from tests.attemptserver import attempt_server
from tests.test_worker import HoldBackend
from tests.waiting import wait_for

pytestmark = pytest.mark.machines
POOL = "held-http"


class Held:
    """An app whose launches are held, with the attempt routes served for its pool of the
    worker protocol."""

    def __init__(self, app: balloons.App, backend: HoldBackend, url: str) -> None:
        self.app, self.backend, self.url = app, backend, url

    def submit(self, task: balloons.Task[Any, Any], *args: Any) -> balloons.Job[Any]:
        bound = balloons.Task(self.app, task.fn, task.name, task.opts).options(pool=POOL)
        return bound.submit(*args)

    def machine_env(self) -> dict[str, str]:
        """The environment the last launch gave its machine."""
        return dict(self.backend.specs[-1].env)


@pytest.fixture
def held() -> Iterator[Held]:
    backend = HoldBackend()
    app = balloons.App(backend=backend)
    app.pool(POOL, protocol="http", idle_timeout=0)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGALRM)}
    try:
        with attempt_server(app) as server:
            app.service_url = server.url
            yield Held(app, backend, server.url)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        app.close()


def test_a_task_run_over_the_protocol_records_its_result_lines_and_progress(
    held: Held,
) -> None:
    job = held.submit(tasks.chatty, 3, 2)
    env = held.machine_env()
    assert "BALLOONS_REDIS_URL" not in env and "BALLOONS_SECRET" not in env
    out, err = sys.stdout, sys.stderr
    assert http.main(env) == http.EXIT_OK
    assert (sys.stdout, sys.stderr) == (out, err)  # given back
    assert job.result(timeout=10) == 3
    lines = [(line.source, line.text) for line in job.logs()]
    assert ("out", "line 0") in lines and ("err", "to stderr") in lines
    assert ("out", "no newline at the end") in lines  # its last line, with no newline
    assert job.progress() is not None
    # The same attempt again: the service says it ended, and nothing runs.
    assert http.main(env) == http.EXIT_SKIPPED


def test_a_raising_task_is_failed_with_its_type_message_and_traceback(held: Held) -> None:
    job = held.submit(tasks.fail, "boom")
    assert http.main(held.machine_env()) == http.EXIT_FAILED
    with pytest.raises(JobFailed) as err:
        job.result(timeout=10)
    assert (err.value.reason, err.value.error_type) == ("task_error", "ValueError")
    assert err.value.error_message == "boom"
    assert "in fail" in (err.value.remote_traceback or "")


def test_an_error_the_task_retries_on_schedules_a_retry(held: Held, tmp_path: Path) -> None:
    job = held.submit(tasks.flaky, str(tmp_path / "n"), 1)  # retries on ConnectionError
    assert http.main(held.machine_env()) == http.EXIT_FAILED
    info = job.info()
    assert info.status is not JobStatus.FAILED
    assert (info.attempts[0].outcome, info.attempts[0].reason) == ("FAILED", "task_error")
    assert len(info.attempts) == 1 or info.attempts[1].outcome is None


def test_a_result_json_cannot_hold_fails_the_attempt_as_serialization(held: Held) -> None:
    job = held.submit(tasks.unserializable_result)
    assert http.main(held.machine_env()) == http.EXIT_FAILED
    with pytest.raises(JobFailed) as err:
        job.result(timeout=10)
    assert err.value.reason == "serialization"


def test_a_task_past_its_run_timeout_is_interrupted_and_fails_as_timeout(held: Held) -> None:
    job = held.submit(tasks.sleep_past_timeout, 30)  # timeout=1
    began = time.monotonic()
    assert http.main(held.machine_env()) == http.EXIT_FAILED
    assert time.monotonic() - began < 25  # interrupted, not slept out
    with pytest.raises(JobFailed) as err:
        job.result(timeout=10)
    assert err.value.reason == "timeout"
    assert "deadline" in (err.value.error_message or "")


def test_a_cancel_heard_by_the_heartbeat_stops_the_task(held: Held, tmp_path: Path) -> None:
    flag = tmp_path / "started"
    job = held.submit(tasks.pid_then_sleep, str(flag), 20)
    codes: list[int] = []

    def cancel() -> None:
        wait_for(flag.exists, "the task to start")
        held.app.cancel(job.id, grace=30)

    canceller = threading.Thread(target=cancel)
    canceller.start()
    codes.append(http.main(held.machine_env()))
    canceller.join()
    assert codes == [http.EXIT_SKIPPED]
    assert job.status() is JobStatus.CANCELLED


def test_a_task_no_module_registers_fails_as_task_not_found(held: Held) -> None:
    ghost = balloons.Task(held.app, tasks.add.fn, "tests.no_such_module:add", tasks.add.opts)
    job = ghost.options(pool=POOL).submit(1, 2)
    assert http.main(held.machine_env()) == http.EXIT_FAILED
    with pytest.raises(JobFailed) as err:
        job.result(timeout=10)
    assert err.value.reason == "task_not_found"
    assert "tests.no_such_module" in (err.value.error_message or "")


def test_a_token_of_another_attempt_is_refused_and_runs_nothing(held: Held, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    first = held.submit(tasks.touch, str(marker))
    env = held.machine_env()
    held.submit(tasks.touch, str(marker))
    env["BALLOONS_ATTEMPT_TOKEN"] = held.machine_env()["BALLOONS_ATTEMPT_TOKEN"]
    assert http.main(env) == http.EXIT_UNREACHABLE  # a 403: not this attempt's
    assert not marker.exists()
    assert first.status() is JobStatus.STARTING


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"BALLOONS_ATTEMPT_URL": "ftp://example.invalid/x", "BALLOONS_ATTEMPT_TOKEN": "t"},
        {"BALLOONS_ATTEMPT_URL": "http://127.0.0.1:9/x"},
    ],
    ids=["nothing", "not-http", "no-token"],
)
def test_a_machine_without_its_url_and_token_is_a_usage_error(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert http.main(env) == http.EXIT_USAGE
    assert "BALLOONS_ATTEMPT_URL" in capsys.readouterr().err


def test_a_service_that_never_answers_is_given_up_past_the_deadline() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempt = http.Attempt(f"http://127.0.0.1:{port}/v1/attempts/x/1", "token")
    attempt.deadline = time.time() - 120  # long past: no retry is left
    with pytest.raises(http.ProtocolError) as err:
        attempt.call("GET")
    assert (err.value.status, err.value.code) == (0, "unreachable")
    assert str(port) in str(err.value)
