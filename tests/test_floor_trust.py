"""The supervisor keeps a pool's warm floor, and its standby machines, only from settings the app
signed: a floor and a size written into Redis had it keep as many idle machines as the pool's
stored cap, of any size, at the app's expense."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import balloons
from balloons.control import poolconf
from balloons.store.keys import PoolKeys, pools_key
from balloons.store.writes import slot_entry
from tests import tasks
from tests.test_hostile_readers import Rig
from tests.test_hostile_readers import rig as rig
from tests.test_hostile_readers import web as web

pytestmark = pytest.mark.slow

PK = PoolKeys("balloons", "default")
HUGE = {"cpus": 256, "mem": 4 * 1024 * 1024}


@pytest.fixture(autouse=True)
def _warn_again() -> None:
    poolconf._TOLD.clear()  # each test sees its own warning


def _launched(rig: Rig) -> list[str]:
    return [name for op, name in rig.app.backend.calls if op == "launch"]  # type: ignore[attr-defined]


def _floor_slots(rig: Rig) -> dict[str, dict[str, Any]]:
    """The pool's warm-floor slots (no job: ``ULID-0``) and their entries."""
    entries = {k.decode(): slot_entry(v) for k, v in rig.r.hgetall(PK.slot).items()}
    return {slot: info for slot, info in entries.items() if slot.endswith("-0")}


def _declare(rig: Rig) -> balloons.Task[Any, Any]:
    """A pool with a floor of two, its settings stored by a job's submit (which takes one slot:
    the floor's other machine is the supervisor's to launch)."""
    rig.app.pool("default", max_machines=4, min_machines=2, cpus=2, memory_mb=512)
    add = balloons.Task(rig.app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    add = add.options(pool="default")
    add.submit(1, 2)
    return add


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "balloons.control.poolconf"]


@pytest.mark.parametrize("conf", [None, "cap 40 min 40 cpus 256 mem 4194304 sig " + "0" * 64])
def test_a_floor_written_into_redis_launches_nothing(
    rig: Rig, caplog: pytest.LogCaptureFixture, conf: str | None
) -> None:
    r = rig.r
    r.flushall()
    r.sadd(pools_key("balloons"), "default")
    r.hset(PK.cfg, mapping={"cap": 40, "min": 40, "standby": 40, **HUGE})
    if conf is not None:  # a signature made up, not made with the app's secret
        r.hset(PK.cfg, "conf", conf)
    sup = rig.app.supervisor()
    with caplog.at_level(logging.WARNING, logger="balloons.control.poolconf"):
        for _ in range(3):
            report = sup.step(gc=False)
            assert report.launched == [] and report.errors == []
    assert _launched(rig) == [] and r.zcard(PK.slots) == 0
    told = _warnings(caplog)
    assert len(told) == 1 and told[0].startswith("pool default: "), told  # once, naming it
    assert rig.app.secret not in caplog.text


def test_a_declared_floor_is_kept_at_its_size(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    _declare(rig)
    with caplog.at_level(logging.WARNING, logger="balloons.control.poolconf"):
        report = rig.app.supervisor().step(gc=False)
    (slot,) = _floor_slots(rig)
    assert report.launched == [slot] and any(slot[:-2] in n for n in _launched(rig))
    info = _floor_slots(rig)[slot]
    assert (info["cpus"], info["mem"]) == (2, 512)
    assert rig.app.supervisor().step(gc=False).launched == []  # the floor is met
    assert _warnings(caplog) == []


def test_fields_altered_after_a_declaration_do_not_count(rig: Rig) -> None:
    _declare(rig)
    rig.r.hset(PK.cfg, mapping={"min": 4, **HUGE})  # beside the signed settings, not in them
    sup = rig.app.supervisor()
    for _ in range(3):
        sup.step(gc=False)
    floor = _floor_slots(rig)
    assert len(floor) == 1, floor  # the signed floor: two machines with the job's
    assert [(i["cpus"], i["mem"]) for i in floor.values()] == [(2, 512)]


def test_signed_settings_altered_in_redis_are_refused(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    _declare(rig)
    conf = rig.r.hget(PK.cfg, "conf")
    assert conf is not None and b" min 2 " in conf and b" sig " in conf
    rig.r.hset(PK.cfg, "conf", conf.replace(b" min 2 ", b" min 4 ").replace(b"cpus 2", b"cpus 64"))
    with caplog.at_level(logging.WARNING, logger="balloons.control.poolconf"):
        report = rig.app.supervisor().step(gc=False)
    assert report.launched == [] and _floor_slots(rig) == {}
    (told,) = _warnings(caplog)
    assert "pool default" in told and "do not verify" in told
    assert rig.app.secret not in caplog.text


def test_settings_signed_for_another_pool_do_not_verify(rig: Rig) -> None:
    _declare(rig)
    other = PoolKeys("balloons", "other")
    rig.r.sadd(pools_key("balloons"), "other")
    rig.r.hset(other.cfg, mapping={k.decode(): v for k, v in rig.r.hgetall(PK.cfg).items()})
    rig.app.supervisor().step(gc=False)
    assert rig.r.zcard(other.slots) == 0  # the copy keeps no floor in "other"
    assert len(_floor_slots(rig)) == 1  # while "default" keeps its own


def test_standby_written_into_redis_keeps_no_stopped_machine(rig: Rig) -> None:
    """The sweep trims a pool's stopped machines to its signed ``standby`` count: one written
    into Redis (unsigned) keeps none."""
    r = rig.r
    r.flushall()
    r.sadd(pools_key("balloons"), "default")
    r.hset(PK.cfg, mapping={"cap": 40, "standby": 40})
    for i in range(2):
        rec = f'{{"slot":"01jd3x9k2m8vq4t7w0c5r6{i:04d}","cpus":1,"mem":256,"since":{i}}}'
        r.hset(PK.standby, f"m{i}", rec)
    rig.app.supervisor().collect_orphans()
    assert r.hlen(PK.standby) == 0


def test_settings_that_verify_again_are_warned_about_again_once_altered(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    _declare(rig)
    signed = rig.r.hget(PK.cfg, "conf")
    assert signed is not None
    sup = rig.app.supervisor()
    with caplog.at_level(logging.WARNING, logger="balloons.control.poolconf"):
        for conf in (signed + b"0", signed, signed + b"0"):
            rig.r.hset(PK.cfg, "conf", conf)
            sup.step(gc=False)
    assert len(_warnings(caplog)) == 2, _warnings(caplog)
