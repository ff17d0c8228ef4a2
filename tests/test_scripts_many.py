"""``SUBMIT_MANY`` called directly against the real Valkey: a batch of jobs is stored and
placed exactly as the same jobs submitted one by one with ``SUBMIT`` (the replies, the queue's
order, the slots, the delayed set, the records): the cap, FIFO order within a priority,
priorities, a warm machine, a delayed job, an id in use, idempotency keys (new, repeated
within the batch, naming an existing job)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from balloons.errors import StoreError
from balloons.ids import ulid as new_ulid
from balloons.store import lua, replies
from balloons.store.keys import script_keys
from balloons.store.replies import Code
from tests.test_scripts import Pool

#: The record's fields the two ways write alike (the others are times of the server's clock).
SAME = ("payload", "args", "sig", "attempt", "ttl", "need", "compat", "status", "key", "slot")
TAG = "0123456789ab.cdef01234567"


def _job(
    p: Pool, u: str, due: str = "", priority: int = 0, key: str = "", cpus: int = 1
) -> list[Any]:
    payload = json.dumps({"id": u, "ttl": 600})  # the same in both pools
    return [u, payload, "{}", "sig", due, priority, cpus, 256, key]


def _one(p: Pool, job: list[Any]) -> replies.Submitted:
    u, payload, data, sig, due, priority, cpus, mem, key = job
    keys = script_keys(p.pk, u, idem=key)
    args = [p.pk.tag, 0, u, payload, data, sig, 600, p.conf, due, priority, cpus, mem, key, TAG]
    return replies.submit(p.r.eval(lua.SUBMIT, len(keys), *keys, *args))


def _many(p: Pool, jobs: list[list[Any]]) -> list[replies.Submitted]:
    keys = script_keys(p.pk)
    flat = [x for job in jobs for x in job]
    raw = p.r.eval(lua.SUBMIT_MANY, len(keys), *keys, p.pk.tag, 0, 600, p.conf, TAG, *flat)
    return replies.submit_many(raw, len(jobs))


def _state(p: Pool, ids: list[str]) -> dict[str, Any]:
    r = p.r
    records = {}
    for u in ids:
        rec = r.hgetall(p.pk.job(u))
        records[u] = {k.decode(): v for k, v in rec.items() if k.decode() in SAME}  # type: ignore[union-attr]
    return {
        "queue": [m.decode() for m in r.zrange(p.pk.queue, 0, -1)],  # type: ignore[union-attr]
        "slots": sorted(m.decode() for m in r.zrange(p.pk.slots, 0, -1)),  # type: ignore[union-attr]
        "delayed": [m.decode() for m in r.zrange(p.pk.delayed, 0, -1)],  # type: ignore[union-attr]
        "idle": r.scard(p.pk.idle),
        "records": records,
    }


def _shown(got: list[replies.Submitted]) -> list[tuple[Any, ...]]:
    return [(s.code, s.placed, s.grant, s.position, s.existing, s.new_pool) for s in got]


@pytest.mark.parametrize("warm", [False, True])
def test_a_batch_is_placed_as_the_same_jobs_one_by_one(r: redis.Redis, warm: bool) -> None:
    one, many = Pool(r, "one", cap=3), Pool(r, "many", cap=3)
    before: list[str] = []
    if warm:  # a machine idle in each pool, of the jobs' tag
        for p in (one, many):
            u = new_ulid() if not before else before[0]
            before = [u]
            assert _one(p, _job(p, u)).placed == "launch"
            assert p.claim(u).code is Code.OK and p.finish(u) is Code.OK
            assert p.take(f"{u}-1").code is Code.NONE
    taken = new_ulid()
    for p in (one, many):
        assert _one(p, _job(p, taken, key="old")).code is Code.OK
    ids = [new_ulid() for _ in range(12)]
    spec = [
        {}, {"priority": 5}, {}, {"due": "+60"}, {"key": "k1"}, {"key": "k1"}, {"key": "old"},
        {"priority": -2}, {"cpus": 2}, {"priority": 5}, {}, {},
    ]  # fmt: skip
    ids[10] = taken  # an id in use
    got_one = [_one(one, _job(one, u, **kw)) for u, kw in zip(ids, spec, strict=True)]
    got_many = _many(many, [_job(many, u, **kw) for u, kw in zip(ids, spec, strict=True)])
    assert _shown(got_many) == _shown(got_one)
    assert [s.placed for s in got_one].count("queued") >= 3  # the cap was reached
    assert got_one[5].code is Code.EXISTING and got_one[6].existing == taken
    assert got_one[10].code is Code.NONE and got_one[3].placed == "delayed"
    assert _state(many, [taken, *before, *ids]) == _state(one, [taken, *before, *ids])
    # Every job visible in its pool's index.
    for u in {*ids} - {ids[5], ids[6]}:
        assert r.zscore(many.pk.jobs, u) is not None


def test_a_new_pool_s_first_batch_says_so_once(r: redis.Redis) -> None:
    p = Pool(r, "fresh", cap=2)
    got = _many(p, [_job(p, new_ulid()) for _ in range(3)])
    assert [s.new_pool for s in got] == [True, False, False]
    assert [s.placed for s in got] == ["launch", "launch", "queued"]


def test_an_empty_batch_stores_nothing_and_a_malformed_reply_is_refused(r: redis.Redis) -> None:
    p = Pool(r, "empty")
    assert _many(p, []) == []
    assert r.exists(p.pk.jobs) == 0
    with pytest.raises(StoreError, match="SUBMIT_MANY"):
        replies.submit_many([[1, b"queued", b"1"]], 2)
    with pytest.raises(StoreError, match="SUBMIT_MANY"):
        replies.submit_many(b"nope", 1)
