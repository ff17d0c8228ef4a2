"""FlyBackend's settings and errors: each mistake gets a message naming what to fix, the job
is failed with it (``launch_failed``), and the token never shows."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

import balloons
from balloons import ConfigError, FlyAPIError, FlyBackend, JobFailed
from balloons.backends.base import BackendContext
from balloons.fly.client import RetryPolicy
from balloons.fly.emulator import Faults
from balloons.fly.settings import FlySettings
from tests import tasks

from .conftest import JOBS_APP, JOBS_IMAGE, TOKEN, FlyRig
from .test_backend_jobs import on

FAST = RetryPolicy(attempts=2, base=0.01, cap=0.02)
BAD_TOKEN = "fo1_not-the-right-token-1234567890"


def _launch_failure(app: balloons.App) -> JobFailed:
    job = on(app, tasks.add).submit(1, 2)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "launch_failed"
    assert job.status() is balloons.JobStatus.FAILED
    return info.value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _ctx(env: dict[str, str]) -> BackendContext:
    return BackendContext("redis://localhost", "s3cret", "balloons", Path("/nonexistent"), env)


def _no_token_anywhere(exc: BaseException, token: str) -> None:
    for text in (str(exc), repr(exc), repr(exc.args), repr(vars(exc))):
        assert token not in text


def test_unreachable_api(rig: FlyRig) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    backend = rig.backend(api_url=url, retry=FAST, http=None)
    exc = _launch_failure(rig.app(backend=backend))
    assert f"cannot reach the Fly Machines API at {url}" in exc.error_message
    assert "BALLOONS_FLY_API_URL" in exc.error_message
    with pytest.raises(FlyAPIError) as direct:
        backend.inspect("0123456789abcd")
    assert direct.value.status is None


def test_bad_token(rig: FlyRig) -> None:
    backend = rig.backend(token=BAD_TOKEN)
    exc = _launch_failure(rig.app(backend=backend))
    assert "FLY_API_TOKEN" in exc.error_message and "401" in exc.error_message
    assert f"fly tokens create deploy -a {JOBS_APP}" in exc.error_message
    assert BAD_TOKEN not in exc.error_message
    with pytest.raises(FlyAPIError) as direct:
        backend.list()
    err = direct.value
    assert err.status == 401
    assert err.error == "Authenticate: token validation error"
    assert err.request_id and err.request_id in str(err)
    assert err.method == "GET" and err.path == f"/apps/{JOBS_APP}/machines"
    _no_token_anywhere(err, BAD_TOKEN)
    assert BAD_TOKEN not in repr(backend) and BAD_TOKEN not in repr(backend.settings)
    assert BAD_TOKEN not in repr(backend.client)
    assert rig.machines() == []


def test_missing_app(rig: FlyRig) -> None:
    exc = _launch_failure(rig.app(backend=rig.backend(app="no-such-app")))
    assert "'no-such-app' not found" in exc.error_message
    assert "BALLOONS_FLY_APP" in exc.error_message
    assert "fly apps create no-such-app" in exc.error_message


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "FLY_API_TOKEN"),
        ({"FLY_API_TOKEN": "t"}, "BALLOONS_FLY_APP"),
        ({"FLY_API_TOKEN": "t", "FLY_APP_NAME": "a"}, "BALLOONS_FLY_IMAGE"),
        ({"FLY_API_TOKEN": "t", "FLY_APP_NAME": "a", "FLY_IMAGE_REF": "i",
          "BALLOONS_FLY_API_URL": "api.machines.dev"}, "BALLOONS_FLY_API_URL"),
        ({"FLY_API_TOKEN": "t", "FLY_APP_NAME": "a", "FLY_IMAGE_REF": "i",
          "BALLOONS_FLY_CPU_KIND": "gpu"}, "BALLOONS_FLY_CPU_KIND"),
        ({"FLY_API_TOKEN": "t", "FLY_APP_NAME": "a", "FLY_IMAGE_REF": "i",
          "BALLOONS_FLY_REGION": "iad,ord"}, "BALLOONS_FLY_FALLBACK_REGIONS"),
        ({"FLY_API_TOKEN": "t", "FLY_APP_NAME": "a", "FLY_IMAGE_REF": "i",
          "BALLOONS_FLY_FALLBACK_REGIONS": "ord,New York"}, "BALLOONS_FLY_FALLBACK_REGIONS"),
    ],
)  # fmt: skip
def test_missing_or_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        FlyBackend().bind(_ctx(env))


def test_settings_precedence() -> None:
    env = {
        "FLY_API_TOKEN": "sekrit-9", "FLY_APP_NAME": "web", "BALLOONS_FLY_APP": "jobs",
        "FLY_IMAGE_REF": "registry.fly.io/web:deployment-1", "FLY_REGION": "ams",
        "BALLOONS_FLY_FALLBACK_REGIONS": " fra, ams ,cdg",
    }  # fmt: skip
    s = FlySettings.resolve(env)
    assert (s.app, s.image, s.region, s.cpu_kind) == (
        "jobs", "registry.fly.io/web:deployment-1", "ams", "shared"
    )  # fmt: skip
    assert s.api_url == "https://api.machines.dev"
    assert s.fallback_regions == ("fra", "cdg")
    s = FlySettings.resolve(env, app="other", image="img:2", region="iad", cpu_kind="performance")
    assert (s.app, s.image, s.region, s.cpu_kind) == ("other", "img:2", "iad", "performance")
    assert "sekrit-9" not in repr(s)


def test_missing_settings_fail_the_job_not_the_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALLOONS_BACKEND", "fly")
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    exc = _launch_failure(balloons.App())
    assert "FLY_API_TOKEN" in exc.error_message


def test_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch, rig: FlyRig) -> None:
    for name, value in {
        "BALLOONS_BACKEND": "fly", "FLY_API_TOKEN": TOKEN, "BALLOONS_FLY_APP": JOBS_APP,
        "BALLOONS_FLY_API_URL": rig.served.base_url, "BALLOONS_FLY_IMAGE": JOBS_IMAGE,
        "BALLOONS_FLY_REGION": "ord",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    app = balloons.App()
    job = on(app, tasks.add).submit(3, 4)
    assert job.result(timeout=30) == 7
    assert isinstance(app.backend, FlyBackend)
    assert rig.emulator.machines[job.info().machine_id or ""].region == "ord"


def test_inspect_stop_destroy_and_list(rig: FlyRig) -> None:
    app = rig.app(backend=rig.backend(background_launches=False))  # created when submit returns
    backend = app.backend
    assert backend.inspect("0123456789abcd") is None
    backend.stop("0123456789abcd")  # already gone: nothing to do
    backend.destroy("0123456789abcd")
    job = on(app, tasks.sleep).submit(30)
    (machine,) = backend.list(job=job.id)
    assert machine.job_id == job.id and machine.attempt == 1 and machine.pool == "default"
    assert backend.list(pool="default", attempt="1")[0].id == machine.id
    assert backend.list(job="default.01m8fvfatdry2zscdq1e9q8azt") == []
    with pytest.raises(balloons.BackendError, match="cannot filter machines by 'color'"):
        backend.list(color="red")
    backend.destroy(machine.id)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason in ("killed", "lost", "cancelled")
    gone = backend.inspect(machine.id)
    assert gone is not None and gone.state == "destroyed" and not gone.running
    assert backend.list(job=job.id) == []


def test_launch_stop_destroy_a_machine_directly(make_rig: Callable[..., FlyRig]) -> None:
    # The machine boots late: a worker that found no job (there is none) would otherwise exit
    # and be destroyed before the listing.
    rig = make_rig(faults=Faults(boot_delay=60))
    app = rig.app()
    spec = app._spec("default", "01m8fvfatdry2zscdq1e9q8azt", 1, 1, 256, 30.0)
    launched = app.backend.launch(spec)
    listed = app.backend.list(job=spec.job_id)
    app.backend.stop(launched.id)
    app.backend.destroy(launched.id)
    seen = app.backend.inspect(launched.id)
    missing = app.backend.inspect("0123456789abcd")
    assert launched.state == "created" and launched.job_id == "default.01m8fvfatdry2zscdq1e9q8azt"
    assert [m.id for m in listed] == [launched.id]
    assert seen is not None and seen.state in ("destroying", "destroyed")
    assert missing is None
    rig.wait_all_destroyed()
