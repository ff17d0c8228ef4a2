"""The job service of ``examples/service`` (scale to zero on Fly), checked short of a Docker
engine and a Fly account: its Dockerfile and fly.toml fit together, and the Dockerfile's
``CMD``, run with fly.toml's ``[env]``, the secrets its README sets and the variables Fly sets
on a machine, with the emulator standing in for Fly, serves a job submitted over HTTP on a
machine of the jobs app and then exits by itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.config import ENV_VARS
from tests.ports import free_port
from tests.waiting import wait_for

from .conftest import ROOT, TOKEN, Served

EXAMPLE = ROOT / "examples" / "service"
IMAGE = "registry.fly.io/balloons-service:deployment-01j0000000000000000000000"
ADMIN = "admin-key-of-the-example-service"


def _fly_toml() -> dict[str, Any]:
    return tomllib.loads((EXAMPLE / "fly.toml").read_text())


def _instructions() -> list[str]:
    text = (EXAMPLE / "Dockerfile").read_text()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _cmd() -> list[str]:
    (line,) = [line for line in _instructions() if line.startswith("CMD ")]
    cmd: list[str] = json.loads(line[len("CMD ") :])
    return cmd


def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_the_dockerfile_and_fly_toml_fit_together() -> None:
    toml, instructions, cmd = _fly_toml(), _instructions(), _cmd()
    assert (EXAMPLE / toml["build"]["dockerfile"]).is_file()
    # Scale to zero: the proxy starts the service on a request, nothing keeps one running,
    # and the service stops itself (the proxy does not stop it mid-job).
    http = toml["http_service"]
    assert http["auto_start_machines"] is True and http["min_machines_running"] == 0
    assert http["auto_stop_machines"] in ("off", False)
    assert cmd[:3] == ["python", "-m", "balloons.service"]
    assert float(_option(cmd, "--idle-exit")) > 0
    assert _option(cmd, "--host") == "0.0.0.0"
    port = http["internal_port"]
    assert _option(cmd, "--port") == str(port) and f"EXPOSE {port}" in instructions
    # Built from the repository root: everything it copies is there, the task module too.
    for line in instructions:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line
    module = _option(cmd, "-A")
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    # The service's and the Fly backend's extras, both defined by the project.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (wanted,) = re.findall(r'"\.\[([\w,]+)\]"', "\n".join(instructions))
    assert set(wanted.split(",")) == {"fly", "service"}
    assert set(wanted.split(",")) <= set(extras["optional-dependencies"])
    # No ENTRYPOINT: a job machine's init.cmd replaces the CMD.
    assert not any(line.startswith("ENTRYPOINT") for line in instructions)
    env = toml["env"]
    assert env["BALLOONS_BACKEND"] == "fly" and set(env) <= set(ENV_VARS)
    assert env["BALLOONS_FLY_APP"] != toml["app"]  # job machines in an app of their own
    readme = (EXAMPLE / "README.md").read_text()
    assert f"fly apps create {toml['app']}" in readme
    assert f"fly apps create {env['BALLOONS_FLY_APP']}" in readme
    assert "--config examples/service/fly.toml --dockerfile examples/service/Dockerfile" in readme


@pytest.fixture
def service(
    make_server: Any, redis_url: str, secret: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Served]]:
    """The Dockerfile's CMD as the service's machine runs it, against the emulator."""
    toml = _fly_toml()
    served: Served = make_server(
        token=TOKEN,  # the jobs app's deploy token
        # The jobs app's secrets, as its README's `fly secrets set -a ...-jobs` sets them.
        secrets={"REDIS_URL": redis_url, "BALLOONS_SECRET": secret},
        base_env={"PYTHONPATH": str(ROOT)},  # the image's /app, where `examples` lives
    )
    jobs_app = toml["env"]["BALLOONS_FLY_APP"]
    created = served.client.post("/v1/apps", json={"name": jobs_app, "org_slug": "personal"})
    assert created.status_code == 201, created.text
    served.client.delete("/_emulator/stats")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALLOONS_", "FLY_"))}
    env.update(toml["env"])
    env.update({
        # The one change to fly.toml: the emulator instead of https://api.machines.dev.
        "BALLOONS_FLY_API_URL": served.base_url,
        # What Fly sets on the service's machine.
        "FLY_APP_NAME": toml["app"], "FLY_IMAGE_REF": IMAGE,
        "FLY_REGION": toml["primary_region"], "FLY_MACHINE_ID": "3d8d9e1be04789",
        # The service's secrets, as its README sets them.
        "REDIS_URL": redis_url, "BALLOONS_SECRET": secret, "FLY_API_TOKEN": TOKEN,
        "BALLOONS_SERVICE_TOKEN": ADMIN,
        "HOME": str(tmp_path / "home"),
    })  # fmt: skip
    # The CMD as it is, but for this interpreter, a free port on the loopback and an idle
    # period a test can wait out (300 s in the image).
    cmd = _cmd()
    port = free_port()
    cmd[0] = sys.executable
    cmd[cmd.index("--port") + 1] = str(port)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--idle-exit") + 1] = "3"
    with (tmp_path / "service.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            yield proc, f"http://127.0.0.1:{port}", served
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def test_the_example_service_runs_a_job_on_fly_and_exits_once_idle(
    service: tuple[subprocess.Popen[bytes], str, Served],
) -> None:
    proc, url, served = service
    auth = {"Authorization": f"Bearer {ADMIN}"}

    def up() -> bool:
        try:
            return httpx.get(f"{url}/v1/health", timeout=5).status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, "the service exited before answering"
            return False

    wait_for(up, "the example service to answer")
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        task = f"{_option(_cmd(), '-A')}:word_count"
        submitted = client.post("/v1/jobs", json={"task": task, "args": ["to be or not to be"]})
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]

        def ended() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
            return body if body["state"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(ended, f"job {job_id} to end")
    assert job["state"] == "succeeded", job
    assert job["result"] == {"to": 2, "be": 2, "or": 1, "not": 1}
    # One machine, in the jobs app, with the service's own image; nothing in its env but the
    # handoff: Redis and the key came from the jobs app's secrets.
    calls = served.client.get("/_emulator/stats").json()["calls"]
    assert calls.pop("POST /v1/apps/{app_name}/machines") == 1
    machines = list(served.emulator.machines.values())
    assert [m.app for m in machines] == [_fly_toml()["env"]["BALLOONS_FLY_APP"]]
    assert machines[0].config["image"] == IMAGE
    assert machines[0].config["init"] == {"cmd": ["python", "-m", "balloons.machine"]}
    assert machines[0].config["env"] == {"BALLOONS_JOB": f"{job_id}/1"}
    # Then, with nothing left to do, the service stops itself: a clean exit, which the
    # restart policy of `fly deploy` (on-failure) leaves stopped until the next request.
    wait_for(lambda: proc.poll() is not None, "the example service to exit once idle")
    assert proc.returncode == 0
