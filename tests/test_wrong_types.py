"""Keys of another kind than balloons writes (a string where a hash belongs, a list where an
index belongs: ``WRONGTYPE`` for every command on them): each library reader refuses with a
:class:`~balloons.BalloonsError`, a supervisor step reports the error and goes on, and one
machine record of the wrong kind is skipped with a log line, never the end of the orphan sweep
nor of the machine and pool listings."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import redis
from click.testing import CliRunner

from balloons import JobStatus
from balloons.cli import main as cli
from balloons.store import queries
from balloons.store.keys import (
    JobKeys,
    PoolKeys,
    flow_index_key,
    flows_key,
    gc_lock_key,
    machine_key,
    machines_key,
    pools_key,
    schedules_key,
)
from tests.test_hostile_readers import JOB, MACHINE, NOW, ULID, Rig, _record
from tests.test_hostile_readers import rig as rig
from tests.test_hostile_readers import web as web

pytestmark = pytest.mark.slow

PK = PoolKeys("balloons", "default")
JK = JobKeys.of("balloons", JOB)
KEYS = [
    JK.job, JK.attempts, JK.logs, JK.done, JK.runs, JK.meta, JK.hook, PK.jobs, PK.queue,
    PK.delayed, PK.slots, PK.slot, PK.idle, PK.cfg, PK.usage, PK.standby, PK.stats, PK.spend,
    PK.seq, PK.check, PK.outbox, pools_key("balloons"), machines_key("balloons"),
    machine_key("balloons", MACHINE), schedules_key("balloons"), flows_key("balloons"),
    flow_index_key("balloons"),
]  # fmt: skip
KINDS = ("string", "list", "set", "zset", "hash", "stream")


def _put(r: redis.Redis, key: str, kind: str) -> None:
    r.delete(key)
    write = {
        "string": lambda: r.set(key, b"\xff["),
        "list": lambda: r.rpush(key, b"\xff", b"x"),
        "set": lambda: r.sadd(key, b"\xff", b"x"),
        "zset": lambda: r.zadd(key, {b"\xff": 1, ULID: 2}),
        "hash": lambda: r.hset(key, b"\xff", b"x"),
        "stream": lambda: r.xadd(key, {b"\xff": b"x"}),
    }
    write[kind]()


@pytest.mark.parametrize("key", KEYS, ids=[k.split(":", 2)[-1].split(":")[0] for k in KEYS])
def test_a_key_of_another_kind_is_refused_by_the_library_and_reported_by_the_supervisor(
    rig: Rig, key: str
) -> None:
    for kind in KINDS:
        rig.write(_record(status=b"RUNNING"))
        rig.r.zadd(machines_key("balloons"), {MACHINE: NOW})
        if rig.r.type(key).decode() == kind:
            continue
        _put(rig.r, key, kind)
        rig.library()  # a BalloonsError at most, from each call
        # One pool's, the sweep's or a flow's error is reported; the pools' index reads as none.
        report = rig.app.supervisor(orphan_min_age=0, boot_probe=0).step(gc=True)
        assert all(isinstance(e, str) and e for e in report.errors), report.errors
        rig.r.delete(gc_lock_key("balloons"))


def test_a_machine_record_of_another_kind_is_skipped_not_the_sweep(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the sweep's one pipelined read failed on it (``gc: ... WRONGTYPE``), so no
    orphan was destroyed while it stood; ``app.backend.list()`` raised redis-py's own error;
    ``balloons machines``, ``balloons pools`` and the dashboard's pools page failed whole."""
    rig.write(_record(status=b"RUNNING"))
    orphan = "0123456789orph"
    rig.r.zadd(machines_key("balloons"), {MACHINE: NOW, orphan: NOW})
    rig.r.rpush(machine_key("balloons", MACHINE), b"not a record")
    rig.r.hset(
        machine_key("balloons", orphan),
        mapping={"state": "started", "pool": "default", "created": time.time() - 30 * 86400},
    )
    with caplog.at_level(logging.WARNING, logger="balloons.store"):
        assert [m.id for m in rig.app.backend.list()] == [orphan]
        assert rig.app.backend.inspect(MACHINE) is None
    assert any(MACHINE in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    found = rig.app.supervisor(orphan_min_age=0).collect_orphans()
    assert [m.id for m in found] == [orphan]
    assert ("destroy", orphan) in rig.app.backend.calls  # type: ignore[attr-defined]
    for args in (["machines", "--all"], ["pools"]):
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 0, (args, out.output)
    assert orphan in CliRunner().invoke(cli, ["machines", "--all"]).output
    page = rig.web.get("/pools")
    assert page.status_code == 200, page.text[:500]


def test_a_job_record_of_another_kind_is_listed_invalid_not_the_end_of_the_listing(
    rig: Rig,
) -> None:
    """Before: the listing's pipelined read failed on it, so ``balloons jobs``, the dashboard's
    jobs page and ``app.jobs()`` failed whole, for every job of every pool."""
    rig.write(_record(status=b"RUNNING"))
    other = "01jd3x9k2m8vq4t7w0c5r6y1zz"
    rig.r.zadd(PK.jobs, {other: NOW + 1})
    rig.r.rpush(PK.job(other), b"not a record")
    listed = {info.id: info.status for info in rig.app.jobs()}
    assert listed[f"default.{other}"] is JobStatus.INVALID and JOB in listed
    out = CliRunner().invoke(cli, ["jobs", "--json"])
    assert out.exit_code == 0, out.output
    assert other in out.output and ULID in out.output
    page = rig.web.get("/jobs")
    assert page.status_code == 200 and other in page.text and ULID in page.text, page.text[:500]
    assert asyncio.run(_listed_async(rig)) == listed


async def _listed_async(rig: Rig) -> dict[str, JobStatus]:
    try:
        return {info.id: info.status for info in await rig.app.jobs_async()}
    finally:
        await rig.app.store.aclose()


def test_a_pool_config_of_another_kind_is_listed_unreadable_among_the_others(rig: Rig) -> None:
    """Before: ``balloons pools`` failed whole, exit 5 (Redis "unreachable"), and the
    dashboard's pools page answered 503, for every pool."""
    rig.write(_record(status=b"RUNNING"))
    other = PoolKeys("balloons", "other")
    rig.r.sadd(pools_key("balloons"), "other")
    rig.r.hset(other.cfg, mapping={"cap": 3, "min": 0})
    rig.r.set(PK.cfg, b"\xff[")
    assert PK.cfg in (rig.app.store.pool_stats("default")["unreadable"] or "")
    out = CliRunner().invoke(cli, ["pools"])
    assert out.exit_code == 1, out.output  # not 5: Redis answered
    assert "default (unreadable)" in out.output and "other" in out.output, out.output
    assert f"pool default: {PK.cfg}" in out.output, out.output
    out = CliRunner().invoke(cli, ["pools", "--json"])
    assert out.exit_code == 1, out.output
    rows = {r["pool"]: r for r in json.loads(out.stdout)}
    assert PK.cfg in rows["default"]["unreadable"] and rows["other"]["unreadable"] is None
    assert rows["other"]["max_machines"] == 3
    page = rig.web.get("/pools")
    assert page.status_code == 200, page.text[:500]
    assert "unreadable" in page.text and 'data-pool="other"' in page.text


def test_a_pools_index_of_another_kind_lists_no_pool_and_names_the_key(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every read of the pools failed (``app.jobs()``, the dashboard's jobs, pools and
    metrics pages: 503) and ``balloons pools`` exited 5 (Redis "unreachable")."""
    rig.write(_record(status=b"RUNNING"))
    index = pools_key("balloons")
    rig.r.delete(index)
    rig.r.rpush(index, b"default")
    queries._TOLD.clear()  # warned once per process: maybe by an earlier test
    with caplog.at_level(logging.WARNING, logger="balloons.store"):
        assert rig.app.jobs() == []
        assert rig.app.supervisor().step(gc=False).errors == []
    assert any(index in r.getMessage() for r in caplog.records), caplog.text
    out = CliRunner().invoke(cli, ["pools"])
    assert out.exit_code == 1 and f"the pools index {index} cannot be read" in out.output, (
        out.output
    )
    for path in ("/pools", "/jobs", "/metrics"):
        page = rig.web.get(path)
        assert page.status_code == 200, (path, page.text[:500])
