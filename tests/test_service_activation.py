"""Scale to zero: the service started on a connection by a socket-activating front, exiting
while a job runs, started again by the next request, which reads the result. Nothing is lost
and nothing runs twice. A real service process, Valkey and machines."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.states import JobStatus
from balloons.store.keys import PoolKeys
from tests import tasks
from tests.activator import Activator
from tests.servicehttp import TOKEN
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ROOT / "examples" / "workers"
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


@pytest.mark.machines
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_jobs_completion_wakes_the_sleeping_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command job of the worker protocol (the sh reference worker) whose machine calls its
    attempt URL through the front: the service sleeps while the job runs, and the job's
    ``complete`` starts it again. One run, one attempt, one recorded completion."""
    monkeypatch.setenv("BALLOONS_SERVICE_TOKEN", TOKEN)
    argv = [sys.executable, "-m", "balloons.service", "-A", "tests.tasks", "--idle-exit", "0.5"]
    runs, go = tmp_path / "runs", tmp_path / "go"
    script = f'echo ran >>"{runs}"; while [ ! -e "{go}" ]; do sleep 0.05; done; echo \'{{"n": 7}}\''
    with Activator(argv, str(ROOT)) as front:
        # The machines call the service through the front, as they would through Fly's proxy.
        monkeypatch.setenv("BALLOONS_SERVICE_URL", front.url)
        body = {
            "command": {
                "cmd": ["sh", str(WORKERS / "worker.sh"), "sh", "-c", script],
                # Heartbeats would wake the service too: this one calls only to start and end.
                "env": {"BALLOONS_HEARTBEAT_SECONDS": "600"},
            },
            "pool": "wake",
            "timeout": 120,
        }
        made = httpx.post(f"{front.url}/v1/jobs", json=body, headers=AUTH, timeout=60)
        assert made.status_code == 201, made.text
        job = tasks.app.job(made.json()["id"])
        wait_for(lambda: job.status() is JobStatus.RUNNING, "the command to start")
        wait_for(lambda: any(" /v1/attempts/" in r for r in front.requests), "the attempt GET")
        wait_for(lambda: not front.running(), "the idle service to exit while the job runs")
        asleep_after = front.starts
        assert not job.status().terminal and not _completes(front.requests)
        go.touch()  # the command ends: its worker posts `complete` to a sleeping service
        wait_for(lambda: job.status().terminal, "the job's end, recorded by the woken service")
        assert front.starts == asleep_after + 1
        assert front.woken_by[-1].startswith("POST /v1/attempts/")
        assert front.woken_by[-1].endswith("/complete HTTP/1.1")
        got = httpx.get(f"{front.url}/v1/jobs/{job.id}?wait=30", headers=AUTH, timeout=60)
        assert got.status_code == 200, got.text
        assert (got.json()["state"], got.json()["result"]) == ("succeeded", {"n": 7})
        # Nothing lost, nothing run twice.
        assert runs.read_text() == "ran\n"
        info = job.info()
        assert info.attempt == 1 and len(info.attempts) == 1
        assert len(_completes(front.requests)) == 1
        stats = tasks.app.store.redis.hgetall(PoolKeys(tasks.app.settings.namespace, "wake").stats)
        ended = {k.decode(): int(v) for k, v in stats.items() if k.startswith(b"n:")}
        assert list(ended.values()) == [1], ended  # the job's end counted once
        wait_for(lambda: not front.running(), "the service to exit again")


def _completes(requests: list[str]) -> list[str]:
    return [r for r in requests if r.startswith("POST /v1/attempts/") and "/complete " in r]
