"""A pool's cap is the one the app declared: a ``cap`` raised in the pool's ``cfg`` hash (any
Redis writer can) made the supervisor's step, and every submit whose settings were unchanged,
take slots past ``max_machines``, so the app ran that many machines at once for queued jobs.
The supervisor now takes the cap from the settings the app signed (one machine when they do
not verify), and a submit from its own pool's declaration."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import balloons
from balloons.control import poolconf
from balloons.ids import ulid as new_ulid
from balloons.store import lua, replies
from balloons.store.keys import PoolKeys
from balloons.task import TaskOptions
from tests import tasks
from tests.test_scripts import Pool
from tests.test_worker import HoldBackend

pytestmark = pytest.mark.machines


def _app(pool: str, cap: int) -> tuple[balloons.App, HoldBackend, balloons.Task[Any, Any]]:
    backend = HoldBackend()  # its machines never boot: each slot stays taken
    app = balloons.App(backend=backend)
    app.pool(pool, max_machines=cap, idle_timeout=10, boot_timeout=600)
    task = balloons.Task(app, tasks.add.fn, tasks.add.name, TaskOptions(pool=pool, timeout=30))
    return app, backend, task


def _raise_cap(r: redis.Redis, pool: str) -> None:
    r.hset(PoolKeys("balloons", pool).cfg, "cap", 40)  # beside the signed settings


def test_a_cap_raised_in_redis_launches_nothing_more_from_the_supervisor(
    r: redis.Redis,
) -> None:
    app, backend, add = _app("capsup", 2)
    jobs = [add.submit(i, i) for i in range(6)]
    assert len(backend.specs) == 2 and app.store.pool_stats("capsup")["queued"] == 4
    _raise_cap(r, "capsup")
    sup = app.supervisor()
    for _ in range(3):
        report = sup.step(gc=False)
        assert report.launched == [] and report.errors == []
    assert len(backend.specs) == 2 and r.zcard(PoolKeys("balloons", "capsup").slots) == 2
    assert sum(j.status() is balloons.JobStatus.QUEUED for j in jobs) == 4


def test_a_cap_raised_in_redis_launches_nothing_more_from_submits(r: redis.Redis) -> None:
    app, backend, add = _app("capsub", 2)
    add.submit(0, 0)
    _raise_cap(r, "capsub")  # the settings stay as stored: the next submits write nothing
    for i in range(4):
        add.submit(i, i)
    add.submit_many([(i, i) for i in range(4)])  # SUBMIT_MANY: SUBMIT's body per job
    assert len(backend.specs) == 2 and r.zcard(PoolKeys("balloons", "capsub").slots) == 2
    assert app.store.pool_stats("capsub")["queued"] == 7


def test_settings_that_do_not_verify_take_no_slot_for_queued_work(r: redis.Redis) -> None:
    """Settings altered in Redis give the supervisor no cap to trust: it takes no slot for the
    pool's queued work (its machines, and the app's next submit, still place it)."""
    poolconf._TOLD.clear()
    app, backend, add = _app("capforged", 3)
    jobs = [add.submit(i, i).id.split(".")[1] for i in range(5)]
    pk = PoolKeys("balloons", "capforged")
    r.zrem(pk.slots, *(f"{u}-1" for u in jobs[:3]))  # their machines went away: requeued
    for place, u in enumerate(jobs[:3]):
        r.hset(pk.job(u), "status", "QUEUED")
        r.zadd(pk.queue, {u: -place - 10})
    conf = r.hget(pk.cfg, "conf")
    assert conf is not None and conf.startswith(b"cap 3 ")
    r.hset(pk.cfg, mapping={"conf": conf.replace(b"cap 3 ", b"cap 40 "), "cap": 40})
    sup = app.supervisor()
    for _ in range(3):
        assert sup.step(gc=False).launched == []
    assert r.zcard(pk.slots) == 0 and len(backend.specs) == 3
    add.submit(9, 9)  # the app's next submit writes its settings again, signed
    sup.step(gc=False)  # and the supervisor fills the pool to its declared cap again
    assert r.zcard(pk.slots) == 3
    assert len(backend.specs) == 3 + 3


def test_a_queued_record_whose_attempt_is_not_a_number_fails_no_script(r: redis.Redis) -> None:
    """Before: the step failed on it, every step, for the whole pool (a reply naming attempt
    ``x``; with no attempt at all, a script error). Its slot is taken as attempt 1, and its
    launch refused (its record does not verify)."""
    p = Pool(r, "capattempt", cap=2)
    u = new_ulid()
    r.hset(p.pk.job(u), mapping={"status": "QUEUED", "attempt": "x", "need": "1:256"})
    r.zadd(p.pk.queue, {u: 1})
    (g,) = replies.scale_up(p.run(lua.SCALE_UP, "", "", "", "", p.cap))
    assert (g.slot, g.ulid, g.attempt) == (f"{u}-1", u, 1)
