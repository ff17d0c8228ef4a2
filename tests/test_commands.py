"""Command jobs on the local backend: a process judged by its exit code, its output as logs."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import pytest

import balloons
from balloons.errors import ConfigError, JobFailed
from tests.conftest import processes_mentioning
from tests.waiting import wait_for

pytestmark = [pytest.mark.usefixtures("app"), pytest.mark.machines]


def _lines(job: balloons.Job[Any]) -> list[tuple[str, str]]:
    return [(line.source, line.text) for line in job.logs()]


def test_a_passive_command_succeeds_with_its_output_as_logs(app: balloons.App) -> None:
    script = (
        'echo "cwd=$(pwd)"; cat "$BALLOONS_INPUT_PATH"; echo; echo oops >&2; '
        'env | grep -c -E "^(BALLOONS_REDIS_URL|BALLOONS_SECRET|REDIS_URL|BALLOONS_JOB)=" || true; '
        'echo "mine=$MINE"'
    )
    job = app.submit_command(
        ["sh", "-c", script], input={"n": [1, 2]}, env={"MINE": "yes"}, timeout=30
    )
    assert job.result(timeout=30) is None
    lines = _lines(job)
    out = [t for s, t in lines if s == "out"]
    cwd = out[0].removeprefix("cwd=")
    assert os.path.basename(cwd).startswith("balloons-cmd-")
    assert not os.path.exists(cwd)  # the fresh directory is removed with the attempt
    assert json.loads(out[1]) == {"n": [1, 2]}
    assert out[2] == "0"  # no store credential in the process's environment
    assert out[3] == "mine=yes"
    assert ("err", "oops") in lines
    info = job.info()
    assert info.status == "SUCCEEDED"
    assert info.task == balloons.registry.COMMAND_TASK


def test_a_listed_exit_code_is_retried_and_the_last_attempt_fails_with_it(
    app: balloons.App,
) -> None:
    job = app.submit_command(
        ["sh", "-c", "exit 3"], retries=2, retry_on_exit_codes=[3], retry_backoff=0, timeout=30
    )
    with pytest.raises(JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "exit_code=3"
    attempts = job.info().attempts
    assert [a.reason for a in attempts] == ["exit_code=3"] * 3


def test_an_unlisted_exit_code_fails_at_once(app: balloons.App) -> None:
    job = app.submit_command(["sh", "-c", "exit 4"], retries=2, retry_on_exit_codes=[3], timeout=30)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=30)
    assert err.value.reason == "exit_code=4"
    assert len(job.info().attempts) == 1


def test_a_later_attempt_can_succeed(app: balloons.App, tmp_path: Any) -> None:
    marker = tmp_path / "tried"
    script = f"if [ -e {marker} ]; then echo second; else touch {marker}; exit 75; fi"
    job = app.submit_command(
        ["sh", "-c", script], retries=1, retry_on_exit_codes=[75], retry_backoff=0, timeout=30
    )
    assert job.result(timeout=60) is None
    assert [a.outcome for a in job.info().attempts] == ["FAILED", "SUCCEEDED"]


def test_a_program_not_on_path_fails_with_127(app: balloons.App) -> None:
    job = app.submit_command(["no-such-program-balloons"], timeout=30)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=30)
    assert err.value.reason == "exit_code=127"
    assert "not found on PATH" in str(err.value)


def test_a_command_past_its_timeout_is_killed(app: balloons.App) -> None:
    mark = f"balloons-cmd-timeout-{uuid.uuid4().hex}"
    job = app.submit_command(["sh", "-c", f"sleep 300; echo {mark}"], timeout=1)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "timeout"
    wait_for(lambda: not processes_mentioning(mark), "the command's process to be killed")


def test_a_cancelled_command_is_killed(app: balloons.App) -> None:
    mark = f"balloons-cmd-cancel-{uuid.uuid4().hex}"
    job = app.submit_command(["sh", "-c", f"echo started; sleep 300; echo {mark}"], timeout=60)
    wait_for(lambda: ("out", "started") in _lines(job), "the command to start")
    assert app.cancel(job.id)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=30)
    assert err.value.status == "CANCELLED"
    wait_for(lambda: not processes_mentioning(mark), "the command's process to be killed")


def test_the_async_twin_submits_a_command(app: balloons.App) -> None:
    async def main() -> None:
        job = await app.submit_command_async(["sh", "-c", "echo hi"], timeout=30)
        assert await job.result_async(timeout=30) is None
        await app.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("cmd", "kwargs", "message"),
    [
        ("echo hi", {}, "cmd must be a list"),
        ([], {}, "non-empty list"),
        (["echo", 3], {}, "non-empty list"),
        (["echo"], {"env": {"BALLOONS_ATTEMPT_TOKEN": "x"}}, "env may not set"),
        (["echo"], {"env": {"A=B": "x"}}, "env must map"),
        (["echo"], {"retry_on_exit_codes": [0]}, "from 1 to 255"),
        (["echo"], {"input": float("nan")}, "input must be JSON"),
        (["echo"], {"service_url": "ftp://x"}, r"http\(s\) URL"),
        (["echo"], {"timeout": -1}, "timeout"),
    ],
)
def test_a_malformed_command_is_refused_before_anything_is_stored(
    app: balloons.App, cmd: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        app.submit_command(cmd, **kwargs)
    assert app.jobs(limit=10) == []
