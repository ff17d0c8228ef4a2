"""The HTTP worker protocol on Fly (the emulator): machines of a ``protocol="http"`` pool and
command jobs with a service URL hold only their attempt's URL and token, never the store's
URL, the signing key or the Fly token; what they report is recorded once."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

import balloons
from tests import tasks
from tests.attemptserver import attempt_server

from .conftest import TOKEN, FlyRig

IMAGE = "registry.example/tools:1"
WORKERS = Path(__file__).resolve().parents[2] / "examples" / "workers"
POOL = "untrusted"
#: What no machine of the worker protocol may be given (in its env or anywhere in its config).
STORE_NAMES = ("BALLOONS_REDIS_URL", "REDIS_URL", "BALLOONS_SECRET", "FLY_API_TOKEN")


@pytest.fixture
def app(rig: FlyRig) -> balloons.App:
    app: balloons.App = rig.supervised_app()
    return app


def on(app: balloons.App, task: balloons.Task[Any, Any]) -> balloons.Task[Any, Any]:
    """``task`` submitted through ``app`` on the pool of the protocol."""
    return balloons.Task(app, task.fn, task.name, task.opts).options(pool=POOL)


def _holds_no_credentials(config: dict[str, Any], redis_url: str, secret: str) -> None:
    for name in STORE_NAMES:
        assert name not in config["env"], name
    stored = json.dumps(config)
    for value in (redis_url, secret, TOKEN):
        assert value not in stored
    assert all(p.get("ignore_app_secrets") is True for p in config["processes"])


def test_a_python_task_of_an_http_pool_runs_on_a_machine_without_credentials(
    rig: FlyRig, app: balloons.App, redis_url: str, secret: str
) -> None:
    app.pool(POOL, protocol="http", idle_timeout=0)
    with attempt_server(app) as server:
        app.service_url = server.url
        job = on(app, tasks.environment).submit()
        env = job.result(timeout=60)["env"]
        assert on(app, tasks.add).submit(2, 3).result(timeout=60) == 5
    config = rig.config_of(job.id)
    assert config["env"]["BALLOONS_ATTEMPT_URL"] == f"{server.url}/v1/attempts/{job.id}/1"
    assert config["env"]["BALLOONS_ATTEMPT_TOKEN"].startswith("bat1.")
    assert "BALLOONS_JOB" not in config["env"]
    _holds_no_credentials(config, redis_url, secret)
    # What the task saw: its machine's env, as the emulator gave it (no app secret either).
    for name in STORE_NAMES:
        assert name not in env, name
    assert secret not in repr(env) and redis_url not in repr(env)
    info = job.info()
    assert info.status == "SUCCEEDED" and len(info.attempts) == 1
    rig.wait_all_destroyed()


def test_a_protocol_command_gets_its_input_as_a_file_and_no_credentials(
    rig: FlyRig, app: balloons.App, redis_url: str, secret: str
) -> None:
    with attempt_server(app) as server:
        script = 'read -r n; echo "seen $n" >&2; echo "{\\"n\\": $n, \\"twice\\": $((n * 2))}"'
        # The emulator writes files under the machine's root: the worker reads its input there.
        rooted = 'BALLOONS_INPUT_PATH="$FLY_EMULATOR_ROOT$BALLOONS_INPUT_PATH" exec "$@"'
        job = app.submit_command(
            ["sh", "-c", rooted, "sh", "sh", str(WORKERS / "worker.sh"), "sh", "-c", script],
            image=IMAGE,
            input=21,
            service_url=server.url,
            timeout=60,
        )
        assert job.result(timeout=60) == {"n": 21, "twice": 42}
    config = rig.config_of(job.id)
    env = config["env"]
    assert env["BALLOONS_ATTEMPT_URL"] == f"{server.url}/v1/attempts/{job.id}/1"
    assert env["BALLOONS_ATTEMPT_TOKEN"].startswith("bat1.")
    assert env["BALLOONS_INPUT_PATH"] == "/balloons/input.json"
    (file,) = config["files"]
    assert file["guest_path"] == "/balloons/input.json"
    assert json.loads(base64.b64decode(file["raw_value"])) == 21
    _holds_no_credentials(config, redis_url, secret)
    assert [(line.source, line.text) for line in job.logs()] == [("err", "seen 21")]
    info = job.info()
    assert info.status == "SUCCEEDED" and [a.outcome for a in info.attempts] == ["SUCCEEDED"]
    rig.wait_all_destroyed()


def test_http_pool_retries_run_on_new_machines_with_new_tokens(
    rig: FlyRig, app: balloons.App, tmp_path: Path
) -> None:
    app.pool(POOL, protocol="http", idle_timeout=0, boot_timeout=5.0)
    with attempt_server(app) as server:
        app.service_url = server.url
        # A retryable error reported with `fail`, then a machine killed before it reports.
        flaky = on(app, tasks.flaky).submit(str(tmp_path / "flaky"), 1)
        assert flaky.result(timeout=60) == 2
        died = on(app, tasks.dies_once).submit(str(tmp_path / "died"))
        assert died.result(timeout=60) == 2
    for job in (flaky, died):
        first, second = rig.config_of(job.id, 1)["env"], rig.config_of(job.id, 2)["env"]
        assert second["BALLOONS_ATTEMPT_URL"].endswith(f"/v1/attempts/{job.id}/2")
        assert first["BALLOONS_ATTEMPT_TOKEN"] != second["BALLOONS_ATTEMPT_TOKEN"]
        info = job.info()
        assert info.status == "SUCCEEDED" and len(info.attempts) == 2
    rig.wait_all_destroyed()
