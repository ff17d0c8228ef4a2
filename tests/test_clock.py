"""One clock: leases, deadlines and due times are the Redis server's (``TIME``, read in the
scripts), so a supervisor or a waiter whose clock is off leaves a healthy job alone.

A skewed process here has ``time.time`` patched before balloons is imported (a supervisor in a
process of its own) or for the test's duration (the waiter: this process). The worker's side
needs no patch to be covered: what it sends (a heartbeat's deadline) is a time left, not a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import balloons
from balloons import JobStatus
from balloons.backends.forkserver import ForkServer
from tests import tasks
from tests.silentredis import MuteProxy

ROOT = Path(__file__).parent.parent
SKEWS = [60.0, -60.0]

# A supervisor whose clock is off by argv[1] seconds, stepping every 0.2 s.
SKEWED_SUPERVISOR = """
import sys, time
_real, skew = time.time, float(sys.argv[1])
time.time = lambda: _real() + skew
from balloons.cli import main
main(["supervise", "-A", "tests.tasks", "--interval", "0.2"])
"""


def skewed(skew: float) -> Callable[[], float]:
    real = time.time
    return lambda: real() + skew


@pytest.fixture
def supervisor(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SKEWED_SUPERVISOR, str(request.param)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.machines
@pytest.mark.parametrize("supervisor", SKEWS, indirect=True)
@pytest.mark.parametrize("waiter_skew", SKEWS)
def test_a_healthy_job_runs_once_under_a_skewed_supervisor_and_waiter(
    supervisor: subprocess.Popen[bytes],
    waiter_skew: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job outlives several leases (heartbeat 0.5 s, lease 2.5 s) while a supervisor steps
    every 0.2 s and the waiter checks its job every 0.2 s, each on a clock a minute off."""
    counter = tmp_path / "runs"
    monkeypatch.setattr(time, "time", skewed(waiter_skew))
    job = tasks.count_then_sleep.submit(str(counter), 6.0)
    while job.status() not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        tasks.app.check_lapsed(job._keys)  # what a waiter does between its blocks
        assert supervisor.poll() is None, "the skewed supervisor exited"
        time.sleep(0.2)
    assert job.result(timeout=30) == 1
    assert counter.read_text() == "1"
    (attempt,) = job.info().attempts
    assert attempt.outcome == "SUCCEEDED"


@pytest.mark.parametrize("skew", SKEWS)
def test_a_delay_is_counted_on_the_servers_clock(
    skew: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = balloons.App(backend=_no_launch())
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    before = _server_now(app)
    monkeypatch.setattr(time, "time", skewed(skew))
    job = add.options(delay=30).submit(1, 2)
    after = _server_now(app)
    app.check_lapsed(job._keys)  # a waiter promotes due jobs: this one is not due
    rec = app.store.record(job._keys)
    assert rec["status"] == b"QUEUED"
    assert before + 30 <= float(rec["due"]) <= after + 30
    assert before <= float(rec["created"]) <= after


def test_an_at_time_in_the_past_runs_now_whatever_the_clients_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``at`` is the user's absolute time: the server, not the client, says it has passed."""
    import datetime as dt

    app = balloons.App(backend=_no_launch())
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    at = dt.datetime.fromtimestamp(_server_now(app) - 5, dt.UTC)
    monkeypatch.setattr(time, "time", skewed(-60.0))
    job = add.options(at=at).submit(1, 2)
    assert job.status() is JobStatus.STARTING


def _no_launch() -> balloons.Backend:
    from tests.test_worker import HoldBackend

    return HoldBackend()


def _server_now(app: balloons.App) -> float:
    sec, usec = app.store.redis.time()
    return float(sec) + float(usec) / 1e6


def test_the_fork_servers_clock_never_runs_ahead_of_the_servers(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """A machine's ``created`` is the server's clock as its fork server carries it forward from
    one ``TIME``. A busy server runs that ``TIME`` late: the clock carried forward may then lag
    the server's, never lead it (a machine just launched would read younger than it is, younger
    than none even, and a sweep with no minimum age would leave it be)."""
    proxy = MuteProxy(redis_url.removeprefix("unix://"), b"never sent", ask_lag=1.0)
    server = ForkServer(str(tmp_path / "fs.sock"), idle=1.0)
    try:
        server.records.now(proxy.url)  # reads TIME
        carried = server.records.now(proxy.url)
        sec, usec = r.time()
        assert carried <= sec + usec / 1e6
    finally:
        server.listener.close()
        os.close(server.wake_r)
        os.close(server.wake_w)
        for client in server.records.clients.values():
            client.close()
        proxy.close()
