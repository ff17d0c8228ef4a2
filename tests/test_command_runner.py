"""A command job's runner (:mod:`balloons.machine.command`) in the worker run in this process:
the launch is held, and the test runs the machine's worker itself, which runs the job's real
process. What a command's environment holds, how it exits, and specs the runner refuses."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import balloons
from balloons.errors import JobFailed, WorkerError
from balloons.machine import command, worker
from tests.test_worker import HoldBackend, worker_env

pytestmark = pytest.mark.machines
#: The pool of these tests: a worker that runs its jobs in its own process (isolation "none"),
#: so that the runner runs in this one, and no child is forked from the test's process.
POOL = "cmd-here"


class Held:
    def __init__(self, app: balloons.App, backend: HoldBackend, env: dict[str, str]) -> None:
        self.app, self.backend, self.env = app, backend, env

    def submit(self, cmd: list[str], **options: Any) -> balloons.Job[None]:
        return self.app.submit_command(cmd, pool=POOL, timeout=30, **options)

    def run_machine(self) -> int:
        """Run the worker of the last launch here, as its machine would."""
        return worker.main({**self.env, **self.backend.specs[-1].env})


@pytest.fixture
def held(redis_url: str, secret: str) -> Iterator[Held]:
    backend = HoldBackend()
    app = balloons.App(backend=backend)
    app.pool(POOL, isolation="none", idle_timeout=1)  # takes a retry once due
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGALRM)}
    try:
        yield Held(app, backend, worker_env({}, redis_url, secret))
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        app.close()


def _lines(job: balloons.Job[Any]) -> list[tuple[str, str]]:
    return [(line.source, line.text) for line in job.logs()]


def test_a_command_gets_its_input_and_env_and_never_the_workers(held: Held) -> None:
    script = (
        'cat "$BALLOONS_INPUT_PATH"; echo; echo "mine=$MINE"; echo "home=$HOME"; '
        'echo "url=${BALLOONS_ATTEMPT_URL:-none}"; echo "secret=${BALLOONS_SECRET:-none}"; '
        "echo to-stderr >&2"
    )
    job = held.submit(
        ["sh", "-c", script],
        input={"n": 1},
        env={"MINE": "yes"},
    )
    assert held.run_machine() == worker.EXIT_OK
    assert job.result(timeout=10) is None
    lines = _lines(job)
    assert ("out", '{"n": 1}') in lines and ("out", "mine=yes") in lines
    assert ("out", "url=none") in lines  # no service URL: no attempt URL
    assert ("out", "secret=none") in lines
    assert ("err", "to-stderr") in lines
    home = next(text for _, text in lines if text.startswith("home="))
    assert "balloons-cmd-" in home and not os.path.exists(home[5:])  # removed after the run


def test_with_a_service_url_a_command_gets_its_attempt_url_and_token(held: Held) -> None:
    job = held.submit(
        ["sh", "-c", 'echo "url=$BALLOONS_ATTEMPT_URL"; echo "token=${#BALLOONS_ATTEMPT_TOKEN}"'],
        service_url="http://127.0.0.1:9",
    )
    assert held.run_machine() == worker.EXIT_OK
    lines = [text for _, text in _lines(job)]
    assert f"url=http://127.0.0.1:9/v1/attempts/{job.id}/1" in lines
    token_len = next(t for t in lines if t.startswith("token="))
    assert int(token_len.removeprefix("token=")) > 20
    assert held.app.secret not in " ".join(lines)


def test_a_command_killed_by_a_signal_fails_with_128_plus_the_signal(held: Held) -> None:
    job = held.submit(["sh", "-c", "kill -TERM $$"])
    held.run_machine()
    with pytest.raises(JobFailed) as err:
        job.result(timeout=10)
    assert err.value.reason == f"exit_code={128 + signal.SIGTERM}"


def test_a_file_that_cannot_be_run_fails_with_126(held: Held, tmp_path: Path) -> None:
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("echo never\n")
    job = held.submit([str(not_executable)])
    held.run_machine()
    with pytest.raises(JobFailed) as err:
        job.result(timeout=10)
    assert err.value.reason == "exit_code=126"
    assert "could not start" in (err.value.error_message or "")


def test_a_program_not_on_path_fails_with_127_retried_when_listed(held: Held) -> None:
    job = held.submit(["balloons-no-such-program"], retries=1, retry_on_exit_codes=[127])
    held.run_machine()  # it takes the retry too, once due
    with pytest.raises(JobFailed) as err:
        job.result(timeout=10)
    assert err.value.reason == "exit_code=127"
    attempts = job.info().attempts
    assert [a.reason for a in attempts] == ["exit_code=127"] * 2
    assert "not found on PATH" in (attempts[0].message or "")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (None, "not a v1 spec"),
        ({"v": 2, "cmd": ["true"]}, "not a v1 spec"),
        ({"v": 1, "cmd": []}, "cmd must be a list of strings"),
        ({"v": 1, "cmd": ["sh", 1]}, "cmd must be a list of strings"),
        ({"v": 1, "cmd": ["true"], "env": {"A": 1}}, "env must map strings to strings"),
        ({"v": 1, "cmd": ["true"], "env": ["A"]}, "env must map strings to strings"),
        ({"v": 1, "cmd": ["true"], "retry_exit": [True]}, "retry_exit must be a list"),
        ({"v": 1, "cmd": ["true"], "retry_exit": "3"}, "retry_exit must be a list"),
        ({"v": 1, "cmd": ["true"], "service_url": 5}, "service_url must be a string"),
    ],
)
def test_a_spec_the_runner_cannot_run_is_refused_as_record_invalid(spec: Any, says: str) -> None:
    with pytest.raises(WorkerError, match=says) as err:
        command.run(spec)
    assert err.value.reason == "record_invalid"


def test_outside_a_machine_a_command_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(WorkerError, match="runs only on a machine's worker"):
        command.run({"v": 1, "cmd": ["touch", str(marker)]})
    assert not marker.exists()


def test_a_command_job_for_another_image_is_refused_on_this_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLY_IMAGE_REF", "registry.fly.io/here:1")
    marker = tmp_path / "ran"
    spec = {"v": 1, "cmd": ["touch", str(marker)], "image": "registry.fly.io/other:2"}
    with pytest.raises(WorkerError, match=re.escape("'registry.fly.io/other:2'")) as err:
        command.run(spec)
    assert "a pool of their own" in str(err.value)
    assert not marker.exists()
