"""Compatibility tags in the scripts, called directly against the real Valkey (as in
``test_scripts.py``): a warm machine takes only jobs of its tag (its signing key and code
version), in order within the tag; placement counts only idle machines of the job's tag and
launches for a job of the submitter's tag; at the cap an idle machine of another tag gives its
slot up; the warm floor follows its key's current version; tags read from Redis are checked."""

from __future__ import annotations

import json
from typing import Any

import redis

from balloons import compat
from balloons.ids import ulid as new_ulid
from balloons.store import lua, replies
from balloons.store.replies import Code
from tests.test_scripts import Pool

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
A = compat.tag(KEY, "A")
B = compat.tag(KEY, "B")  # the same key, another version
K = compat.tag(OTHER_KEY, "A")  # another key, the same version
KEY_ID = compat.key_id(KEY)


def conf_of(tag: str) -> str:
    kid, _, digest = tag.partition(".")
    return f" v:{kid} {digest}"


class Tagged(Pool):
    """A pool whose jobs and machines carry compatibility tags."""

    def submit_as(self, tag: str, priority: int = 0) -> tuple[str, replies.Submitted]:
        u = new_ulid()
        payload = json.dumps({"id": f"{self.pk.pool}.{u}", "ttl": 600})
        conf = self.conf + conf_of(tag)
        args = (u, payload, "{}", "sig", 600, conf, "", priority, 1, 256, "", tag)
        return u, replies.submit(self.run(lua.SUBMIT, *args, jobs=(u,)))

    def take_as(
        self, slot: str, tag: str, machine: str = "m1", mode: str = "take", standby: str = ""
    ) -> Any:
        return replies.take(self.run(lua.TAKE, slot, machine, mode, standby, tag))

    def scale_up(self, tag: str, *fresh: str) -> list[replies.Grant]:
        return replies.scale_up(self.run(lua.SCALE_UP, " ".join(fresh), tag, "", "", self.cap))

    def idle_machine(self, tag: str, machine: str) -> str:
        """A machine of ``tag`` that ran a job on its own slot and now waits for work: its
        slot."""
        u, placed = self.submit_as(tag)
        assert placed.placed == "launch" and placed.grant is not None
        slot = placed.grant.slot
        assert self.claim(u, machine=machine).code is Code.OK
        assert self.finish(u, machine=machine) is Code.OK
        assert self.take_as(slot, tag, machine).code is Code.NONE
        return slot

    def busy_machine(self, tag: str, machine: str) -> tuple[str, str]:
        """A machine of ``tag`` running a job on its own slot: the job and the slot."""
        u, placed = self.submit_as(tag)
        assert placed.placed == "launch" and placed.grant is not None
        assert self.claim(u, machine=machine).code is Code.OK
        return u, placed.grant.slot


def test_a_machine_takes_only_jobs_of_its_tag_in_order_and_notes_another_keys(
    r: redis.Redis,
) -> None:
    p = Tagged(r, cap=1)
    u0, slot = p.busy_machine(A, "m1")
    b1, _ = p.submit_as(B)
    a1, _ = p.submit_as(A)
    k1, _ = p.submit_as(K)
    a2, _ = p.submit_as(A)
    a3, _ = p.submit_as(A, priority=5)
    assert r.zcard(p.pk.queue) == 5
    assert p.finish(u0) is Code.OK
    taken = []
    for _ in range(3):
        took = p.take_as(slot, A)
        assert took.code is Code.OK and took.work is not None
        taken.append(took.work.ulid)
        assert p.finish(took.work.ulid) is Code.OK
    assert taken == [a3, a1, a2]  # priority first, then arrival, among its own tag's jobs
    assert p.take_as(slot, A).code is Code.NONE
    assert r.zrange(p.pk.queue, 0, -1) == [b1.encode(), k1.encode()]
    assert p.status(b1) == p.status(k1) == b"QUEUED"
    # The job of another key says which key's machine left it; another version's does not.
    assert r.hget(p.pk.job(k1), "passed") == A.partition(".")[0].encode()
    assert r.hget(p.pk.job(b1), "passed") is None
    assert r.hget(p.pk.job(b1), "compat") == B.encode()


def test_placement_counts_only_idle_machines_of_the_jobs_tag(r: redis.Redis) -> None:
    p = Tagged(r, cap=3)
    p.idle_machine(A, "m1")
    b1, placed = p.submit_as(B)
    assert placed.placed == "launch" and placed.grant is not None
    assert placed.grant.ulid == b1  # a machine of its own, not the idle one of version A
    assert json.loads(r.hget(p.pk.slot, placed.grant.slot) or b"{}")["compat"] == B
    a1, placed = p.submit_as(A)
    assert placed.placed == "warm"
    assert r.lrange(p.pk.wake_of(A), 0, -1) == [a1.encode()]  # only version A's machines wake
    assert r.llen(p.pk.wake_of(B)) == 0 and r.llen(p.pk.wake) == 0


def test_at_the_cap_an_idle_machine_of_another_tag_gives_its_slot_up(r: redis.Redis) -> None:
    p = Tagged(r, cap=1)
    old = p.idle_machine(A, "m1")
    b1, placed = p.submit_as(B)
    assert placed.placed == "launch" and placed.grant is not None and placed.grant.ulid == b1
    assert r.zrange(p.pk.slots, 0, -1) == [placed.grant.slot.encode()]  # the cap holds
    assert r.llen(p.pk.wake_of(A)) == 1  # the retired machine is woken...
    assert p.take_as(old, A).code is Code.GONE  # ...finds its slot gone, and exits
    # A busy machine of another tag is never retired: the job waits for the cap.
    assert p.claim(b1, machine="m2").code is Code.OK
    _, placed = p.submit_as(A)
    assert placed.placed == "queued" and r.zcard(p.pk.slots) == 1


def test_a_launch_under_the_cap_is_for_the_oldest_job_of_the_submitters_tag(
    r: redis.Redis,
) -> None:
    p = Tagged(r, cap=1)
    p.busy_machine(K, "m1")
    k1, _ = p.submit_as(K)  # another app's job waits for the cap
    r.hset(p.pk.cfg, "cap", 2)
    p.conf = p.conf.replace("cap 1", "cap 2")
    a1, placed = p.submit_as(A)
    # A machine of this app is launched for this app's job, never for the other key's.
    assert placed.placed == "launch" and placed.grant is not None and placed.grant.ulid == a1
    assert r.zrange(p.pk.queue, 0, -1) == [k1.encode()]


def test_scale_up_launches_for_queued_work_of_its_tag_only(r: redis.Redis) -> None:
    p = Tagged(r, cap=1)
    p.busy_machine(A, "m1")
    k1, _ = p.submit_as(K)
    b1, _ = p.submit_as(B)
    a1, _ = p.submit_as(A)
    p.cap = 5  # the supervisor's (signed) cap, raised
    grants = p.scale_up(A)
    assert [g.ulid for g in grants] == [a1]
    assert r.zrange(p.pk.queue, 0, -1) == [k1.encode(), b1.encode()]
    assert [g.ulid for g in p.scale_up(B)] == [b1]


def test_the_warm_floor_follows_its_keys_current_version(r: redis.Redis) -> None:
    p = Tagged(r, cap=1, min=1)
    r.hset(p.pk.cfg, mapping={"cap": 1, "min": 1})  # as a submit of the pool stores them
    f1, f2, f3 = new_ulid(), new_ulid(), new_ulid()
    (g,) = p.scale_up(A, f1)
    assert g.slot == f"{f1}-0"
    assert p.take_as(g.slot, A).code is Code.NONE  # version A's floor machine idles
    assert p.scale_up(A, f2) == []  # the floor is met
    # Version B's supervisor: the idle floor machine of version A gives its slot to one of B.
    (g2,) = p.scale_up(B, f2)
    assert g2.slot == f"{f2}-0" and r.zcard(p.pk.slots) == 1
    assert p.take_as(g.slot, A).code is Code.GONE
    assert r.hget(p.pk.cfg, "v:" + B[:12]) == B[13:].encode()
    assert p.take_as(g2.slot, B, machine="m2").code is Code.NONE
    # Another key's floor never retires this key's machine.
    assert p.scale_up(K, f3) == [] and r.zrange(p.pk.slots, 0, -1) == [g2.slot.encode()]


def test_a_released_machine_of_an_old_version_leaves_the_floor(r: redis.Redis) -> None:
    p = Tagged(r, cap=2, min=1)
    slot = p.idle_machine(A, "m1")
    assert p.take_as(slot, A, mode="release").code is Code.NONE  # kept: the floor, current
    p.submit_as(B)  # a deploy: version B is now its key's current one
    assert p.take_as(slot, A, mode="release").code is Code.RELEASED
    assert slot.encode() not in r.zrange(p.pk.slots, 0, -1)


def test_tags_read_from_redis_are_checked(r: redis.Redis) -> None:
    p = Tagged(r, cap=1)
    u0, slot = p.busy_machine(A, "m1")
    theirs, _ = p.submit_as(K)
    bad, _ = p.submit_as(K)
    r.hset(p.pk.job(bad), "compat", "zz" * 12 + "!")  # 25 characters, not a tag
    assert p.finish(u0) is Code.OK
    # Another key's job is left; a record with no tag is any machine's (which verifies it).
    took = p.take_as(slot, A)
    assert took.code is Code.OK and took.work is not None and took.work.ulid == bad
    assert p.finish(bad) is Code.OK
    assert r.zrange(p.pk.queue, 0, -1) == [theirs.encode()]
    r.delete(p.pk.queue)
    # A machine that gives no tag (or not one) is an untagged machine; a cfg version that is
    # not one only means the machine is not current.
    assert p.take_as(slot, "<script>").code is Code.NONE
    r.hset(p.pk.cfg, "v:" + A[:12], "\x00" * 40)
    r.hset(p.pk.slot, slot, json.dumps({"job": "", "compat": 7, "state": "idle"}))
    assert p.take_as(slot, A, mode="release").code is Code.RELEASED


def test_a_launch_starts_only_a_stopped_machine_of_the_slots_tag(r: redis.Redis) -> None:
    p = Tagged(r, cap=2, standby=2)
    r.hset(p.pk.cfg, mapping={"cap": 2, "standby": 2, "min": 1})
    (g,) = p.scale_up(A, new_ulid())  # a floor machine of version A, which then stops
    r.hset(p.pk.cfg, "min", 0)
    assert p.take_as(g.slot, A, "0123456789abcd", "release", "1").code is Code.STANDBY
    assert json.loads(r.hget(p.pk.standby, "0123456789abcd") or b"{}")["compat"] == A
    _, placed = p.submit_as(B)
    assert placed.grant is not None
    picked = replies.pick_machine(p.run(lua.PICK_MACHINE, placed.grant.slot, new_ulid()))
    assert picked is not None and not picked.start  # version A's stopped machine stays stopped
    _, placed = p.submit_as(A)
    assert placed.grant is not None
    picked = replies.pick_machine(p.run(lua.PICK_MACHINE, placed.grant.slot, new_ulid()))
    assert picked is not None and picked.start and picked.machine == "0123456789abcd"


def test_a_tag_of_no_known_version_matches_every_version_of_its_key_only(
    r: redis.Redis,
) -> None:
    anyv = compat.tag(KEY, "")  # a supervisor, a machine or a resubmit that knows no version
    assert anyv.endswith("." + compat.ANY_VERSION)
    p = Tagged(r, cap=1, min=1)
    u0, slot = p.busy_machine(anyv, "m1")
    k1, _ = p.submit_as(K)
    b1, _ = p.submit_as(B)
    assert p.finish(u0) is Code.OK
    took = p.take_as(slot, anyv)
    assert took.code is Code.OK and took.work is not None and took.work.ulid == b1
    assert p.finish(b1) is Code.OK
    assert r.hget(p.pk.cfg, "v:" + KEY_ID) == B[13:].encode()  # not replaced by "any"
    assert p.scale_up(anyv) == [] and r.hget(p.pk.cfg, "v:" + KEY_ID) == B[13:].encode()
    assert p.take_as(slot, anyv, mode="release").code is Code.NONE  # it keeps the floor
    assert r.zrange(p.pk.queue, 0, -1) == [k1.encode()]
