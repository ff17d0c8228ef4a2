"""STRANDED (balloons.control.versions) called directly against the real Valkey: which queued
jobs it counts as stranded (another known version of the caller's key, no slot that may take
them, no supervisor of their version seen within the grace), the grace, and the guards of
its re-tag and its failure."""

from __future__ import annotations

import json
from typing import Any

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from balloons.ids import ulid as new_ulid
from balloons.store import lua, replies
from balloons.store.keys import PoolKeys, pools_key
from tests import tasks
from tests.test_hostile_readers import ULID, VALUE
from tests.test_scripts import NS, Pool

KEY = "aaaaaaaaaaaa"
OLD, NEW = f"{KEY}.111111111111", f"{KEY}.222222222222"
ANY = f"{KEY}.000000000000"
OTHER_KEY = "bbbbbbbbbbbb.111111111111"


def submit(p: Pool, tag: str) -> tuple[str, Any]:
    u = new_ulid()
    payload = json.dumps({"id": f"{p.pk.pool}.{u}", "ttl": 600, "task": "m:f"})
    args = (u, payload, "{}", "sig", 600, p.conf, "", 0, 1, 256, "", tag)
    return u, replies.submit(p.run(lua.SUBMIT, *args, jobs=(u,)))


def scan(p: Pool, grace: float = 0, mine: str = NEW) -> list[bytes]:
    out: list[bytes] = p.run(lua.STRANDED, "scan", mine, grace)
    return out


def change(p: Pool, mode: str, u: str, tag: str = OLD, n: int = 1, grace: float = 0) -> Any:
    extra = ("version_gone", '{"message": "gone"}', "etag") if mode == "fail" else ()
    return p.run(lua.STRANDED, mode, NEW, grace, u, n, tag, *extra, jobs=(u,))


def field(p: Pool, u: str, name: str) -> bytes | None:
    return p.r.hget(p.pk.job(u), name)  # type: ignore[return-value]


def test_only_queued_jobs_of_another_known_version_of_the_key_are_stranded(
    r: redis.Redis,
) -> None:
    p = Pool(r, cap=0)  # nothing gets a slot: every job waits in the queue
    old, _ = submit(p, OLD)
    others = [submit(p, tag)[0] for tag in (NEW, ANY, OTHER_KEY, "")]
    assert scan(p) == []  # the first look marks it
    assert field(p, old, "stranded") is not None
    assert scan(p) == [old.encode(), b"1"]  # stranded for the grace (0 s)
    assert scan(p, grace=3600) == []  # not for an hour
    for u in others:
        assert field(p, u, "stranded") is None
    # A caller that knows no version (or no tag) finds nothing and writes nothing.
    assert scan(p, mine=ANY) == [] and scan(p, mine="garbage") == []


def test_the_scan_and_the_changes_are_decoded_by_the_store_s_replies(r: redis.Redis) -> None:
    p = Pool(r, cap=0)
    old, _ = submit(p, OLD)
    scan(p)
    (found,) = replies.stranded(scan(p))
    assert found == replies.Stranded(old, 1)
    assert (found.ulid, found.attempt) == (old, 1)
    assert replies.stranded_done(change(p, "retag", old)) is True
    assert replies.stranded_done(change(p, "retag", old)) is False  # done once


@given(raw=st.one_of(VALUE, st.none(), st.integers(), st.lists(st.one_of(VALUE, st.integers()))))
@example(raw=[ULID.encode(), b"1", b"not-alnum", b"1", ULID.encode(), b"0", ULID.encode()])
@example(raw=[ULID.encode(), b"99999999999999999999", "\u00e9".encode(), b"2"])
def test_a_hostile_stranded_reply_decodes_to_well_formed_jobs_or_none(raw: Any) -> None:
    for found in replies.stranded(raw):
        assert found.ulid.isalnum() and isinstance(found.attempt, int) and found.attempt >= 1
    assert replies.stranded_done(raw) is (raw == [1])


def test_a_machine_of_its_version_or_a_supervisor_of_it_keeps_a_job_from_being_stranded(
    r: redis.Redis,
) -> None:
    p = Pool(r, cap=1)
    running, placed = submit(p, OLD)  # gets the slot, of its tag: a machine of version OLD
    assert placed.placed == "launch"
    waiting, _ = submit(p, OLD)
    assert scan(p) == [] and scan(p) == []
    assert field(p, waiting, "stranded") is None
    assert p.lost(f"{running}-1", running, 1).code.name == "OK"  # its machine is gone
    assert scan(p) == [] and field(p, waiting, "stranded") is not None
    # A supervisor of version OLD steps in the pool: not stranded within the grace.
    scan(p, mine=OLD, grace=3600)
    assert scan(p, grace=3600) == []
    assert change(p, "retag", waiting, grace=3600) == [0]
    # A version no supervisor has stepped for a day is forgotten.
    r.hset(p.pk.cfg, f"seen:{OLD}", p.now() - 86401)
    scan(p)
    assert r.hget(p.pk.cfg, f"seen:{OLD}") is None and r.hget(p.pk.cfg, f"seen:{NEW}")


def test_retag_gives_a_stranded_job_the_callers_tag_once(r: redis.Redis) -> None:
    p = Pool(r, cap=0)
    u, _ = submit(p, OLD)
    assert change(p, "retag", u) == [0]  # not marked stranded yet
    scan(p)
    assert change(p, "retag", u, n=2) == [0]  # another attempt
    assert change(p, "retag", u, tag=ANY) == [0]  # another tag
    assert change(p, "retag", u) == [1]
    assert field(p, u, "compat") == NEW.encode() and field(p, u, "rerouted") == OLD.encode()
    assert field(p, u, "status") == b"QUEUED" and field(p, u, "stranded") is None
    assert change(p, "retag", u) == [0]  # its tag is the caller's now
    assert scan(p) == [] and scan(p) == []  # and it is not stranded any more


def test_fail_ends_a_stranded_job_with_the_callers_reason_and_error(r: redis.Redis) -> None:
    p = Pool(r, cap=0)
    u, _ = submit(p, OLD)
    scan(p)
    assert change(p, "fail", u) == [1]
    assert field(p, u, "status") == b"FAILED" and field(p, u, "reason") == b"version_gone"
    assert field(p, u, "esig") == b"etag" and r.zscore(p.pk.queue, u) is None
    assert r.lrange(p.pk.done(u), 0, -1) == [b"FAILED"]
    assert change(p, "fail", u) == [0]  # it ended


# ----------------------------------------------------------- hostile records, the supervisor
OLD_OF_MINE = "{kid}.111111111111"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(job={"status": b"QUEUED", "compat": b"OLD", "attempt": b"1", "sig": b"x"}, seen=None)
@given(
    job=st.fixed_dictionaries(
        {"status": st.sampled_from([b"QUEUED", b"PWNED", b"FAILED"])},
        optional={
            "compat": st.one_of(st.just(b"OLD"), VALUE),
            "payload": st.one_of(st.just(b'{"task": "tests.tasks:add"}'), VALUE),
            "args": VALUE,
            "sig": VALUE,
            "attempt": VALUE,
            "stranded": VALUE,
            "rerouted": VALUE,
            "ttl": VALUE,
            "created": VALUE,
        },
    ),
    seen=st.one_of(st.none(), VALUE),
)
def test_the_supervisor_survives_any_stranded_record(
    r: redis.Redis, job: dict[str, bytes], seen: bytes | None
) -> None:
    """Whatever a stranded-looking record holds, a step neither fails nor runs it: it is left,
    or ends FAILED (its signature does not verify), and every reader still reads it."""
    r.flushall()
    app = tasks.app
    kid = app.compat().tag.partition(".")[0]
    old = OLD_OF_MINE.format(kid=kid).encode()
    pk = PoolKeys(NS, "default")
    r.sadd(pools_key(NS), "default")
    r.hset(pk.cfg, mapping={"cap": 0, **({f"seen:{old.decode()}": seen} if seen else {})})
    r.hset(pk.job(ULID), mapping={k: (old if v == b"OLD" else v) for k, v in job.items()})
    r.zadd(pk.queue, {ULID: 1})
    supervisor = app.supervisor(version_grace=0)
    for _ in range(2):
        report = supervisor.step(gc=False)
        assert report.errors == [], report.errors
    assert all(outcome == "signature_invalid" for _, outcome in report.versions)
    if job == {"status": b"QUEUED", "compat": b"OLD", "attempt": b"1", "sig": b"x"}:
        assert report.versions == [(f"default.{ULID}", "signature_invalid")]
    info = app.job(f"default.{ULID}").info()
    assert info.status.value in ("QUEUED", "FAILED", "INVALID")
    assert info.note is None or isinstance(info.note, str)
    assert new_machines(r) == 0


def new_machines(r: redis.Redis) -> int:
    return int(r.zcard(PoolKeys(NS, "default").slots))


def test_the_verdict_on_a_record_names_what_keeps_the_current_code_from_running_it() -> None:
    from balloons.control.versions import verdict
    from balloons.signing import sign

    app = tasks.app
    key = app.secret.encode()

    def judged(task: str, args: bytes, ser: str = "json") -> tuple[str | None, str]:
        payload = json.dumps({"id": "p.x", "task": task, "ser": ser}).encode()
        return verdict(app, "p.x", payload, args, sign(key, payload, args))

    ok = b'{"args": [1, 2], "kwargs": {}}'
    assert judged("tests.tasks:add", ok) == (None, "")
    assert judged("balloons.command:run", b"anything") == (None, "")  # argv, whatever the code
    reason, message = judged("tests.tasks:add", ok, ser="pickle")
    assert reason == "version_gone" and "'pickle'" in message
    reason, message = judged("tests.tasks:add", b"not json")
    assert reason == "version_gone" and "cannot decode" in message
    reason, message = judged("tests.tasks:add", b'{"args": [1], "kwargs": {"z": 2}}')
    assert reason == "version_gone" and "no longer bind" in message
    reason, message = judged("tests.tasks:gone", ok)
    assert reason == "version_gone" and "no task tests.tasks:gone" in message
    payload = json.dumps({"id": "p.x", "task": "tests.tasks:add"}).encode()
    assert verdict(app, "p.x", payload, ok, "forged")[0] == "signature_invalid"
