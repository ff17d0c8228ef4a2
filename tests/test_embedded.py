"""The embedded default: one private Valkey per state dir, shared, persistent."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import balloons
from balloons.cli import main as cli
from balloons.store import embedded
from tests import tasks
from tests.waiting import wait_for

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
    wait_for(lambda: job.status() is balloons.JobStatus.RUNNING, f"job {job.id} to run")


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
    # the task has returned: its result write meets the outage
    wait_for(mark.exists, "the task to return")
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
    wait_for(lambda: not embedded.status(home).running, "the embedded server to be down")
    again = balloons.App()
    assert [again.job(j.id).queue_position() for j in queued] == [1, 2, 3, 4]
    assert again.job(first.id).status() is balloons.JobStatus.STARTING


def test_the_server_acknowledges_a_write_only_once_it_is_on_disk(home: Path) -> None:
    """With ``appendfsync everysec`` Valkey postpones writing its append-only file (up to 2 s)
    while a background fsync is slow, and acknowledges the commands all the same: submits made
    a second after the server started, on a busy disk, were gone after a SIGKILL. With
    ``always`` a write is in the file, and synced, before its reply."""
    client = redis.Redis.from_url(embedded.ensure(home))
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.close()


# ------------------------------------------------ machines gone while the server was down


def _warm_task(app: balloons.App) -> balloons.Task[Any, Any]:
    """``add`` in a pool whose machines idle warm for a minute, heartbeating twice a second."""
    app.pool("warm", idle_timeout=60, heartbeat=0.5)
    opts = balloons.TaskOptions(pool="warm", timeout=30)
    return balloons.Task(app, tasks.add.fn, tasks.add.name, opts)


def _idle_machine(app: balloons.App) -> tuple[str, int]:
    """The id and pid of the pool's one machine, idle warm after its job."""
    pk = app.store.keys(f"warm.{'0' * 26}").pool
    slots = wait_for(
        lambda: (s := app.store.slots(pk)) and s[0][2].get("state") == "idle" and s,
        "the pool's machine to be idle",
    )
    machine = str(slots[0][2]["machine"])
    info = app.backend.inspect(machine)
    assert info is not None and info.running
    return machine, int(info.detail["pid"])


def _kill(pid: int) -> None:
    """SIGKILL a process (group: a machine's, or the fork server's session) and wait it out."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    wait_for(
        lambda: not Path(f"/proc/{pid}").exists() or _state(pid) == "Z",
        f"process {pid} to end",
        interval=0.02,
    )


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _fork_server_pid(app: balloons.App) -> int:
    from balloons.backends.local import _send

    return int(_send(app.backend.socket_path(), {"op": "ping"})["pid"])  # type: ignore[attr-defined]


def _dev(home: Path, *args: str) -> str:
    """``balloons dev ARGS`` in a process of its own; its output."""
    env = {**os.environ, "BALLOONS_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-m", "balloons", "dev", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_dev_stop_stops_idle_machines_first_and_a_later_job_gets_a_machine(home: Path) -> None:
    """A warm machine idles; `balloons dev stop`; its machine is gone when the next job comes.
    The stop stopped it first (its slot freed while the server ran), so the next job is not
    queued for a machine that is gone: it gets a machine, with no supervisor anywhere."""
    app = balloons.App()
    add = _warm_task(app)
    assert add.submit(1, 2).result(timeout=30) == 3
    _machine, pid = _idle_machine(app)
    app.close()
    out = _dev(home, "stop")
    _kill(pid)  # gone, whatever the stop did: it gave up on the server, or was killed
    again = balloons.App()
    assert _warm_task(again).submit(3, 4).result(timeout=60) == 7
    assert "stopped 1 machine" in out and out.strip().endswith("stopped")
    embedded.stop_machines(home)


def test_a_waiter_reclaims_an_idle_machine_that_vanished_and_gets_its_job_run(
    home: Path,
) -> None:
    """The fork server and the warm machine are killed without a word: the slot still says
    "idle machine", so the next job is queued for it. The waiter notices the slot's lease
    lapse, reclaims it and launches a machine for its job, with no supervisor anywhere."""
    app = balloons.App()
    add = _warm_task(app)
    assert add.submit(1, 2).result(timeout=30) == 3
    machine, pid = _idle_machine(app)
    _kill(_fork_server_pid(app))
    _kill(pid)
    job = add.submit(3, 4)
    assert job.status() is balloons.JobStatus.QUEUED  # for the idle machine that is gone
    assert job.result(timeout=60) == 7
    gone = app.backend.inspect(machine)
    assert gone is not None and not gone.running
    embedded.stop_machines(home)


def test_dev_start_reclaims_the_slots_of_machines_that_ended_while_it_was_down(
    home: Path,
) -> None:
    """The server stops with a warm machine idle (the library's stop: machines untouched);
    the machine and its fork server are killed meanwhile. `balloons dev start` reclaims the
    slot (its machine's process is gone), so the next job gets a machine at once."""
    app = balloons.App()
    add = _warm_task(app)
    assert add.submit(1, 2).result(timeout=30) == 3
    machine, pid = _idle_machine(app)
    fork_server = _fork_server_pid(app)
    app.close()
    assert embedded.stop(home)
    _kill(fork_server)
    _kill(pid)
    out = _dev(home, "start")
    again = balloons.App()
    assert again.store.slots(again.store.keys(f"warm.{'0' * 26}").pool) == []
    job = _warm_task(again).submit(3, 4)
    # A machine of its own at once, not a queue behind the dead machine's slot: STARTING, or
    # already RUNNING (or done) when the machine claimed it before this read (a spare child
    # of the fork server claims in milliseconds, while this process may wait for a CPU).
    assert job.status() is not balloons.JobStatus.QUEUED
    assert job.result(timeout=60) == 7
    assert job.info().machine_id != machine
    assert "reclaimed the slots of 1 machine" in out
    embedded.stop_machines(home)


def test_a_machine_still_running_keeps_its_slot_when_the_server_starts_again(
    home: Path,
) -> None:
    """A warm machine rides out a short outage: the restart reclaims nothing of it, and it
    takes the next job."""
    app = balloons.App()
    add = _warm_task(app)
    assert add.submit(1, 2).result(timeout=30) == 3
    machine, _pid = _idle_machine(app)
    app.close()
    assert embedded.stop(home)
    assert "reclaimed" not in _dev(home, "start")
    again = balloons.App()
    job = _warm_task(again).submit(3, 4)
    assert job.result(timeout=60) == 7
    assert job.info().machine_id == machine
    embedded.stop_machines(home)
