"""Command jobs with FlyBackend against the emulator: a machine of the job's image runs its argv
with its input as a file and none of the app's secrets; the supervisor observes its exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import balloons
from balloons import JobFailed
from tests.attemptserver import attempt_server

from .conftest import FlyRig

IMAGE = "registry.example/tools:1"
WORKERS = Path(__file__).resolve().parents[2] / "examples" / "workers"


@pytest.fixture
def app(rig: FlyRig) -> balloons.App:
    app: balloons.App = rig.supervised_app()
    return app


def test_a_passive_command_runs_on_a_machine_of_its_image(
    rig: FlyRig, app: balloons.App, tmp_path: Path, redis_url: str, secret: str
) -> None:
    out = tmp_path / "seen.json"
    script = (
        'printf \'{"input": %s, "secret": "%s", "redis": "%s", "extra": "%s"}\' '
        '"$(cat "$FLY_EMULATOR_ROOT$BALLOONS_INPUT_PATH")" "${BALLOONS_SECRET:-}" '
        f'"${{BALLOONS_REDIS_URL:-}}" "$EXTRA" > {out}'
    )
    job = app.submit_command(
        ["sh", "-c", script], image=IMAGE, input={"n": 7}, env={"EXTRA": "x"}, timeout=60
    )
    assert job.result(timeout=60) is None
    assert json.loads(out.read_text()) == {"input": {"n": 7}, "secret": "", "redis": "",
                                           "extra": "x"}  # fmt: skip
    config = rig.config_of(job.id)
    assert config["image"] == IMAGE
    assert config["processes"] == [{"exec": ["sh", "-c", script], "ignore_app_secrets": True}]
    assert config["env"] == {"EXTRA": "x", "BALLOONS_INPUT_PATH": "/balloons/input.json"}
    assert [f["guest_path"] for f in config["files"]] == ["/balloons/input.json"]
    stored = repr(config)
    for value in (secret, redis_url):
        assert value not in stored
    info = job.info()
    assert info.status == "SUCCEEDED" and len(info.attempts) == 1
    rig.wait_all_destroyed()


def test_a_listed_exit_code_is_retried_on_a_new_machine_of_the_image(
    rig: FlyRig, app: balloons.App
) -> None:
    job = app.submit_command(
        ["sh", "-c", "exit 3"], image=IMAGE, retries=1, retry_on_exit_codes=[3],
        retry_backoff=0, timeout=60,
    )  # fmt: skip
    with pytest.raises(JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "exit_code=3"
    assert [a.reason for a in job.info().attempts] == ["exit_code=3", "exit_code=3"]
    assert rig.config_of(job.id, 2)["image"] == IMAGE


def test_an_unlisted_exit_code_fails_at_once(rig: FlyRig, app: balloons.App) -> None:
    job = app.submit_command(
        ["sh", "-c", "exit 5"], image=IMAGE, retries=2, retry_on_exit_codes=[3], timeout=60
    )
    with pytest.raises(JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "exit_code=5"
    assert len(job.info().attempts) == 1


def test_a_protocol_command_reports_through_the_attempt_url(rig: FlyRig, app: balloons.App) -> None:
    with attempt_server(app) as server:
        script = 'read -r n; echo "{\\"n\\": $n}"'
        # The emulator writes files under the machine's root: the worker reads its input there.
        rooted = 'BALLOONS_INPUT_PATH="$FLY_EMULATOR_ROOT$BALLOONS_INPUT_PATH" exec "$@"'
        job = app.submit_command(
            ["sh", "-c", rooted, "sh", "sh", str(WORKERS / "worker.sh"), "sh", "-c", script],
            image=IMAGE,
            input=5,
            service_url=server.url,
            timeout=60,
        )
        assert job.result(timeout=60) == {"n": 5}
    env = rig.config_of(job.id)["env"]
    assert env["BALLOONS_ATTEMPT_URL"] == f"{server.url}/v1/attempts/{job.id}/1"
    assert env["BALLOONS_ATTEMPT_TOKEN"].startswith("bat1.")


def test_a_passive_command_outliving_its_boot_lease_is_kept_alive(
    rig: FlyRig, app: balloons.App
) -> None:
    # No heartbeat comes from the machine: the supervisor renews its slot while it runs.
    app.pool("slow", boot_timeout=1.0, idle_timeout=0)
    job = app.submit_command(["sh", "-c", "sleep 8"], image=IMAGE, pool="slow", timeout=60)
    assert job.result(timeout=60) is None
    assert [a.outcome for a in job.info().attempts] == ["SUCCEEDED"]


def test_a_passive_command_past_its_deadline_is_stopped(rig: FlyRig, app: balloons.App) -> None:
    app.pool("short", boot_timeout=1.0, idle_timeout=0)
    job = app.submit_command(["sh", "-c", "sleep 300"], image=IMAGE, pool="short", timeout=2)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "timeout"
    rig.wait_all_destroyed()


def test_command_jobs_whose_launch_waits_keep_their_slot(rig: FlyRig, app: balloons.App) -> None:
    # Creates wait for the rate limit: a waiting launch never goes back to the queue for a
    # worker to take (it would run the command in the worker's image).
    jobs = [
        app.submit_command(["sh", "-c", f"exit {i % 2}"], image=IMAGE, timeout=60) for i in range(3)
    ]
    for i, job in enumerate(jobs):
        if i % 2:
            with pytest.raises(JobFailed, match="exit_code=1"):
                job.result(timeout=60)
        else:
            assert job.result(timeout=60) is None
    configs = [m.config for m in rig.emulator.machines.values()]
    assert len(configs) == 3
    assert all(c["image"] == IMAGE and "processes" in c for c in configs)
