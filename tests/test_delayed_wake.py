"""A delayed job starts when it falls due on an idle machine of its pool, not at the idle
machine's next look (up to 5 s later): submitting it wakes an idle machine, and an idle
machine's wait ends when the pool's first delayed job falls due."""

from __future__ import annotations

from typing import Any

import redis

import balloons
from balloons.compat import wake_keys
from balloons.machine.worker import Worker
from balloons.store.keys import PoolKeys
from balloons.store.resp import RespClient
from tests import tasks
from tests.test_worker import HoldBackend, bound


class Recording(RespClient):
    """A RESP client that notes each command's name and arguments."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent: list[tuple[Any, ...]] = []

    def execute(self, *args: Any, **options: Any) -> Any:
        self.sent.append(args)
        return super().execute(*args, **options)


def test_a_delayed_submit_wakes_an_idle_machine_of_its_pool(
    redis_url: str, secret: str, r: redis.Redis
) -> None:
    app = balloons.App(redis_url=redis_url, secret=secret, backend=HoldBackend())
    # A pool of its own: an idle machine of an earlier test would take the wake token.
    add = bound(app, tasks.add).options(pool="delaywake")
    pk = app.store.keys(add.submit(0, 0).id).pool  # the pool's keys exist
    r.sadd(pk.idle, "some-slot")  # a machine idles in the pool
    lists = wake_keys(pk, app.compat().tag)
    before = sum(r.llen(k) for k in lists)
    job = add.options(delay=600).submit(1, 2)
    assert job.status() is balloons.JobStatus.QUEUED
    assert sum(r.llen(k) for k in lists) == before + 1
    app.close()


def test_an_idle_machine_waits_no_longer_than_until_the_next_job_falls_due(
    redis_url: str, r: redis.Redis
) -> None:
    pk = PoolKeys("balloons", "default")
    sec, usec = r.time()
    r.zadd(pk.delayed, {"01jd3x9k2m8vq4t7w0c5r6y1zh": sec + usec / 1e6 + 0.3})
    w = object.__new__(Worker)
    w.pk = pk
    w.wake_keys = wake_keys(pk, "")
    w.client = client = Recording(redis_url)
    try:
        w._wait_for_wake(30.0)
    finally:
        client.close()
    (blpop,) = [cmd for cmd in client.sent if cmd[0] == "BLPOP"]
    assert float(blpop[-1]) <= 0.301  # until the job is due, not the usual 5 s


def test_with_nothing_delayed_an_idle_wait_is_as_before(redis_url: str) -> None:
    pk = PoolKeys("balloons", "default")
    w = object.__new__(Worker)
    w.pk = pk
    w.wake_keys = wake_keys(pk, "")
    w.client = client = Recording(redis_url)
    client.execute("LPUSH", pk.wake, "token")  # so that the wait ends at once
    try:
        w._wait_for_wake(30.0)
    finally:
        client.close()
    (blpop,) = [cmd for cmd in client.sent if cmd[0] == "BLPOP"]
    assert float(blpop[-1]) == 5.0
