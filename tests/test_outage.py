"""Redis unreachable at submit: a clear StoreError naming the masked URL, and nothing written."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import balloons
from balloons import StoreError
from balloons.store.redisurl import mask_url
from tests import tasks
from tests.authvalkey import AuthValkey
from tests.test_worker import HoldBackend
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

PASSWORD = "outage-pw-" + "7f3a9c"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuthValkey]:
    srv = AuthValkey(tmp_path / "valkey", PASSWORD)
    srv.start()
    yield srv
    srv.stop()


def _when_running(job: balloons.Job[Any], then: Callable[[], None]) -> None:
    """Call ``then`` once ``job`` runs (from a thread, while this process runs its worker)."""
    wait_for(lambda: job.status() is balloons.JobStatus.RUNNING, "the job to run", interval=0.02)
    then()


def _worker_env(backend: HoldBackend, server: AuthValkey, secret: str) -> dict[str, str]:
    """What the machine of the backend's first launch would be given."""
    return {
        "BALLOONS_JOB": backend.specs[0].env["BALLOONS_JOB"],
        "BALLOONS_REDIS_URL": server.url,
        "BALLOONS_SECRET": secret,
    }


def _everything(url: str) -> dict[bytes, bytes]:
    """Every key and its type: what a submit could have left behind."""
    client = redis.Redis.from_url(url)
    try:
        return {k: client.type(k) for k in client.scan_iter("*")}
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_submit_while_redis_is_down_raises_and_writes_nothing(
    server: AuthValkey, secret: str, mode: str
) -> None:
    app = balloons.App(redis_url=server.url, secret=secret, backend=HoldBackend())
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    first = add.submit(1, 2)  # the client's connections exist before the outage
    before = _everything(server.url)
    assert any(first.id.split(".")[1].encode() in k for k in before)

    server.stop()

    def submit() -> object:
        if mode == "sync":
            return add.submit(3, 4)
        import asyncio

        return asyncio.run(add.submit_async(3, 4))

    with pytest.raises(StoreError) as info:
        submit()
    message = str(info.value)
    assert mask_url(server.url) in message
    assert f"127.0.0.1:{server.port}" in message
    assert PASSWORD not in message and secret not in message

    server.start()
    assert _everything(server.url) == before  # not one key more: nothing was half-written
    again = add.submit(5, 6)  # and the same app submits again once Redis is back
    assert again.status() is balloons.JobStatus.STARTING
    app.close()


def test_submit_to_a_server_that_never_ran_names_the_masked_url(secret: str) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    app = balloons.App(redis_url=url, secret=secret, backend=HoldBackend())
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    with pytest.raises(StoreError) as info:
        add.submit(1, 2)
    assert mask_url(url) == "redis://***@127.0.0.1:1/0"
    assert mask_url(url) in str(info.value)
    assert PASSWORD not in str(info.value)


def test_a_worker_that_gives_up_on_redis_stops_its_heartbeat(
    server: AuthValkey, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away mid-job and stays away: the worker exits with EXIT_STORE once its
    patience runs out, and leaves no heartbeat thread behind."""
    import threading

    from balloons.machine.worker import EXIT_STORE, main

    backend = HoldBackend()
    app = balloons.App(redis_url=server.url, secret=secret, backend=backend)
    app.pool("default", heartbeat=0.2, idle_timeout=0)
    sleep = balloons.Task(app, tasks.sleep.fn, tasks.sleep.name, tasks.sleep.opts)
    job = sleep.options(timeout=2).submit(1.0)  # its outcome is waited for until then

    stopper = threading.Thread(target=_when_running, args=(job, server.stop))
    stopper.start()
    monkeypatch.setattr("balloons.machine.worker.STORE_PATIENCE", 0.5)
    assert main(_worker_env(backend, server, secret)) == EXIT_STORE
    stopper.join()
    wait_for(
        lambda: all(t.name != "balloons-heartbeat" for t in threading.enumerate()),
        "the heartbeat thread to end with its worker",
    )
    server.start()


def test_a_worker_rides_out_an_outage_longer_than_its_patience_until_the_jobs_deadline(
    server: AuthValkey, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away while the task runs and comes back after the worker's patience: the
    outcome is still written, since the job's deadline is further off."""
    import threading

    from balloons.machine.worker import EXIT_OK, main

    backend = HoldBackend()
    app = balloons.App(redis_url=server.url, secret=secret, backend=backend)
    app.pool("default", heartbeat=0.2, idle_timeout=0)
    sleep = balloons.Task(app, tasks.sleep.fn, tasks.sleep.name, tasks.sleep.opts)
    job = sleep.options(timeout=30).submit(0.5)
    back: list[float] = []

    def outage() -> None:
        server.stop()
        time.sleep(2.0)  # four times the worker's patience below
        back.append(time.time())
        server.start()

    outager = threading.Thread(target=_when_running, args=(job, outage))
    outager.start()
    monkeypatch.setattr("balloons.machine.worker.STORE_PATIENCE", 0.5)
    code = main(_worker_env(backend, server, secret))
    outager.join()  # before any assertion: the server is back either way
    assert code == EXIT_OK
    again = balloons.App(redis_url=server.url, secret=secret, backend=HoldBackend())
    assert again.job(job.id).result(timeout=10) == 0.5
    (attempt,) = again.job(job.id).info().attempts
    assert attempt.outcome == "SUCCEEDED" and (attempt.ended_at or 0) >= back[0]
    again.close()
    app.close()
