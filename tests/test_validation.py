"""Every value a user gives is range-checked (NaN and infinity refused), before anything is
written; a short signing key is refused; a Redis URL that points at something that does not
speak the Redis protocol is said in one line, in every command."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner

import balloons
from balloons import ConfigError, SerializationError
from balloons.backends.local import LocalBackend
from balloons.cli import main as cli
from balloons.config import Settings
from balloons.dashboard import create_app
from tests import tasks

NAN, INF = math.nan, math.inf


def nothing_stored(r: redis.Redis) -> None:
    # Machine records are left out: the fork server writes those of earlier tests' machines
    # as they exit, and a refused submit launches nothing (no slot, job or pool key either).
    left = sorted(k.decode() for k in r.keys("*") if b":machine:" not in k)
    assert left == [], left


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("boot_timeout", NAN),
        ("boot_timeout", INF),
        ("boot_timeout", 1e308),
        ("heartbeat", NAN),
        ("heartbeat", -INF),
        ("idle_timeout", NAN),
        ("idle_timeout", True),
        ("max_machines", 10**12),
        ("cpus", 10**6),
        ("memory_mb", 10**15),
        ("standby", 10**12),
    ],
)
def test_pool_settings_out_of_range_are_refused(setting: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{setting} must be .*got {re.escape(repr(value))}"):
        tasks.app.pool("checked", **{setting: value})  # type: ignore[arg-type]
    assert "checked" not in tasks.app.pools


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("cpus", True),
        ("cpus", 10**6),
        ("memory_mb", 10**15),
        ("timeout", NAN),
        ("retries", 10**9),
        ("retry_backoff", NAN),
        ("retry_backoff_max", INF),
        ("retry_memory_factor", NAN),
        ("retry_memory_factor", INF),
        ("retry_memory_max", 10**15),
        ("priority", True),
        ("max_cost", NAN),
        ("max_cost", INF),
    ],
)
def test_task_options_out_of_range_are_refused(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{option} must be .*got {re.escape(repr(value))}"):
        tasks.add.options(**{option: value})


@pytest.mark.parametrize(
    "extra",
    [
        {"delay": NAN},
        {"delay": INF},
        {"delay": -1},
        {"delay": 1e308},
        {"delay": "5"},
        {"delay": True},
        {"at": datetime.now(UTC) + timedelta(days=400)},
        {"priority": True},
        {"priority": 10**9},
    ],
)
def test_a_refused_submit_stores_nothing(r: redis.Redis, extra: dict[str, Any]) -> None:
    name = next(iter(extra))
    with pytest.raises(ConfigError, match=rf"{name} must be"):
        tasks.add.options(**extra).submit(1, 2)
    nothing_stored(r)


def test_waits_graces_and_limits_out_of_range_are_refused(r: redis.Redis) -> None:
    job = tasks.app.job(JOB)
    for bad in (NAN, INF, -1.0, True):
        with pytest.raises(ConfigError, match=rf"timeout must be .*got {bad!r}"):
            job.result(timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=rf"timeout must be .*got {bad!r}"):
            asyncio.run(job.result_async(timeout=bad))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=rf"grace must be .*got {bad!r}"):
            tasks.app.cancel(JOB, grace=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=rf"supervisor interval must be .*got {bad!r}"):
            tasks.app.supervisor(interval=bad)
        with pytest.raises(ConfigError, match=rf"idle_timeout must be .*got {bad!r}"):
            LocalBackend(idle_timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Retry delay must be"):
            balloons.Retry(delay=bad)  # type: ignore[arg-type]
    for limit in (0, -1, 10**9, True):
        with pytest.raises(ConfigError, match=r"limit must be an integer from 1 to 10000"):
            tasks.app.jobs(limit=limit)
    for args in (
        ["wait", JOB, "--timeout", "nan"],
        ["result", JOB, "--timeout", "inf"],
        ["supervise", "--interval", "nan"],
        ["cancel", JOB, "--grace", "-1"],
        ["gc", "--min-age", "nan"],
    ):
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 2 and "expected seconds from 0 to" in out.output, (args, out.output)
    nothing_stored(r)


def test_a_nan_boot_timeout_from_the_environment_is_refused_before_the_submit_writes(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With boot_timeout=nan, SUBMIT wrote the job's record, then failed to score its slot: the
    job sat in STARTING for a day. Now the setting is refused before anything is written."""
    monkeypatch.setenv("BALLOONS_BOOT_TIMEOUT", "nan")
    app = balloons.App()
    with pytest.raises(ConfigError, match="BALLOONS_BOOT_TIMEOUT must be from 1 to 604800"):
        balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts).submit(1, 2)
    nothing_stored(r)
    with pytest.raises(ConfigError, match="boot_timeout must be a number of seconds"):
        tasks.app.pool("nanboot", boot_timeout=NAN)


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((10**5000, 1), {}, "positional argument 0 (int too large or too deeply nested to show)"),
        ((1, 2), {"b": _deep(100_000)}, "keyword argument 'b' (list too large or too deeply"),
        ((_deep(100_000), 2), {}, "positional argument 0 (list too large or too deeply"),
    ],
)
def test_arguments_that_cannot_be_written_are_named(
    r: redis.Redis, args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(SerializationError) as info:
        tasks.echo.submit(*args, **kwargs)
    assert named in str(info.value)
    nothing_stored(r)


def test_dashboard_query_parameters_out_of_range_are_a_400() -> None:
    token = "validation-test-token-0123456789"
    web = create_app(tasks.app, token=token)

    async def get(path: str, page: str) -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web), base_url="http://dash.test"
        ) as client:
            return await client.get(
                path, params={"page": page}, headers={"authorization": f"Bearer {token}"}
            )

    for page in ("99999999999999999999", "0", "-1", "1e3", "²", "1" * 5000):
        for path in ("/jobs", "/jobs/live"):
            resp = asyncio.run(get(path, page))
            assert resp.status_code == 400, (path, page, resp.text[:300])
            assert "page must be a whole number from 1 to 1000000" in resp.text
    assert asyncio.run(get("/jobs", "7")).status_code == 200


@pytest.mark.parametrize("secret", ["\u2603", "Z" * 31, "é" * 15 + "Q"])
def test_a_short_signing_key_is_refused_without_being_quoted(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = len(secret.encode())
    with pytest.raises(ConfigError, match=f"is {size} bytes long: expected at least 32") as info:
        balloons.App(secret=secret)
    assert secret not in str(info.value)
    monkeypatch.setenv("BALLOONS_SECRET", secret)
    with pytest.raises(ConfigError, match="BALLOONS_SECRET"):
        balloons.App()
    out = CliRunner().invoke(cli, ["jobs"])
    assert out.exit_code == 2 and "expected at least 32 bytes" in out.stderr  # a bad setting
    assert secret not in out.output


def test_a_signing_key_of_32_bytes_is_accepted() -> None:
    for secret in ("k" * 32, "é" * 16):
        assert Settings.resolve({}, secret=secret).secret == secret


# --------------------------------------------------------------- not a Redis server


class _Nginx(BaseHTTPRequestHandler):
    """Answers whatever it is sent with a 400 page, as a web server does."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(
            b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 11\r\n\r\n<h1>400</h1>"
        )


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(params=["raw-400", "http.server"])
def http_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1, as a Redis URL with a password."""
    handler = _Nginx if request.param == "raw-400" else _Quiet
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"redis://:hunter2-not-redis@127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()
    thread.join(10)


JOB = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"
COMMANDS = [
    ["jobs"],
    ["status", JOB],
    ["pools"],
    ["machines"],
    ["supervise"],
    ["supervise", "--once"],
    ["cost"],
    ["gc"],
    ["logs", JOB],
    ["wait", JOB],
    ["result", JOB],
    ["cancel", JOB],
    ["retry", JOB],
]


@pytest.mark.slow
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_server_that_does_not_speak_resp_is_one_clean_line(
    http_url: str, args: list[str]
) -> None:
    out = CliRunner().invoke(cli, args, env={"BALLOONS_REDIS_URL": http_url})
    # 5: Redis unreachable (what answers is no Redis)
    assert isinstance(out.exception, SystemExit) and out.exit_code == 5, out.exception
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    port = http_url.rsplit(":", 1)[1]
    assert lines[0].startswith("error: ") and f"redis://***@127.0.0.1:{port}" in lines[0]
    assert "hunter2" not in out.output and "Traceback" not in out.output


@pytest.mark.slow
def test_the_library_says_so_too(http_url: str) -> None:
    app = balloons.App(redis_url=http_url)
    calls: list[Callable[[], object]] = [
        app.jobs,
        lambda: app.job(JOB).status(),
        lambda: app.job(JOB).info(),
        lambda: app.costs(),
        lambda: app.supervisor().collect_orphans(wait=0.1),
    ]
    for call in calls:
        with pytest.raises(balloons.StoreError) as info:
            call()
        assert "redis://***@127.0.0.1" in str(info.value) and "hunter2" not in str(info.value)


def test_a_port_with_nothing_listening_is_one_clean_line_too() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = CliRunner().invoke(cli, ["jobs"], env={"BALLOONS_REDIS_URL": f"redis://127.0.0.1:{port}"})
    assert out.exit_code == 5 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "cannot reach Redis at redis://127.0.0.1" in out.stderr
