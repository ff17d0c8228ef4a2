"""The embedded default: one private Valkey per state dir, shared, persistent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import balloons
from balloons import embedded
from balloons.cli import main as cli
from tests import tasks

ROOT = Path(__file__).parent.parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh state dir, no Redis URL: App() uses the embedded default."""
    state = tmp_path / "home"
    monkeypatch.setenv("BALLOONS_HOME", str(state))
    monkeypatch.delenv("BALLOONS_REDIS_URL")
    monkeypatch.delenv("BALLOONS_SECRET")
    yield state
    app = balloons.App()
    if app.backend.name == "local":
        app.backend.shutdown()  # type: ignore[attr-defined]
    embedded.stop(state)


def test_app_with_no_configuration_runs_jobs(home: Path) -> None:
    app = balloons.App()
    assert app.settings.embedded
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    assert t.submit(2, 2).result(timeout=30) == 4
    st = embedded.status(home)
    assert st.running and st.url.startswith("unix://")
    assert (home / "secret").stat().st_mode & 0o777 == 0o600
    assert (home / "valkey" / "valkey.conf").read_text().count("appendonly yes") == 1


def test_concurrent_starts_share_one_server(home: Path) -> None:
    code = "import balloons; app = balloons.App(); app.store.redis.ping(); print(app.store.url)"
    env = {**os.environ, "BALLOONS_HOME": str(home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(6)
    ]
    urls = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(urls) == 1
    pid = embedded.status(home).pid
    assert pid is not None
    servers = [
        e
        for e in os.listdir("/proc")
        if e.isdigit() and b"valkey-server" in _cmdline(e) and _cwd(e) == str(home / "valkey")
    ]
    assert servers == [str(pid)]


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def test_a_job_submitted_before_a_restart_is_still_there(home: Path) -> None:
    from tests.test_worker import HoldBackend

    app = balloons.App(backend=HoldBackend())
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    job = t.submit(5, 6)
    app.close()
    assert embedded.stop(home)
    assert not embedded.status(home).running
    again = balloons.App()
    assert again.job(job.id).status() is balloons.JobStatus.STARTING
    assert again.job(job.id).info().task == "tests.tasks:add"


def test_dev_commands(home: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["dev", "status"])
    assert out.exit_code == 0 and "stopped" in out.output
    out = runner.invoke(cli, ["dev", "start"])
    assert out.exit_code == 0 and "running at unix://" in out.output
    out = runner.invoke(cli, ["dev", "status", "--json"])
    assert out.exit_code == 0 and '"running": true' in out.output
    out = runner.invoke(cli, ["dev", "stop"])
    assert out.exit_code == 0 and "stopped" in out.output
    assert not embedded.status(home).running


def test_long_state_dir_falls_back_to_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    path = embedded.socket_path(deep)
    assert len(str(path)) <= 100
    assert path == embedded.socket_path(deep)  # stable for the same dir


def _wait_running(job: balloons.Job[Any]) -> None:
    deadline = time.monotonic() + 20
    while job.status() is not balloons.JobStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_running_job_survives_a_redis_restart(home: Path) -> None:
    """The worker rides out the restart: it reconnects with backoff and records its result."""
    app = balloons.App()
    t = balloons.Task(app, tasks.sleep.fn, tasks.sleep.name, tasks.sleep.opts)
    job = t.submit(2.0)
    _wait_running(job)
    app.close()
    assert embedded.stop(home)
    time.sleep(1.0)
    embedded.ensure(home)
    again = balloons.App()
    assert again.job(job.id).result(timeout=60) == 2.0
    assert again.job(job.id).info().attempts[0].outcome == "SUCCEEDED"


def test_queued_jobs_survive_a_redis_restart(home: Path) -> None:
    from tests.test_worker import HoldBackend

    app = balloons.App(backend=HoldBackend())
    app.pool("one", max_machines=1)
    opts = balloons.TaskOptions(pool="one", timeout=30)
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, opts)
    first, queued = t.submit(1, 1), t.submit(2, 2)
    assert queued.status() is balloons.JobStatus.QUEUED
    app.close()
    assert embedded.stop(home)
    again = balloons.App()
    assert again.job(queued.id).status() is balloons.JobStatus.QUEUED
    assert again.job(queued.id).queue_position() == 1
    assert again.job(first.id).status() is balloons.JobStatus.STARTING


def test_a_result_written_while_redis_is_down_is_recorded_once_it_is_back(
    home: Path, tmp_path: Path
) -> None:
    """The task returns while Redis is stopped: the worker keeps the result and retries the
    write with back-off until Redis answers again."""
    app = balloons.App()
    t = balloons.Task(app, tasks.wait_then_mark.fn, tasks.wait_then_mark.name,
                      tasks.wait_then_mark.opts)  # fmt: skip
    flag, mark = tmp_path / "flag", tmp_path / "mark"
    job = t.submit(str(flag), str(mark))
    _wait_running(job)
    app.close()
    assert embedded.stop(home)
    flag.write_text("go")
    deadline = time.monotonic() + 20
    while not mark.exists():  # the task has returned: its result write meets the outage
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # a few of the worker's tries fail
    back = time.time()
    embedded.ensure(home)
    again = balloons.App()
    assert again.job(job.id).result(timeout=60) == "ok"
    (attempt,) = again.job(job.id).info().attempts
    assert attempt.outcome == "SUCCEEDED"
    assert (attempt.ended_at or 0) >= back  # written once Redis was back


def test_queued_jobs_survive_a_crash_of_the_server(home: Path) -> None:
    """SIGKILL, no clean shutdown: what the append-only file holds is all there is."""
    import signal

    from tests.test_worker import HoldBackend

    app = balloons.App(backend=HoldBackend())
    app.pool("crash", max_machines=1)
    opts = balloons.TaskOptions(pool="crash", timeout=30)
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, opts)
    first, *queued = (t.submit(i, i) for i in range(5))
    app.close()
    pid = embedded.status(home).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while embedded.status(home).running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    again = balloons.App()
    assert [again.job(j.id).queue_position() for j in queued] == [1, 2, 3, 4]
    assert again.job(first.id).status() is balloons.JobStatus.STARTING
