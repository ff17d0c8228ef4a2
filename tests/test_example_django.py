"""The Django recipe's example, end to end: Django's test client, the project's management
command running the supervisor, a real Valkey and real local machines."""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "examples.django_reports"
SETTINGS = f"{PACKAGE}.settings"
DEADLINE = 30.0  # seconds a job may take before a test gives up
UNKNOWN_ID = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"


@dataclass
class Example:
    client: Any  # django.test.Client
    tasks: ModuleType


def _forget_example_modules() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def example(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The Django project set up on a Valkey and namespace of the test's own."""
    import django
    from django.conf import settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_SETTINGS_MODULE", SETTINGS)
        mp.setenv("BALLOONS_REDIS_URL", redis_url)
        mp.setenv("BALLOONS_SECRET", "django-example-" + os.urandom(16).hex())
        mp.setenv("BALLOONS_HOME", str(tmp_path_factory.mktemp("django-example-home")))
        mp.setenv("BALLOONS_NAMESPACE", "django-" + os.urandom(4).hex())
        if str(ROOT) not in sys.path:
            mp.syspath_prepend(str(ROOT))
        _forget_example_modules()
        if not settings.configured or settings.SETTINGS_MODULE != SETTINGS:
            django.setup()
        from django.test import Client

        tasks = importlib.import_module(f"{PACKAGE}.tasks")
        try:
            yield Example(Client(), tasks)
        finally:
            tasks.app.backend.shutdown()  # no fork server is left behind
            tasks.app.close()
            _forget_example_modules()


def _job(example: Example, job_id: str, wait: float = DEADLINE) -> dict[str, Any]:
    resp = example.client.get(f"/jobs/{job_id}/", {"wait": wait})
    assert resp.status_code == 200, resp.content
    data: dict[str, Any] = resp.json()
    return data


@pytest.mark.machines
def test_a_view_submits_a_job_that_runs_on_a_machine(example: Example) -> None:
    resp = example.client.post("/fib/", json.dumps({"n": 50}), content_type="application/json")
    assert resp.status_code == 202, resp.content
    job_id = resp.json()["id"]
    data = _job(example, job_id)
    assert data["status"] == "SUCCEEDED", data
    assert data["result"]["value"] == 12586269025
    assert data["result"]["machine_pid"] != os.getpid()


@pytest.mark.machines
def test_a_failed_job_says_why(example: Example) -> None:
    resp = example.client.post("/fib/", json.dumps({"n": -1}), content_type="application/json")
    data = _job(example, resp.json()["id"])
    assert data["status"] == "FAILED"
    assert data["reason"] == "task_error"
    assert "n must be 0 or more" in data["error"]


@pytest.mark.machines
def test_the_management_command_launches_a_job_nobody_waits_on(example: Example) -> None:
    from django.core.management import call_command

    job = example.tasks.fibonacci.options(delay=1).submit(10)
    ulid = job.id.split(".", 1)[1]

    def launched() -> bool:
        out = io.StringIO()
        call_command("balloons_supervise", "--once", stdout=out)
        return any(slot.startswith(ulid) for slot in json.loads(out.getvalue())["launched"])

    wait_for(launched, "the supervisor's step to launch the delayed job", DEADLINE)

    def ended() -> str | None:
        status = job.status().value
        return status if status in ("SUCCEEDED", "FAILED") else None

    assert wait_for(ended, "the job to end", DEADLINE) == "SUCCEEDED"
    assert job.result(timeout=1)["value"] == 55


def test_bad_requests(example: Example) -> None:
    resp = example.client.post("/fib/", "nope", content_type="application/json")
    assert resp.status_code == 400
    resp = example.client.post("/fib/", json.dumps({"n": "7"}), content_type="application/json")
    assert resp.status_code == 400
    assert "'n' must be an integer" in resp.json()["error"]
    assert example.client.get(f"/jobs/{UNKNOWN_ID}/").status_code == 404
    assert example.client.get("/jobs/nope/").status_code == 400
    assert example.client.get("/fib/").status_code == 405


@pytest.mark.slow
def test_the_machines_import_path_does_not_set_django_up(example: Example) -> None:
    code = (
        "import sys, examples.django_reports.tasks as t; "
        "print(t.fibonacci.name, sorted(m for m in ('django.apps.registry', 'django.db', "
        "'django.http') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": SETTINGS}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert out[0] == "examples.django_reports.tasks:fibonacci"
    assert out[1].strip() == "[]"
