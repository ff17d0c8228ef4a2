"""The deployment of docs/deploy-fly.md, checked short of a Docker engine and a Fly account:
the Dockerfile and fly.toml of ``examples/flask_email`` are the ones the page shows and fit
together, and the Flask example runs as deployed (fly.toml's ``[env]``, the secrets the page
sets, the variables Fly sets on a machine) with the emulator standing in for Fly."""

from __future__ import annotations

import importlib
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balloons.config import ENV_VARS
from tests.waiting import wait_for

from .conftest import ROOT, TOKEN, Served

EXAMPLE = ROOT / "examples" / "flask_email"
DOC = ROOT / "docs" / "deploy-fly.md"
PACKAGE = "examples.flask_email"
WEB_IMAGE = "registry.fly.io/balloons-demo:deployment-01j0000000000000000000000"


def _fly_toml() -> dict[str, Any]:
    return tomllib.loads((EXAMPLE / "fly.toml").read_text())


def _instructions(dockerfile: str) -> list[str]:
    return [line for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]


def _doc_block(language: str, first_line: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)
    (found,) = [b for b in blocks if b.startswith(first_line)]
    return str(found)


def test_the_page_shows_the_files_as_they_are() -> None:
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    assert _instructions(_doc_block("dockerfile", "FROM ")) == _instructions(dockerfile)
    shown = tomllib.loads(_doc_block("toml", 'app = "'))
    assert shown == _fly_toml()


def test_the_dockerfile_and_fly_toml_fit_together() -> None:
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    toml = _fly_toml()
    assert (EXAMPLE / toml["build"]["dockerfile"]).is_file()
    # Built from the repository root: everything it copies is there.
    for line in _instructions(dockerfile):
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line
    # It installs an extra the project defines, and serves on the port fly.toml routes to.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    (wanted,) = re.findall(r'"\.\[(\w+)\]"', dockerfile)
    # The Fly backend's client, and not the emulator's server (a production image needs none).
    installed = {re.split(r"[<>=\[]", d)[0] for d in extras[wanted]}
    assert "httpx" in installed and not installed & {"starlette", "uvicorn"}
    port = toml["http_service"]["internal_port"]
    assert f"EXPOSE {port}" in dockerfile and f"0.0.0.0:{port}" in dockerfile
    # No ENTRYPOINT: a job machine's init.cmd replaces the CMD (the web server).
    assert "ENTRYPOINT" not in "\n".join(_instructions(dockerfile))
    (cmd,) = [line for line in _instructions(dockerfile) if line.startswith("CMD ")]
    assert "examples.flask_email.app:flask_app" in cmd
    # Every balloons variable it sets is one balloons knows (unknown ones are refused).
    env = toml["env"]
    assert env["BALLOONS_BACKEND"] == "fly"
    assert set(env) <= set(ENV_VARS)
    assert env["BALLOONS_FLY_APP"] != toml["app"]  # job machines in an app of their own


@pytest.fixture
def deployed(
    make_server: Any, redis_url: str, secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Served, Path]]:
    """The example imported as its web machine would run it, against the emulator."""
    toml = _fly_toml()
    jobs_app = toml["env"]["BALLOONS_FLY_APP"]
    outbox = tmp_path / "outbox"
    served: Served = make_server(
        token=TOKEN,  # the jobs app's deploy token
        # The jobs app's secrets, as `fly secrets set -a balloons-demo-jobs ...` sets them.
        secrets={"REDIS_URL": redis_url, "BALLOONS_SECRET": secret,
                 "DUMMY_MAIL_DIR": str(outbox)},
        base_env={"PYTHONPATH": str(ROOT)},  # the image's /app, where `examples` lives
    )  # fmt: skip
    created = served.client.post("/v1/apps", json={"name": jobs_app, "org_slug": "personal"})
    assert created.status_code == 201, created.text
    served.client.delete("/_emulator/stats")
    for name in [n for n in list(os.environ) if n.startswith("BALLOONS_")]:
        monkeypatch.delenv(name)
    for name in ("MAILJET_API_KEY", "MAILJET_API_SECRET", "MAILJET_SENDER", "DUMMY_MAIL_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    environment = {
        **toml["env"],
        # The one change: the emulator instead of https://api.machines.dev.
        "BALLOONS_FLY_API_URL": served.base_url,
        # What Fly sets on the web app's machine.
        "FLY_APP_NAME": toml["app"], "FLY_IMAGE_REF": WEB_IMAGE,
        "FLY_REGION": toml["primary_region"], "FLY_MACHINE_ID": "148ed193b95089",
        # The web app's secrets, as `fly secrets set -a balloons-demo ...` sets them.
        "REDIS_URL": redis_url, "BALLOONS_SECRET": secret,
        "FLY_API_TOKEN": TOKEN,
    }  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    _forget_example()
    monkeypatch.syspath_prepend(str(ROOT))
    web = importlib.import_module(f"{PACKAGE}.app")
    supervisor = web.flask_app.extensions["balloons_supervisor"]
    try:
        yield web, served, outbox
    finally:
        supervisor.stop()
        web.tasks.app.close()
        _forget_example()


def _forget_example() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def test_the_example_runs_as_deployed(deployed: tuple[Any, Served, Path]) -> None:
    web, served, outbox = deployed
    # On Fly the web app supervises its jobs: nothing else would notice a machine that died.
    assert web.flask_app.extensions["balloons_supervisor"].running
    client = web.flask_app.test_client()
    sent = client.post("/send", json={"subject": "Hi", "body": "From Fly", "to": "a@b.co"})
    assert sent.status_code == 202, sent.get_data(as_text=True)
    task_id = sent.get_json()["task_id"]

    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = client.get(f"/status/{task_id}").get_json()
        return None if status["status"] == "PENDING" else status

    status = wait_for(done, f"task {task_id} to leave PENDING")
    assert status["status"] == "SUCCESS", status
    assert status["result"]["via"] == "dummy" and (outbox / "outbox.jsonl").exists()
    # One create, in the jobs app, with the web app's own image, in its region; nothing but the
    # handoff in the machine's env: Redis and the key came from the jobs app's secrets.
    # (The supervisor's orphan sweep lists the jobs app's machines once per 30 s.)
    calls = served.client.get("/_emulator/stats").json()["calls"]
    assert calls.pop("POST /v1/apps/{app_name}/machines") == 1
    assert set(calls) <= {"GET /v1/apps/{app_name}/machines"}
    (machine,) = served.emulator.machines.values()
    assert machine.app == "balloons-demo-jobs" and machine.region == "iad"
    assert machine.config["image"] == WEB_IMAGE
    assert machine.config["init"] == {"cmd": ["python", "-m", "balloons.machine"]}
    assert machine.config["env"] == {"BALLOONS_JOB": f"{task_id}/1"}
