"""Secret hygiene: the Fly token, the Redis password, the signing key and the dashboard token
never appear in log output, reprs, exception messages, job records, machine configs, worker
output or dashboard pages, on the happy path and on the error paths.

One deployment as in production: a password-protected Valkey, FlyBackend against the
emulator over HTTP (the worker's Redis URL and key are the jobs app's secrets), real machines.
Everything observable is collected and searched for each secret.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import balloons
from balloons import ConfigError, JobFailed, StoreError
from balloons.backends.base import BackendContext
from balloons.fly.client import RetryPolicy
from balloons.machine.worker import EXIT_STORE, Handoff
from tests import tasks
from tests.authvalkey import AuthValkey

from .conformance import Conformance
from .conftest import JOBS_APP, ROOT, FlyRig, Served

FLY_TOKEN = "fo1_hygiene-fly-token-" + os.urandom(6).hex()
PASSWORD = "hygiene-redis-pw-" + os.urandom(6).hex()
WRONG_PASSWORD = "hygiene-wrong-pw-" + os.urandom(6).hex()
SIGNING_KEY = "hygiene-signing-key-" + os.urandom(8).hex()
DASH_TOKEN = "hygiene-dashboard-token-" + os.urandom(6).hex()
SECRETS = {
    "Fly token": FLY_TOKEN,
    "Redis password": PASSWORD,
    "wrong Redis password": WRONG_PASSWORD,
    "signing key": SIGNING_KEY,
    "dashboard token": DASH_TOKEN,
}
FAST = RetryPolicy(attempts=2, base=0.01, cap=0.02)


class Seen:
    """Everything a user or operator could read, by where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: object) -> None:
        self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def error(self, where: str, exc: BaseException) -> None:
        for part in (str(exc), repr(exc), repr(exc.args), repr(getattr(exc, "__dict__", {}))):
            self.add(where, part)
        if exc.__cause__ is not None:
            self.add(where + " (cause)", str(exc.__cause__))

    def check(self) -> None:
        leaks = [
            f"{name} in {where}"
            for where, text in self.texts
            for name, secret in SECRETS.items()
            if secret in text
        ]
        assert leaks == []


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[AuthValkey]:
    server = AuthValkey(tmp_path / "valkey", PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def deployment(
    make_server: Callable[..., Served], conformance: Conformance, valkey: AuthValkey
) -> tuple[FlyRig, balloons.App]:
    served = make_server(
        token=FLY_TOKEN,
        secrets={"BALLOONS_REDIS_URL": valkey.url, "BALLOONS_SECRET": SIGNING_KEY},
        base_env={"PYTHONPATH": str(ROOT)},
    )
    served.client.headers["Authorization"] = f"Bearer {FLY_TOKEN}"
    created = served.client.post("/v1/apps", json={"name": JOBS_APP, "org_slug": "personal"})
    assert created.status_code == 201, created.text
    rig = FlyRig(served, conformance)
    app = rig.app(backend=rig.backend(token=FLY_TOKEN), redis_url=valkey.url, secret=SIGNING_KEY)
    return rig, app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _dump(url: str) -> str:
    """Every key and value in Redis, as text."""
    client = redis.Redis.from_url(url)
    out = []
    try:
        for key in client.scan_iter("*"):
            kind = client.type(key).decode()
            value: Any = {
                "hash": lambda k: client.hgetall(k),
                "string": lambda k: client.get(k),
                "list": lambda k: client.lrange(k, 0, -1),
                "set": lambda k: client.smembers(k),
                "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            }[kind](key)
            out.append(f"{key!r} {value!r}")
    finally:
        client.close()
    assert out, "nothing stored: the dump would prove nothing"
    return "\n".join(out)


def _as_text(x: Any) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def test_no_secret_shows_anywhere(
    deployment: tuple[FlyRig, balloons.App],
    valkey: AuthValkey,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: balloons, httpx, uvicorn, the emulator
    rig, app = deployment
    seen = Seen()
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    fail = balloons.Task(app, tasks.fail.fn, tasks.fail.name, tasks.fail.opts)

    # The happy path and a task error, on real machines.
    ok = add.submit(2, 3)
    assert ok.result(timeout=60) == 5
    bad = fail.submit("boom")
    with pytest.raises(JobFailed) as failed:
        bad.result(timeout=60)
    seen.error("JobFailed", failed.value)

    # Launch failures recorded on their jobs: 401, 404, API unreachable.
    for label, backend in {
        "401": rig.backend(token=FLY_TOKEN + "-revoked", retry=FAST),
        "404": rig.backend(token=FLY_TOKEN, app="no-such-app", retry=FAST),
        "unreachable": rig.backend(
            api_url=f"http://127.0.0.1:{_closed_port()}", retry=FAST, http=None, token=FLY_TOKEN
        ),
    }.items():
        other = rig.app(backend=backend, redis_url=valkey.url, secret=SIGNING_KEY)
        job = balloons.Task(other, tasks.add.fn, tasks.add.name, tasks.add.opts).submit(1, 1)
        with pytest.raises(JobFailed) as info:
            job.result(timeout=30)
        assert info.value.reason == "launch_failed", label
        seen.error(f"launch failure ({label})", info.value)
        seen.add(f"launch failure ({label}) record", job.info())
        with pytest.raises(balloons.FlyAPIError) as direct:
            backend.list()
        seen.error(f"FlyAPIError ({label})", direct.value)
        seen.add(f"backend ({label})", backend)

    # Reprs.
    sup = app.supervisor()
    handoff = Handoff.from_env(
        {
            "BALLOONS_JOB": f"{ok.id}/1",
            "BALLOONS_REDIS_URL": valkey.url,
            "BALLOONS_SECRET": SIGNING_KEY,
        }
    )
    ctx = BackendContext(valkey.url, SIGNING_KEY, "balloons", tmp_path)
    local = balloons.LocalBackend()
    local.bind(ctx)
    for obj in (
        app,
        app.store,
        app.settings,
        app.backend,
        app.backend.settings,  # type: ignore[attr-defined]
        app.backend.client,
        sup,
        handoff,
        ctx,
        local,
        ok,
        ok.info(),
        bad.info(),
    ):  # type: ignore[attr-defined]
        seen.add(f"repr of {type(obj).__name__}", repr(obj))
        seen.add(f"str of {type(obj).__name__}", str(obj))

    # Exceptions of the Redis side: a bad URL, a refused AUTH, an unreachable server.
    with pytest.raises(ConfigError) as bad_url:
        balloons.App(redis_url=f"foo://:{PASSWORD}@127.0.0.1:1/0", secret=SIGNING_KEY).store.ping()  # type: ignore[attr-defined]
    seen.error("bad URL", bad_url.value)
    wrong = valkey.url.replace(PASSWORD, WRONG_PASSWORD)
    refused = balloons.App(redis_url=wrong, secret=SIGNING_KEY, backend=rig.backend())
    for what, call in {
        "submit": lambda: balloons.Task(
            refused, tasks.add.fn, tasks.add.name, tasks.add.opts
        ).submit(1, 2),
        "listing": lambda: refused.jobs(),
        "job status": lambda: refused.job(ok.id).status(),
    }.items():
        with pytest.raises(StoreError) as info:
            call()
        assert "127.0.0.1" in str(info.value)
        seen.error(f"refused AUTH ({what})", info.value)

    # The worker's own output on its error paths (in this process, to keep it quick).
    monkeypatch.setattr("balloons.machine.worker.STORE_PATIENCE", 0.3)
    for url in (wrong, f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0"):
        env = {
            "BALLOONS_JOB": f"{ok.id}/1",
            "BALLOONS_REDIS_URL": url,
            "BALLOONS_SECRET": SIGNING_KEY,
        }
        assert balloons.machine.worker.main(env) == EXIT_STORE
    worker_err = capsys.readouterr().err
    assert "balloons worker:" in worker_err
    seen.add("worker stderr (in-process)", worker_err)

    # What went to the Fly API, and what the machines printed.
    machines = rig.machines(include_deleted="true")
    assert machines
    for m in machines:
        seen.add(f"machine {m['id']} as the API shows it", json.dumps(m))
        log = rig.emulator.log_path(m["id"])
        if log.exists():
            seen.add(f"machine {m['id']} output", log.read_text(errors="replace"))
    for exchange in rig.conformance.exchanges:
        seen.add("a request to the Fly API", repr(exchange))

    # The dashboard, signed in, on its pages and its error paths.
    import httpx

    from balloons.dashboard import create_app
    from tests.dashboard.conftest import ServerThread

    served = ServerThread(create_app(app, token=DASH_TOKEN))
    served.start()
    url = f"http://127.0.0.1:{served.port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as web:
            seen.add("login page", web.get("/login").text)
            refused_login = web.post(
                "/login", data={"token": DASH_TOKEN + "x", "next": ""}, headers={"origin": url}
            )
            seen.add("refused login", refused_login.text)
            login = web.post(
                "/login", data={"token": DASH_TOKEN, "next": ""}, headers={"origin": url}
            )
            assert login.status_code == 303, login.text
            seen.add("session cookie", repr(dict(web.cookies)))
            pages = [
                "/",
                "/jobs",
                "/pools",
                "/metrics",
                f"/jobs/{ok.id}",
                f"/jobs/{bad.id}",
                "/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh",
                "/jobs/not-a-job-id",
            ]
            for path in pages:
                page = web.get(path, follow_redirects=True)
                assert page.status_code in (200, 404), (path, page.status_code)
                seen.add(f"dashboard {path}", page.text)
            valkey.stop()  # the error path: Redis is gone
            for path in ("/jobs", f"/jobs/{ok.id}", "/pools", "/metrics"):
                page = web.get(path)
                assert page.status_code == 503, (path, page.status_code)
                assert "cannot reach Redis at redis://***@127.0.0.1" in page.text, page.text
                seen.add(f"dashboard {path} with Redis down", page.text)
            valkey.start()
    finally:
        served.stop()

    # Every record in Redis, every log line of every logger.
    seen.add("Redis", _dump(valkey.url))
    assert any(r.name.startswith("balloons") for r in caplog.records)
    seen.add("log records", "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records))
    seen.add("log records (args)", repr([r.args for r in caplog.records]))
    seen.check()
