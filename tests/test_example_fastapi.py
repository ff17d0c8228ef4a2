"""The FastAPI recipe's example, end to end: served by uvicorn on 127.0.0.1 (lifespan on), a
real Valkey, real local machines, and the async handles (submit_async, result_async)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.asgiserver import ServerThread

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "examples.fastapi_reports"
WAIT = 30  # seconds a request may wait for a job's result
UNKNOWN_ID = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"


@dataclass
class Example:
    client: httpx.Client
    server: ServerThread
    api: ModuleType
    tasks: ModuleType


def _forget_example_modules() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def example(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The example imported fresh, configured through the environment, its lifespan running."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BALLOONS_REDIS_URL", redis_url)
        mp.setenv("BALLOONS_SECRET", "fastapi-example-" + os.urandom(16).hex())
        mp.setenv("BALLOONS_HOME", str(tmp_path_factory.mktemp("fastapi-example-home")))
        mp.setenv("BALLOONS_NAMESPACE", "fastapi-" + os.urandom(4).hex())
        if str(ROOT) not in sys.path:
            mp.syspath_prepend(str(ROOT))
        _forget_example_modules()
        api = importlib.import_module(f"{PACKAGE}.app")
        tasks = importlib.import_module(f"{PACKAGE}.tasks")
        server = ServerThread(api.api, lifespan="on")
        try:
            with server, httpx.Client(base_url=server.url, timeout=WAIT + 10) as client:
                yield Example(client, server, api, tasks)
            assert api.api.state.supervisor.done()  # the lifespan's exit stopped it
        finally:
            tasks.app.backend.shutdown()  # no fork server is left behind
            tasks.app.close()
            _forget_example_modules()


def _result(example: Example, job_id: str) -> dict[str, Any]:
    resp = example.client.get(f"/jobs/{job_id}/result", params={"wait": WAIT})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


@pytest.mark.machines
def test_an_async_task_submitted_from_a_route_runs_on_a_machine(example: Example) -> None:
    resp = example.client.post("/count", json={"text": "the cat and the hat and the bat"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert job_id.startswith("default.")

    data = _result(example, job_id)
    assert data["status"] == "SUCCEEDED", data
    assert data["result"]["words"] == 8
    assert data["result"]["top"] == ["the", "and", "bat"]
    assert data["result"]["machine_pid"] != os.getpid()  # it ran on a machine of its own

    status = example.client.get(f"/jobs/{job_id}").json()
    assert status["status"] == "SUCCEEDED"


@pytest.mark.machines
def test_a_failing_sync_task_reports_its_reason(example: Example) -> None:
    job_id = example.client.post("/shout", json={"text": ""}).json()["id"]
    data = _result(example, job_id)
    assert data["status"] == "FAILED"
    assert data["reason"] == "task_error"
    assert "nothing to shout" in data["error"]
    ok = example.client.post("/shout", json={"text": "hi"}).json()["id"]
    assert _result(example, ok)["result"] == "HI!"


def test_unknown_and_malformed_ids(example: Example) -> None:
    assert example.client.get(f"/jobs/{UNKNOWN_ID}").status_code == 404
    assert example.client.get(f"/jobs/{UNKNOWN_ID}/result").status_code == 404
    resp = example.client.get("/jobs/nope")
    assert resp.status_code == 400
    assert "malformed job id" in resp.json()["detail"]


def test_the_request_body_is_checked(example: Example) -> None:
    assert example.client.post("/count", json={"words": "x"}).status_code == 422


def test_the_lifespan_runs_a_supervisor_on_the_servers_loop(example: Example) -> None:
    running = example.api.api.state.supervisor
    assert running.get_coro().__qualname__ == "Supervisor.run_async"
    assert not running.done()


@pytest.mark.slow
def test_the_machines_import_path_does_not_load_fastapi(example: Example) -> None:
    code = (
        "import sys, examples.fastapi_reports.tasks as t; "
        "print(t.word_count.name, sorted(m for m in ('fastapi', 'starlette', 'pydantic') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert out[0] == "examples.fastapi_reports.tasks:word_count"
    assert out[1].strip() == "[]"
