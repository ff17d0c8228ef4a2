"""``balloons serve``'s start and idle exit: it reconciles with the supervisor's code on every
start, and exits only when no request is in flight and no job is due soon; a real service on
127.0.0.1, a real Valkey and real machines."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.service import server
from balloons.store.keys import PoolKeys
from tests import tasks
from tests.servicehttp import TOKEN
from tests.waiting import wait_for


@contextmanager
def served(
    idle_exit: float | None, supervise: bool = False
) -> Iterator[tuple[str, threading.Thread]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(
        target=server.serve,
        args=(tasks.app, "127.0.0.1", 0),
        kwargs={"token": TOKEN, "idle_exit": idle_exit, "supervise": supervise, "sockets": [sock]},
        daemon=True,
    )
    thread.start()
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/v1/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "the service to answer")
        yield url, thread
    finally:
        if thread.is_alive():
            with httpx.Client(base_url=url) as c:
                c.get("/v1/health")  # an idle service exits on its own; else the test failed
        thread.join(30)
        sock.close()


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {TOKEN}"})


def test_the_service_exits_once_idle_but_not_while_a_stream_is_open() -> None:
    # Idle periods long enough for this test's next request to come first, even on a loaded
    # machine (a liveness margin, not a measure: the service exiting early fails the POST).
    with served(idle_exit=2.0) as (url, thread), _client(url) as c:
        far = c.post("/v1/jobs", json={"task": "tests.tasks:add", "args": [1, 1], "delay": 3600})
        jid = far.json()["id"]
        with c.stream("GET", f"/v1/jobs/{jid}/logs") as stream:
            assert stream.status_code == 200
            time.sleep(5.0)  # two and a half idle periods with the stream open
            assert thread.is_alive()
        wait_for(lambda: not thread.is_alive(), "the service to exit once idle")


def test_a_job_due_or_a_deadline_within_the_idle_period_counts_as_work() -> None:
    app = tasks.app
    assert not server.due_within(app, 60)
    job = tasks.add.options(delay=30).submit(1, 1)
    assert server.due_within(app, 60) and not server.due_within(app, 5)
    job.cancel()
    assert not server.due_within(app, 60)
    # A running job's deadline, as its slot records it.
    pk = PoolKeys(app.settings.namespace, "default")
    now = app.store.server_time()
    app.store.redis.hset(pk.slot, "x-1", f'{{"job": "x", "deadline": {now + 20}}}')
    assert server.due_within(app, 60) and not server.due_within(app, 5)
    app.store.redis.hset(pk.slot, "x-1", b"\xff not json")  # altered: no deadline read
    app.store.redis.sadd(f"{app.settings.namespace}:pools", "default")
    assert not server.due_within(app, 60)


@pytest.mark.machines
def test_the_service_runs_a_job_that_fell_due_while_it_was_down() -> None:
    # Nobody promotes a delayed job while no supervisor, waiter or service runs.
    job = tasks.add.options(delay=0.2).submit(20, 22)
    time.sleep(0.5)
    assert job.info().status.value == "QUEUED"
    with served(idle_exit=0.5, supervise=False):
        # The start's reconcile (a supervisor step) launched it: no request needed to wake it.
        wait_for(lambda: job.info().status.terminal, "the job to run")
        assert job.result(timeout=5) == 42
