"""The supervisor creates machines only for jobs the app signed, no larger than their signed
options allow: a job hash written into Redis (or an altered ``need``) had it create machines of
any size, as many as the pool's stored cap, at the app's expense."""

from __future__ import annotations

import logging

import pytest

import balloons
from balloons.store.keys import PoolKeys, pools_key
from tests import tasks
from tests.test_hostile_readers import Rig
from tests.test_hostile_readers import rig as rig
from tests.test_hostile_readers import web as web

pytestmark = pytest.mark.slow

PK = PoolKeys("balloons", "default")


def _launched(rig: Rig) -> list[str]:
    return [name for op, name in rig.app.backend.calls if op == "launch"]  # type: ignore[attr-defined]


def test_jobs_written_into_redis_get_no_machine(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    r = rig.r
    r.flushall()
    r.sadd(pools_key("balloons"), "default")
    pool = rig.app.pool("default", max_machines=40, idle_timeout=10)
    signed = pool.signed_config(rig.app.secret.encode(), rig.app.compat().conf)
    r.hset(PK.cfg, mapping={"conf": signed, "cap": 40})  # the cap as the app declared it
    for i in range(30):
        u = f"01jd3x9k2m8vq4t7w0c5r6{i:04d}"
        r.hset(PK.job(u), mapping={"status": "QUEUED", "need": "64:262144", "attempt": 1})
        r.zadd(PK.queue, {u: i})
    with caplog.at_level(logging.WARNING, logger="balloons.control.supervisor"):
        report = rig.app.supervisor().step(gc=False)
    assert _launched(rig) == [] and report.launched == []
    refused = [r.getMessage() for r in caplog.records if "no machine for slot" in r.getMessage()]
    assert len(refused) == 30 and "does not verify" in refused[0], refused[:3]


def test_a_signed_job_gets_its_machine_and_an_altered_size_none(rig: Rig) -> None:
    app = rig.app
    app.pool("default", max_machines=1, cpus=1, memory_mb=256)
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts).options(pool="default")
    add.submit(1, 2)  # takes the pool's one slot (its launch only noted)
    queued = [add.submit(i, 1) for i in range(2)]
    assert all(j.status() is balloons.JobStatus.QUEUED for j in queued)

    def free_the_slot() -> None:
        for slot in rig.r.zrange(PK.slots, 0, -1):
            rig.r.zrem(PK.slots, slot)
            rig.r.hdel(PK.slot, slot)

    free_the_slot()
    ulid = queued[0].id.split(".")[1]
    app.supervisor().step(gc=False)
    assert any(ulid in name for name in _launched(rig)), rig.app.backend.calls  # type: ignore[attr-defined]

    free_the_slot()
    other = queued[1].id.split(".")[1]
    rig.r.hset(PK.job(other), "need", "64:262144")  # a size its signed options do not give
    before = len(_launched(rig))
    app.supervisor().step(gc=False)
    assert len(_launched(rig)) == before, rig.app.backend.calls  # type: ignore[attr-defined]


def test_a_submit_makes_no_machine_for_a_job_written_into_redis(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """``SUBMIT`` launches the first queued job no idle machine takes, which may be another
    than the one submitted: a hash written ahead of it in the queue got a machine of the size
    it named from every submit."""
    app = rig.app
    app.pool("default", max_machines=2, cpus=1, memory_mb=256)
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts).options(pool="default")
    fake = "01jd3x9k2m8vq4t7w0c5r6y1zh"
    rig.r.hset(PK.job(fake), mapping={"status": "QUEUED", "need": "64:262144", "attempt": 1})
    rig.r.zadd(PK.queue, {fake: -1e15})  # ahead of any job
    with caplog.at_level(logging.WARNING, logger="balloons"):
        job = add.submit(1, 2)
    assert not any(fake in name for name in _launched(rig)), rig.app.backend.calls  # type: ignore[attr-defined]
    assert any("launch_refused" in r.getMessage() for r in caplog.records), caplog.text
    app.supervisor().step(gc=False)  # the submitted job gets its machine
    assert any(job.id.split(".")[1] in name for name in _launched(rig))
