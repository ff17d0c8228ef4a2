"""Property-based: random, truncated and altered job records, slot entries and handoff values
never crash the worker without a recorded failure, and never run a task they were not signed
for.

The real worker entry (``balloons.machine.worker.main(env)``) runs in this process against the
suite's Valkey; each example submits a fresh job (to a backend that launches nothing), alters
what a machine would read, runs the worker, and checks what it did and what the record says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import balloons
from balloons import JobStatus
from balloons.machine.worker import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_SKIPPED,
    EXIT_STORE,
    EXIT_TASK_FAILED,
    EXIT_USAGE,
    main,
)
from balloons.signing import sign
from balloons.store.keys import PoolKeys
from tests import tasks
from tests.test_worker import HoldBackend, job_key

# Property tests: hundreds of records each.
pytestmark = pytest.mark.slow

EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SLOT_FIELDS = ("job", "attempt", "machine", "cpus", "mem", "state", "deadline", "cancel")
REFUSED = {"signature_invalid", "record_invalid", "task_not_found", "serialization"}


class Rig:
    """A fresh job per example and the worker of its machine, run in this process."""

    def __init__(self, redis_url: str, secret: str, r: redis.Redis, tmp: Path) -> None:
        self.redis_url, self.secret, self.r, self.tmp = redis_url, secret, r, tmp
        self.runs = 0

    def submit(self, task: balloons.Task[Any, Any], *args: Any) -> tuple[balloons.Job[Any], str]:
        self.r.flushall()
        backend = HoldBackend()
        app = balloons.App(redis_url=self.redis_url, secret=self.secret, backend=backend)
        app.pool("default", idle_timeout=0, heartbeat=0.2)
        job = balloons.Task(app, task.fn, task.name, task.opts).submit(*args)
        (spec,) = backend.specs
        return job, spec.env["BALLOONS_JOB"]

    def marker(self) -> Path:
        self.runs += 1
        return self.tmp / f"ran-{self.runs}"

    def work(self, handoff: str) -> int:
        env = {
            "BALLOONS_JOB": handoff,
            "BALLOONS_REDIS_URL": self.redis_url,
            "BALLOONS_SECRET": self.secret,
            "BALLOONS_MACHINE_ID": "abcdefabcdef01",
        }
        return main(env)  # raises if the worker crashes: the property fails


@pytest.fixture
def rig(redis_url: str, secret: str, r: redis.Redis, tmp_path: Path) -> Iterator[Rig]:
    yield Rig(redis_url, secret, r, tmp_path)
    r.flushall()


def _mutate(value: bytes, how: tuple[Any, ...]) -> bytes | None:
    """``None``: the field is deleted."""
    kind = how[0]
    if kind == "truncate":
        return value[: how[1] % (len(value) + 1)]
    if kind == "flip":
        if not value:
            return bytes([how[2]])
        i = how[1] % len(value)
        return value[:i] + bytes([value[i] ^ how[2]]) + value[i + 1 :]
    if kind == "insert":
        i = how[1] % (len(value) + 1)
        return value[:i] + how[2] + value[i:]
    if kind == "replace":
        return bytes(how[1])
    return None


MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 4096)),
    st.tuples(st.just("flip"), st.integers(0, 4096), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 4096), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("replace"), st.binary(max_size=256)),
    st.tuples(st.just("delete")),
)


@FUZZ
@example(changes=[("sig", ("flip", 0, 128))])  # a non-ASCII signature byte
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(["payload", "args", "sig"]), MUTATION), min_size=1, max_size=3
    )
)
def test_altered_records_are_refused_and_never_run(rig: Rig, changes: list[Any]) -> None:
    marker = rig.marker()
    job, handoff = rig.submit(tasks.touch, str(marker))
    key = job_key(job.id)
    original = {f: rig.r.hget(key, f) or b"" for f in ("payload", "args", "sig")}
    fields: dict[str, bytes | None] = dict(original)
    for field, how in changes:
        fields[field] = _mutate(fields[field] or b"", how)
    assume(any((fields[f] or b"") != original[f] for f in original))
    for field, value in fields.items():
        if value is None:
            rig.r.hdel(key, field)
        else:
            rig.r.hset(key, field, value)
    assert rig.work(handoff) == EXIT_REFUSED
    assert not marker.exists()
    info = job.info()
    assert info.status is JobStatus.FAILED
    assert info.reason == "signature_invalid"
    assert "task was not run" in (info.error_message or "")


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


# Named functions, not lambdas, in strategies: to describe a lambda, hypothesis parses its
# source with ``ast``, which on CPython 3.11.7 can fail with "AST constructor recursion depth
# mismatch" when it happens deep in a recursive draw (a flaky error of the test, not of balloons).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _containers,
    max_leaves=12,
)
HOSTILE_FIELDS = {
    "task": st.one_of(
        st.sampled_from(["tests.tasks:add", "os:system", "tests.tasks:__class__", "..:x", ""]),
        st.text(max_size=30),
        JSON,
    ),
    "ser": st.one_of(st.sampled_from(["json", "pickle", "yaml", ""]), JSON),
    "timeout": st.one_of(
        st.sampled_from([0, -1, 1e308, float("inf"), float("nan"), "inf", "1e400", "x"]), JSON
    ),
    "main": st.one_of(st.none(), st.text(max_size=30), JSON),
    "retries": st.one_of(st.integers(-5, 5), JSON),
    "backoff": JSON,
    "mem_factor": JSON,
    "memory_mb": JSON,
}


@FUZZ
@example(changes={"timeout": 1e308}, args=None)
@example(changes={"timeout": float("inf")}, args=None)
@example(changes={"timeout": float("nan"), "ser": "yaml"}, args=None)
@example(changes={"task": ["x"], "main": 5}, args=b"\xff")
@example(changes={"retries": ["x"], "backoff": "y"}, args=b'{"args":[1,"x"],"kwargs":{}}')
@example(changes={"retries": 2, "backoff": {}}, args=b'{"args":[1,"x"],"kwargs":{}}')
@example(changes={"retries": 1e400, "mem_factor": "z"}, args=b'{"args":[1,"x"],"kwargs":{}}')
@given(
    changes=st.fixed_dictionaries({}, optional=HOSTILE_FIELDS),
    args=st.one_of(
        st.none(),
        st.just(b'{"args":[1,"x"],"kwargs":{}}'),  # the task raises: the retry policy is read
        st.binary(max_size=64),
        JSON.map(_json_bytes),
    ),
)
def test_signed_but_malformed_records_always_end_with_a_reason(
    rig: Rig, changes: dict[str, Any], args: bytes | None
) -> None:
    """Forged with the real key (an insider): whatever the payload says, the worker never
    crashes; the attempt ends with a record: succeeded, failed with a reason and a message,
    or failed and retried as the payload's policy says."""
    job, handoff = rig.submit(tasks.add, 1, 2)
    key = job_key(job.id)
    spec = json.loads(rig.r.hget(key, "payload"))
    spec.update(changes)
    payload = json.dumps(spec).encode()
    data = rig.r.hget(key, "args") if args is None else args
    rig.r.hset(
        key,
        mapping={"payload": payload, "args": data, "sig": sign(rig.secret.encode(), payload, data)},
    )
    code = rig.work(handoff)
    info = job.info()
    if not info.status.terminal:  # the task failed and the (forged) policy retries it
        assert code == EXIT_TASK_FAILED and info.status is JobStatus.QUEUED, (code, info)
        assert info.attempts[0].outcome == "FAILED" and info.attempts[0].reason == "task_error"
    elif info.status is JobStatus.SUCCEEDED:
        assert code == EXIT_OK
    else:
        assert code in (EXIT_REFUSED, EXIT_TASK_FAILED)
        assert info.reason and info.error_message
        if code == EXIT_REFUSED:
            assert info.reason in REFUSED


@FUZZ
@example(entry=b"")
@example(entry=b'{"job": {}}')
@example(entry=b"[1, 2]")
@example(entry=b'{"":Infinity}')  # decodes, but cannot be written back
@given(
    entry=st.one_of(
        st.binary(max_size=64),
        JSON.map(_json_bytes),
        st.fixed_dictionaries(
            {},
            optional=dict.fromkeys(SLOT_FIELDS, JSON),
        ).map(_json_bytes),
    )
)
def test_a_garbled_slot_entry_never_crashes_the_worker(rig: Rig, entry: bytes) -> None:
    marker = rig.marker()
    job, handoff = rig.submit(tasks.touch, str(marker))
    pk = PoolKeys("balloons", "default")
    slot = handoff.rpartition(".")[2].replace("/", "-")
    assert rig.r.hexists(pk.slot, slot)
    rig.r.hset(pk.slot, slot, entry)
    code = rig.work(handoff)
    info = job.info()
    if code == EXIT_OK:  # the entry was readable: the job's own record is genuine, it ran
        assert info.status is JobStatus.SUCCEEDED and marker.exists()
    else:
        assert code == EXIT_REFUSED, code
        assert not marker.exists()
        assert info.status is JobStatus.FAILED and info.reason == "record_invalid"
        assert "slot" in (info.error_message or "")


@FUZZ
@example(value="default.01jd3x9k2m8vq4t7w0c5r6y1zh/\u00b2")  # a digit int() refuses
@given(
    value=st.one_of(
        st.text(max_size=60),
        st.from_regex(r"\A[a-z0-9_-]{1,12}\.[0-9a-z]{26}/[0-9²³¹٣]{1,4}\Z"),
        st.tuples(
            st.sampled_from(["", "other", "default", "{x}", "a.b"]),
            st.sampled_from(["/0", "/2", "/-1", "/1/1", "/", "/٣", "/1 "]),
        ),
    )
)
def test_hostile_handoff_values_never_crash_or_run_anything(
    rig: Rig, value: str | tuple[str, str]
) -> None:
    marker = rig.marker()
    job, handoff = rig.submit(tasks.touch, str(marker))
    if isinstance(value, tuple):  # the real job, named with another pool or attempt
        pool, attempt = value
        ulid = handoff.split(".")[1].split("/")[0]
        value = f"{pool}.{ulid}{attempt}" if pool else f"{ulid}{attempt}"
    assume(value != handoff and "\0" not in value)
    code = rig.work(value)
    assert code in (EXIT_USAGE, EXIT_SKIPPED, EXIT_STORE), code
    assert not marker.exists()
    assert job.status() is JobStatus.STARTING  # untouched


@pytest.mark.parametrize("entry", [b"{not json", b'{"job": 7}', b"[]" + b"x"])
def test_a_lapsed_slot_with_a_garbled_entry_is_reclaimed_and_its_job_ends(
    rig: Rig, entry: bytes
) -> None:
    """The machine never ran (so never refused the entry): the supervisor still frees the
    slot and ends the job's attempt, named by the slot itself."""
    job, handoff = rig.submit(tasks.add, 1, 2)
    pk = PoolKeys("balloons", "default")
    slot = handoff.rpartition(".")[2].replace("/", "-")
    rig.r.hset(pk.slot, slot, entry)
    rig.r.zadd(pk.slots, {slot: 1.0})  # its boot lease ran out long ago
    app = balloons.App(redis_url=rig.redis_url, secret=rig.secret, backend=HoldBackend())
    report = app.supervisor().step(gc=False)
    assert report.errors == []
    assert [s for s, _ in report.reclaimed] == [slot]
    assert rig.r.zscore(pk.slots, slot) is None and not rig.r.hexists(pk.slot, slot)
    info = job.info()
    assert info.status is JobStatus.FAILED and info.reason == "boot_timeout"


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e308])
def test_a_task_timeout_out_of_range_is_refused_at_registration(timeout: float) -> None:
    app = balloons.App(backend=HoldBackend())
    with pytest.raises(balloons.ConfigError, match="timeout must be a positive number"):
        app.task(timeout=timeout)(tasks.add.fn)
