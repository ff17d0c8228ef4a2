"""The Lua scripts, called directly against the real Valkey: chosen keys and arguments in, the
keys checked after, each reply read through :mod:`balloons.store.replies`. No machine, no app: the
guards (each code by name), the cap (also under concurrent submitters), FIFO order within a
priority, and leases (a heartbeat renews one; a lapsed one is reclaimed)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

import balloons
from balloons.control.reclaim import end_slot
from balloons.errors import StoreError
from balloons.ids import ulid as new_ulid
from balloons.store import lua, replies
from balloons.store.keys import PoolKeys, script_keys
from balloons.store.replies import Code
from tests import tasks
from tests.test_worker import HoldBackend

NS = "balloons"
SECRET = b"s" * 32


class Pool:
    """One pool's scripts, run with this pool's keys: the arguments each caller sends."""

    def __init__(
        self, r: redis.Redis, name: str = "p", cap: int = 2, hb: float = 2, **cfg: float
    ) -> None:
        self.r = r
        self.pk = PoolKeys(NS, name)
        self.hb = hb
        self.cap = cap  # the cap the supervisor passes SCALE_UP (its signed settings')
        settings = {"cap": cap, "boot": 60, "idle": 10, "min": 0, "hb": hb, "cpus": 1}
        settings.update({"mem": 256, "standby": 0, **cfg})
        self.conf = " ".join(f"{k} {v:g}" for k, v in settings.items())

    def run(self, script: str, *args: Any, jobs: tuple[str, ...] = ()) -> Any:
        keys = script_keys(self.pk, *jobs)
        return self.r.eval(script, len(keys), *keys, self.pk.tag, 0, *args)

    def submit(
        self, u: str = "", priority: int = 0, due: str = "", cpus: int = 1
    ) -> tuple[str, Any]:
        u = u or new_ulid()
        payload = json.dumps({"id": f"{self.pk.pool}.{u}", "ttl": 600})
        args = (u, payload, "{}", "sig", 600, self.conf, due, priority, cpus, 256, "")
        return u, replies.submit(self.run(lua.SUBMIT, *args, jobs=(u,)))

    def claim(self, u: str, n: int = 1, machine: str = "m1") -> replies.Claim:
        raw = self.run(lua.CLAIM, u, n, machine, "{}", "tag", jobs=(u,))
        return replies.claim(raw, u, n)

    def take(self, slot: str, machine: str = "m1", mode: str = "take", standby: str = "") -> Any:
        return replies.take(self.run(lua.TAKE, slot, machine, mode, standby))

    def finish(
        self, u: str, n: int = 1, machine: str = "m1", status: str = "SUCCEEDED", retry: str = ""
    ) -> Code:
        args = (u, n, machine, status, "1", "{}", "", retry, "", "tag", "")
        return replies.ended(self.run(lua.FINISH, *args, jobs=(u,)))

    def heartbeat(self, slot: str, u: str = "", n: int = 0) -> replies.Beat:
        return replies.heartbeat(self.run(lua.HEARTBEAT, slot, u, n, "", "", jobs=(u,)))

    def lost(self, slot: str, u: str, n: int, only_if_expired: bool = False) -> replies.Lost:
        expired = "1" if only_if_expired else "0"
        args = (slot, u, n, "{}", "lost", "", "", expired, "tag", "")
        return replies.lost(self.run(lua.LOST, *args, jobs=(u,)))

    def status(self, u: str) -> bytes | None:
        return self.r.hget(self.pk.job(u), "status")  # type: ignore[return-value]

    def lease(self, slot: str) -> float | None:
        return self.r.zscore(self.pk.slots, slot)

    def now(self) -> float:
        return replies.clock(self.r.time())

    def running(self, machine: str = "m1") -> str:
        """A job claimed by a machine on its own slot: its ULID (the slot is ULID-1)."""
        u, placed = self.submit()
        assert placed.placed == "launch" and placed.grant.slot == f"{u}-1"
        assert self.claim(u, machine=machine).code is Code.OK
        return u


# ---------------------------------------------------------------------- guards
def test_finish_guards_gone_moved_refused_and_other_machine(r: redis.Redis) -> None:
    p = Pool(r, cap=1)
    u = p.running("m1")
    assert p.finish(new_ulid()) is Code.GONE  # no such record
    assert p.finish(u, n=2) is Code.MOVED  # another attempt
    assert p.finish(u, machine="m2") is Code.OTHER_MACHINE  # not the machine that holds it
    assert p.status(u) == b"RUNNING"
    assert p.finish(u) is Code.OK
    assert p.finish(u) is Code.REFUSED  # it ended: not a state that allows the change
    queued, _ = p.submit()  # the cap is taken: it waits in the queue
    assert p.finish(queued) is Code.REFUSED
    assert r.lrange(p.pk.done(u), 0, -1) == [b"SUCCEEDED"]


def test_finish_with_a_retry_schedules_the_next_attempt(r: redis.Redis) -> None:
    p = Pool(r, cap=1)
    u = p.running()
    assert p.finish(u, status="FAILED", retry="0") is Code.RETRY
    assert r.hmget(p.pk.job(u), "status", "attempt") == [b"QUEUED", b"2"]
    assert r.zrange(p.pk.queue, 0, -1) == [u.encode()]


def test_claim_guards_by_name(r: redis.Redis) -> None:
    p = Pool(r, cap=5)
    nothing = p.claim(new_ulid())
    assert nothing.code is Code.GONE and nothing.status == replies.NO_SLOT

    gone, _ = p.submit()
    r.delete(p.pk.job(gone))
    assert p.claim(gone) == replies.Claim(Code.GONE, None, 0.0, 0.0, "")

    moved, _ = p.submit()
    r.hset(p.pk.job(moved), "attempt", 2)
    assert p.claim(moved).code is Code.MOVED

    refused, _ = p.submit()
    r.hset(p.pk.job(refused), "status", "CANCELLED")
    assert p.claim(refused)[::4] == (Code.REFUSED, "CANCELLED")

    altered, _ = p.submit()
    r.hset(p.pk.slot, f"{altered}-1", "not json")
    bad = p.claim(altered)
    assert bad.code is Code.BAD_SLOT and bad.status == "bad slot"
    assert p.lease(f"{altered}-1") is None  # the slot is freed
    assert r.hmget(p.pk.job(altered), "status", "reason") == [b"FAILED", b"record_invalid"]

    replayed, _ = p.submit()
    r.set(p.pk.runs(replayed), "1 0")  # attempt 1 was claimed before: the record was put back
    assert p.claim(replayed).code is Code.REPLAYED
    assert r.hmget(p.pk.job(replayed), "status", "reason") == [b"FAILED", b"record_invalid"]
    entry = json.loads(r.hget(p.pk.slot, f"{replayed}-1") or b"{}")  # type: ignore[arg-type]
    assert (entry["job"], entry["state"]) == ("", "idle")  # its machine takes queued work


def test_claim_returns_the_record_and_the_pools_pace(r: redis.Redis) -> None:
    p = Pool(r, hb=0.5)
    u, _ = p.submit()
    got = p.claim(u, machine="m7")
    assert got.code is Code.OK and got.work is not None
    assert (got.work.ulid, got.work.attempt, got.work.args, got.work.sig) == (u, 1, b"{}", b"sig")
    assert (got.heartbeat, got.idle) == (0.5, 10.0)
    assert r.hmget(p.pk.job(u), "status", "machine") == [b"RUNNING", b"m7"]


def test_take_guards_released_standby_and_gone(r: redis.Redis) -> None:
    p = Pool(r, cap=3, standby=1)
    assert p.take(f"{new_ulid()}-0").code is Code.GONE  # no such slot

    u = p.running()
    assert p.finish(u) is Code.OK
    idle = p.take(f"{u}-1")
    assert idle.code is Code.NONE and idle.idle == 10.0  # nothing queued: wait for a wake
    assert r.sismember(p.pk.idle, f"{u}-1")
    assert p.take(f"{u}-1", mode="release").code is Code.RELEASED
    assert p.lease(f"{u}-1") is None

    # A machine of its own slot (ID-0) that stops when it exits is kept on standby.
    own = new_ulid()
    r.zadd(p.pk.slots, {f"{own}-0": p.now() + 60})
    r.hset(p.pk.slot, f"{own}-0", json.dumps({"job": "", "cpus": 1, "mem": 256}))
    assert p.take(f"{own}-0", machine="m9", mode="release", standby="1").code is Code.STANDBY
    assert json.loads(r.hget(p.pk.standby, "m9") or b"{}")["slot"] == own  # type: ignore[arg-type]
    assert p.lease(f"{own}-0") is None


def test_cancel_guards_and_reply(r: redis.Redis) -> None:
    p = Pool(r, cap=1)
    assert replies.cancel(p.run(lua.CANCEL, new_ulid())).code is Code.GONE
    u = p.running("m1")
    got = replies.cancel(p.run(lua.CANCEL, u, jobs=(u,)))
    assert got == replies.Cancelled(Code.OK, "RUNNING", f"{u}-1", "m1")
    again = replies.cancel(p.run(lua.CANCEL, u, jobs=(u,)))
    assert again == replies.Cancelled(Code.REFUSED, "CANCELLED", "", "")
    assert p.heartbeat(f"{u}-1", u, 1).status == "CANCELLED"


def test_lost_refuses_a_slot_that_moved_on_to_another_job(r: redis.Redis) -> None:
    p = Pool(r, cap=1)
    u = p.running()
    assert p.lost(f"{u}-1", new_ulid(), 1).code is Code.MOVED
    assert p.status(u) == b"RUNNING" and p.lease(f"{u}-1") is not None


# ------------------------------------------------------------------------- cap
def test_submit_places_up_to_the_cap_and_queues_the_rest(r: redis.Redis) -> None:
    p = Pool(r, cap=2)
    placed = [p.submit()[1] for _ in range(5)]
    assert [s.placed for s in placed] == ["launch", "launch", "queued", "queued", "queued"]
    assert [s.position for s in placed[2:]] == [1, 2, 3]
    assert placed[0].new_pool and not placed[1].new_pool
    assert r.zcard(p.pk.slots) == 2 and r.zcard(p.pk.queue) == 3


def test_fill_takes_slots_for_queued_work_and_the_floor_never_past_the_cap(
    r: redis.Redis,
) -> None:
    p = Pool(r, cap=3, min=5)
    jobs = [p.submit()[0] for _ in range(2)]
    r.zrem(p.pk.slots, *(f"{u}-1" for u in jobs))  # their machines went away: requeue them
    for place, u in enumerate(jobs):
        r.hset(p.pk.job(u), "status", "QUEUED")
        r.zadd(p.pk.queue, {u: place})
    floor = [new_ulid() for _ in range(5)]
    grants = replies.scale_up(p.run(lua.SCALE_UP, " ".join(floor), "", "", "", 3))
    assert [g.ulid for g in grants[:2]] == jobs and [g.attempt for g in grants] == [1, 1, 0]
    assert grants[2] == replies.Grant(f"{floor[0]}-0", floor[0], 0, 1, 256)
    assert r.zcard(p.pk.slots) == 3


def test_the_cap_holds_under_concurrent_submitters(redis_url: str, r: redis.Redis) -> None:
    cap, threads, each = 4, 8, 25
    launched: list[str] = []
    with_job: list[str] = []
    seen: list[int] = []
    errors: list[BaseException] = []

    def submitter() -> None:
        client = redis.Redis.from_url(redis_url)
        p = Pool(client, cap=cap, min=cap + 3)
        try:
            for i in range(each):
                _, got = p.submit()
                grants = [got.grant] if got.grant is not None else []
                if i % 5 == 0:  # the supervisor's step, at the same time (with a warm floor)
                    grants += replies.scale_up(p.run(lua.SCALE_UP, new_ulid(), "", "", "", cap))
                launched.extend(g.slot for g in grants)
                with_job.extend(g.ulid for g in grants if g.attempt > 0)
                seen.append(client.zcard(p.pk.slots))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            client.close()

    workers = [threading.Thread(target=submitter) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    p = Pool(r)
    assert max(seen) <= cap and r.zcard(p.pk.slots) == cap
    assert len(launched) == len(set(launched)) == cap
    assert r.zcard(p.pk.queue) == threads * each - len(with_job)  # every job in one place


# ------------------------------------------------------------------------ FIFO
def test_a_machine_takes_queued_jobs_by_priority_then_in_order(r: redis.Redis) -> None:
    p = Pool(r, cap=1)
    first = p.running()
    order = [("a", 0), ("b", 0), ("c", 5), ("d", 0), ("e", 5), ("f", -1)]
    ids = {name: p.submit(priority=prio)[0] for name, prio in order}
    assert p.finish(first) is Code.OK
    taken, more = [], []
    for _ in order:
        took = p.take(f"{first}-1")
        assert took.code is Code.OK and took.work is not None and took.work.attempt == 1
        taken.append(took.work.ulid)
        more.append(took.more)
        assert p.finish(took.work.ulid) is Code.OK
    names = {u: name for name, u in ids.items()}
    assert [names[u] for u in taken] == ["c", "e", "a", "b", "d", "f"]
    # Each reply says whether jobs were left in the queue: the machine's cue to send its next
    # TAKE with its FINISH, or after it.
    assert more == [True, True, True, True, True, False]
    idle = p.take(f"{first}-1")
    assert idle.code is Code.NONE and not idle.more


def test_a_launch_goes_to_a_queued_job_no_idle_machine_will_take(r: redis.Redis) -> None:
    """An idle machine is woken for a job (``warm``); the next job comes before it takes it. The
    new machine is launched for the job the idle machine will not take, and the idle machine
    takes the one it was woken for. Before, the launch always went to the head of the queue:
    the job first in line waited for a boot while the one after it ran warm, and a job the idle
    machine is too small for was left queued with no machine coming until it idled out."""
    p = Pool(r, cap=4)
    u = p.running()
    assert p.finish(u) is Code.OK
    idle = f"{u}-1"
    for later_cpus in (1, 2):  # the next job: one the idle machine fits, one it does not
        assert p.take(idle).code is Code.NONE  # idle, one CPU
        woken, placed = p.submit()
        assert placed.placed == "warm"
        later, placed = p.submit(cpus=later_cpus)
        assert placed.placed == "launch" and placed.grant.ulid == later, later_cpus
        assert p.status(woken) == b"QUEUED" and p.status(later) == b"STARTING"
        took = p.take(idle)
        assert took.work is not None and took.work.ulid == woken
        assert p.finish(woken) is Code.OK
    # A job first in line that no idle machine fits still gets the launch.
    assert p.take(idle).code is Code.NONE
    fits, placed = p.submit()
    assert placed.placed == "warm"
    big, placed = p.submit(priority=5, cpus=2)  # ahead of it in line
    assert placed.placed == "launch" and placed.grant.ulid == big
    took = p.take(idle)
    assert took.work is not None and took.work.ulid == fits


def test_a_retried_job_keeps_its_place_in_line(r: redis.Redis) -> None:
    p = Pool(r, cap=1)
    u = p.running()
    later = [p.submit()[0] for _ in range(2)]
    assert p.finish(u, status="FAILED", retry="0") is Code.RETRY
    took = p.take(f"{u}-1")
    assert took.work is not None and (took.work.ulid, took.work.attempt) == (u, 2)
    assert r.zrange(p.pk.queue, 0, -1) == [x.encode() for x in later]


# ---------------------------------------------------------------------- leases
def test_a_heartbeat_renews_the_lease_and_reports_the_job(r: redis.Redis) -> None:
    p = Pool(r, cap=1, hb=0.5)
    before = p.now()
    u = p.running()
    after = p.now()
    slot = f"{u}-1"
    lease = p.lease(slot)
    assert lease is not None and before + 2.5 <= lease <= after + 2.5  # five heartbeats
    r.zadd(p.pk.slots, {slot: before + 0.1})  # about to lapse
    before = p.now()
    beat = p.heartbeat(slot, u, 1)
    after = p.now()
    assert beat == replies.Beat(Code.OK, "RUNNING", 0.5, 10.0)
    lease = p.lease(slot)
    assert lease is not None and before + 2.5 <= lease <= after + 2.5
    assert p.heartbeat(slot, u, 2).status == "MOVED"
    r.delete(p.pk.job(u))
    assert p.heartbeat(slot, u, 1).status == "GONE"
    r.zrem(p.pk.slots, slot)
    assert p.heartbeat(slot, u, 1) == replies.Beat(Code.GONE, "", None, None)


def test_a_lapsed_lease_is_reclaimed_and_a_live_one_is_not(r: redis.Redis) -> None:
    p = Pool(r, cap=2)
    live, lapsed = p.running("m1"), p.running("m2")
    assert p.lost(f"{live}-1", live, 1, only_if_expired=True).code is Code.NONE
    assert p.status(live) == b"RUNNING"
    r.zadd(p.pk.slots, {f"{lapsed}-1": p.now() - 1})
    got = p.lost(f"{lapsed}-1", lapsed, 1, only_if_expired=True)
    assert got == replies.Lost(Code.OK, lapsed, 1, "m2", Code.OK)
    assert p.lease(f"{lapsed}-1") is None
    assert r.hmget(p.pk.job(lapsed), "status", "reason") == [b"FAILED", b"lost"]


def test_the_reclaim_path_ends_a_lapsed_slot_through_lost(r: redis.Redis) -> None:
    """What the supervisor and the fork server call (``reclaim.end_slot``), on the script."""
    p = Pool(r, cap=1)
    u = p.running("m3")

    def eval_(script: str, pk: PoolKeys, *args: Any, jobs: tuple[str, ...] = ()) -> Any:
        keys = script_keys(pk, *jobs)
        return r.eval(script, len(keys), *keys, pk.tag, 0, *args)

    def reclaim() -> replies.Lost:
        slot = f"{u}-1"
        return end_slot(
            r.execute_command,
            eval_,
            p.pk,
            slot,
            "lost",
            "gone",
            secret=SECRET,
            only_if_expired=True,
        )

    assert reclaim() == replies.Lost(Code.NONE, "", 0, "", Code.NONE)  # its lease runs
    assert p.status(u) == b"RUNNING"
    r.zadd(p.pk.slots, {f"{u}-1": p.now() - 1})
    ended = reclaim()
    assert ended.code is Code.OK and (ended.ulid, ended.machine) == (u, "m3")
    assert p.status(u) == b"FAILED"


# ------------------------------------------------------------ other replies
def test_submit_replies_warm_delayed_existing_and_taken(r: redis.Redis) -> None:
    p = Pool(r, cap=1)
    u = p.running()
    assert p.finish(u) is Code.OK
    assert p.take(f"{u}-1").code is Code.NONE  # an idle machine
    assert p.submit()[1].placed == "warm"
    assert p.submit(due="+60")[1].placed == "delayed"
    taken, _ = p.submit()
    assert p.submit(taken)[1].code is Code.NONE  # the id is in use
    keyed = p.run(lua.SUBMIT, new_ulid(), "{}", "{}", "s", 600, p.conf, "", 0, 1, 256, "k1")
    first = replies.submit(keyed)
    again = replies.submit(
        p.run(lua.SUBMIT, new_ulid(), "{}", "{}", "s", 600, p.conf, "", 0, 1, 256, "k1")
    )
    assert first.code is Code.OK and again.code is Code.EXISTING and again.placed == "existing"


def test_pick_machine_trim_standby_machine_wanted_and_the_flags(r: redis.Redis) -> None:
    p = Pool(r, cap=2, standby=2)
    u, _ = p.submit()
    fresh = new_ulid()
    got = replies.pick_machine(p.run(lua.PICK_MACHINE, f"{u}-1", fresh))
    assert got == replies.Picked(False, "", fresh, 1, 256)
    assert replies.flag("LAUNCHED", p.run(lua.LAUNCHED, f"{fresh}-0", "mach"))
    assert not replies.flag("LAUNCHED", p.run(lua.LAUNCHED, f"{fresh}-0", "other"))
    assert replies.flag(
        "CONFIRM_LAUNCH", p.run(lua.CONFIRM_LAUNCH, f"{fresh}-0")
    )  # u waits in the queue
    wanted = replies.machine_wanted(p.run(lua.MACHINE_WANTED, "mach", f"{fresh}-0"))
    assert not wanted.standby and wanted.lease is not None
    assert replies.machine_wanted(p.run(lua.MACHINE_WANTED, "mach", "-")) == replies.Wanted(
        False, None
    )
    for i in range(3):
        rec = {"slot": new_ulid(), "cpus": 1, "mem": 256, "since": i}
        r.hset(p.pk.standby, f"m{i}", json.dumps(rec))
    assert replies.names("TRIM_STANDBY", p.run(lua.TRIM_STANDBY, 1)) == [
        "m1",
        "m0",
    ]  # the oldest go
    assert replies.machine_wanted(p.run(lua.MACHINE_WANTED, "m2", "-")).standby


# ---------------------------------------------------------- malformed replies
@pytest.mark.parametrize(
    ("decode", "raw"),
    [
        (replies.submit, [1, b"launch", b"s-1", b"u"]),  # too short
        (replies.submit, [1, b"somewhere", b""]),  # no such placement
        (replies.submit, [b"1", b"queued", b"1"]),  # the code is not an integer
        (replies.submit, b"OK"),
        (lambda raw: replies.claim(raw, "u", 1), [1, b"p", b"a"]),
        (lambda raw: replies.claim(raw, "u", 1), [1, b"p", b"a", b"s", b"x", b"10", b""]),
        (lambda raw: replies.claim(raw, "u", 1), [7, b"?"]),
        (replies.take, [1, b"u", b"one", b"p", b"a", b"s", b""]),  # attempt not a number
        (replies.take, [0]),
        (replies.take, [-9]),
        (replies.heartbeat, [1, b"RUNNING", b"nan", b"10"]),
        (replies.heartbeat, [1, [b"nested"], b"2", b"10"]),
        (replies.ended, b"1"),
        (replies.ended, 99),
        (replies.lost, [1, b"u", b"1", b"m"]),
        (replies.cancel, [1, b"RUNNING", b"s"]),
        (replies.scale_up, [b"s", b"u", b"1", b"1"]),
        (replies.pick_machine, [1, b"teleport", b"u", b"1", b"256"]),
        (replies.machine_wanted, [1, b"soon"]),
        (replies.clock, [b"1", b"2", b"3"]),
        (replies.clock, None),
    ],
)
def test_a_malformed_reply_is_a_store_error_naming_the_script(decode: Any, raw: Any) -> None:
    with pytest.raises(StoreError, match=r"the \w+ script's reply .* is malformed: expected"):
        decode(raw)


_ITEM = st.one_of(
    st.integers(-3, 4),
    st.integers(),
    st.booleans(),
    st.sampled_from([b"launch", b"queued", b"warm", b"delayed", b"s-1", b"", b"7", b"\xff"]),
    st.sampled_from(["launch", "queued", "7"]),
    st.none(),
    st.just([b"nested"]),
)


def _decoded(decode: Any, raw: Any) -> Any:
    try:
        got = decode(raw)
    except StoreError as exc:
        return ("error", str(exc))
    return (got, type(got.grant), got.code.__class__)


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from([1, 3, 0, 2, -1, True, b"1"]),
    where=st.sampled_from([b"launch", b"queued", b"warm", "launch", b"nowhere"]),
    rest=st.lists(_ITEM, max_size=6),
    shape=st.sampled_from([list, tuple]),
)
@example(code=1, where=b"launch", rest=[b"s-1", b"u", 1, 1, 256], shape=list)
@example(code=3, where=b"queued", rest=[4], shape=list)
@example(code=1, where=b"launch", rest=[b"s-1", b"u", True, 1, 256], shape=list)
@example(code=1, where=b"queued", rest=[b"4"], shape=list)
@example(code=3, where=b"queued", rest=[b"-4"], shape=list)
@example(code=1, where=b"queued", rest=[b""], shape=list)
@example(code=1, where=b"queued", rest=[b"4" * 19], shape=list)
@example(code=True, where=b"queued", rest=[b"4"], shape=list)
@example(code=1, where=b"launch", rest=[b"s-1", b"u", b"1", b"2", b"256"], shape=list)
@example(code=3, where=b"launch", rest=[b"s-1", b"u", b"-1", b"1", b"256"], shape=list)
@example(code=1, where=b"launch", rest=[b"s-1", b"u", b"1" * 19, b"1", b"256"], shape=list)
@example(code=1, where=b"launch", rest=[b"s-1", b"u", b"", b"1", b"256"], shape=list)
@example(code=1, where=b"launch", rest=[b"s-1", b"u", b"1.5", b"1", b"256"], shape=list)
def test_the_submit_replys_shortcut_decodes_as_the_general_decoder(
    code: Any, where: Any, rest: list[Any], shape: Any
) -> None:
    """Every submit decodes SUBMIT's reply: its two common shapes (a launch, a queued job)
    take a shortcut; any reply decodes to the same record, or the same error, either way."""
    raw = shape([code, where, *rest])
    assert _decoded(replies.submit, raw) == _decoded(replies._submit, raw)


def test_every_guard_code_has_a_name() -> None:
    assert [c.name for c in map(Code, range(-6, 4))] == [
        "STANDBY",
        "REPLAYED",
        "OTHER_MACHINE",
        "REFUSED",
        "MOVED",
        "GONE",
        "NONE",
        "OK",
        "RETRY",
        "NEW_POOL",
    ]
    assert Code.BAD_SLOT is Code.OTHER_MACHINE and Code.RELEASED is Code.REPLAYED
    assert Code.EXISTING is Code.RETRY


# -------------------------------------------------- a worker given a bad reply
@pytest.mark.parametrize(
    ("script", "bad", "attempt"),
    [("CLAIM", "return {1, 'payload'}", 1), ("TAKE", "return {1, 'u', 'one'}", 0)],
)
def test_a_worker_given_a_malformed_reply_exits_with_a_store_error(
    script: str,
    bad: str,
    attempt: int,
    redis_url: str,
    secret: str,
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The real worker entry, in this process, whose script answers in a shape it never has:
    a store error naming the script (exit 5), not an IndexError or ValueError."""
    from balloons.machine.worker import EXIT_STORE, main

    own = new_ulid()
    handoff = f"default.{own}/0"
    # Its slot, so that its heartbeat thread (which starts first) finds it and lets it work.
    r.zadd(PoolKeys(NS, "default").slots, {f"{own}-0": Pool(r).now() + 60})
    if attempt:  # a job of its own to claim
        app = balloons.App(redis_url=redis_url, secret=secret, backend=HoldBackend())
        handoff = (
            f"{balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts).submit(1, 2).id}/1"
        )
        app.close()
    monkeypatch.setattr(lua, script, bad)
    env = {"BALLOONS_JOB": handoff, "BALLOONS_REDIS_URL": redis_url, "BALLOONS_SECRET": secret}
    assert main(env) == EXIT_STORE
    assert f"the {script} script's reply" in capfd.readouterr().err


def test_every_reply_name_reads_from_the_package_as_from_its_family_module() -> None:
    import importlib
    import inspect

    families = replies._FAMILIES
    for family in set(families.values()):
        module = importlib.import_module(f"balloons.store.replies.{family}")
        own = {
            name
            for name, value in vars(module).items()
            if getattr(value, "__module__", None) == module.__name__
            and (not name.startswith("_") or name == "_submit")
            and (inspect.isclass(value) or inspect.isfunction(value))
        }
        assert own == {n for n, f in families.items() if f == family}
        for name in own:
            assert getattr(replies, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no_such_reply"):
        replies.no_such_reply  # type: ignore[attr-defined]  # noqa: B018
