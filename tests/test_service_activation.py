"""Scale to zero: the service started on a connection by a socket-activating front, exiting
while a job runs, started again by the next request, which reads the result. Nothing is lost
and nothing runs twice. A real service process, Valkey and machines."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette")

from tests import tasks
from tests.activator import Activator
from tests.servicehttp import TOKEN
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.mark.machines
def test_a_sleeping_service_is_woken_by_a_request_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALLOONS_SERVICE_TOKEN", TOKEN)
    argv = [sys.executable, "-m", "balloons.service", "-A", "tests.tasks", "--idle-exit", "0.5"]
    runs = tmp_path / "runs"
    with Activator(argv, str(ROOT)) as front:
        assert front.starts == 0  # nothing runs until a request comes
        body = {"task": "tests.tasks:count_then_sleep", "args": [str(runs), 8]}
        made = httpx.post(f"{front.url}/v1/jobs", json=body, headers=AUTH, timeout=60)
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        assert front.starts == 1
        # The service goes to sleep while the job runs: its deadline is not within 0.5 s.
        wait_for(lambda: not front.running(), "the idle service to exit")
        assert not tasks.app.job(job_id).status().terminal
        # The next request wakes it, and the result is there once the job ends.
        got = httpx.get(f"{front.url}/v1/jobs/{job_id}?wait=30", headers=AUTH, timeout=60)
        assert got.status_code == 200 and front.starts == 2
        assert got.json()["state"] == "succeeded" and got.json()["result"] == 1
        assert runs.read_text() == "1"  # one run
        wait_for(lambda: not front.running(), "the service to exit again")
