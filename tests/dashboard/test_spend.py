"""The pools' billed machine-seconds by hour (the ``spend`` hash, a ring of hours), which the
scripts that end attempts keep and the charts page reads for cost over time."""

from __future__ import annotations

import time

import pytest
import redis

from balloons.dashboard import aggregates
from balloons.dashboard.aggregates import Spend, parse_spend, read_spend
from balloons.store.keys import SPEND_HOURS, PoolKeys
from tests import tasks

pytestmark = pytest.mark.machines


def pool_keys() -> PoolKeys:
    return PoolKeys(tasks.app.settings.namespace, "default")


def test_an_attempt_adds_its_billed_seconds_to_the_hour_it_ended(r: redis.Redis) -> None:
    pk = pool_keys()
    before = int(time.time() // 3600)
    tasks.add.submit(1, 2).result(timeout=30)
    tasks.add.submit(3, 4).result(timeout=30)
    after = int(time.time() // 3600)
    raw = r.hgetall(pk.spend)
    billed = int(r.hget(pk.stats, "ms:1:256:tests.tasks:add") or 0)
    places = {k: v for k, v in raw.items() if not k.endswith(b":h")}
    hours = {int(v) for k, v in raw.items() if k.endswith(b":h")}
    assert billed > 0 and sum(int(v) for v in places.values()) == billed
    assert hours <= {before, after} and len(places) == len(hours)
    for hour in hours:
        assert f"1:256:{hour % SPEND_HOURS}".encode() in places
    got = read_spend(tasks.app.store, ["default"], before, after)
    assert sum(got.seconds.values()) == pytest.approx(billed / 1000)
    assert {(c, m) for _, c, m in got.seconds} == {(1, 256)} and got.invalid == 0
    assert not read_spend(tasks.app.store, ["default"], after + 1, after + 48).seconds


def test_the_ring_starts_a_place_again_in_a_new_hour_and_never_grows(r: redis.Redis) -> None:
    pk = pool_keys()
    now = int(time.time() // 3600)
    # Every place holds the hour a week before the one it stands for now: all stale.
    old = {}
    for h in range(now - SPEND_HOURS + 2, now + 2):
        old[f"1:256:{h % SPEND_HOURS}"] = 10**9
        old[f"1:256:{h % SPEND_HOURS}:h"] = h - SPEND_HOURS
    r.hset(pk.spend, mapping=old)
    assert not read_spend(tasks.app.store, ["default"], now - SPEND_HOURS + 2, now + 1).seconds
    tasks.add.submit(1, 2).result(timeout=30)
    raw = {k.decode(): int(v) for k, v in r.hgetall(pk.spend).items()}
    assert len(raw) == 2 * SPEND_HOURS  # no field added
    fresh = [k for k, v in raw.items() if k.endswith(":h") and v > now - SPEND_HOURS + 1]
    assert len(fresh) == 1  # one place started again, with this job's seconds only
    place = fresh[0].removesuffix(":h")
    assert raw[place] == int(r.hget(pk.stats, "ms:1:256:tests.tasks:add") or 0) < 10**9
    assert raw[fresh[0]] in (now, now + 1)


def test_a_spend_hash_altered_in_redis_loses_figures_never_the_job(r: redis.Redis) -> None:
    pk = pool_keys()
    r.set(pk.spend, "not a hash")
    assert tasks.add.submit(2, 3).result(timeout=30) == 5
    assert r.get(pk.spend) == b"not a hash"
    now = int(time.time() // 3600)
    assert read_spend(tasks.app.store, ["default"], now - 1, now + 1).invalid == 1
    r.delete(pk.spend)
    r.hset(
        pk.spend, mapping={f"1:256:{now % SPEND_HOURS}": "x", f"1:256:{now % SPEND_HOURS}:h": now}
    )
    assert tasks.add.submit(2, 4).result(timeout=30) == 6  # HINCRBY on "x" fails: a figure lost
    assert r.hget(pk.spend, f"1:256:{now % SPEND_HOURS}") == b"x"
    r.delete(pk.spend)
    pipe = r.pipeline(transaction=False)
    for i in range(aggregates.MAX_SPEND_FIELDS + 1):
        pipe.hset(pk.spend, f"1:{i + 1}:0", 1)
    pipe.execute()
    too_large = read_spend(tasks.app.store, ["default"], now - 1, now + 1)
    assert too_large.invalid == 1 and not too_large.seconds


def test_hostile_spend_fields_are_skipped() -> None:
    h = 500_000
    i = h % SPEND_HOURS
    raw = {
        f"2:512:{i}".encode(): b"3000",  # 3 s at hour h
        f"2:512:{i}:h".encode(): str(h).encode(),
        f"1:256:{i}".encode(): b"1000",  # its hour is not this place's
        f"1:256:{i}:h".encode(): str(h + 1).encode(),
        f"1:256:{(i + 1) % SPEND_HOURS}".encode(): b"5000",  # no hour: left out
        f"0:256:{i}".encode(): b"1",  # no such size
        f"1:256:{SPEND_HOURS}".encode(): b"1",  # no such place
        f"1:256:{i}:x".encode(): b"1",
        f"4:1024:{i}".encode(): b"nan",
        f"4:1024:{i}:h".encode(): b"1e400",
        b"1:256": b"1",
        b"\xff\xfe": b"1",
    }
    out = Spend()
    parse_spend(raw, h, h, out)
    assert out.seconds == {(h * 3600, 2, 512): 3.0}
    assert out.invalid == 8
    out = Spend()
    parse_spend(raw, h + 1, h + 5, out)  # outside the hours asked for
    assert not out.seconds
