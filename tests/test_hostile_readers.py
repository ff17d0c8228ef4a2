"""Property-based: whatever the records in Redis hold, every reader survives them.

Each example writes arbitrary values (wrong types, unknown statuses, NaN, huge numbers, bytes
that are not UTF-8, deep nesting, markup and terminal escapes) into every kind of record a pool
has: a job's hash, its attempts, its log stream, the pool's slot entries, settings, usage and
standby machines, and machine records. Then it runs every reader over them: the library
handles, the command line (click's runner), the dashboard's pages, live streams and
``/metrics`` (a real server), one supervisor pass, and the orphan sweep (``balloons gc``). A
reader may refuse with a :class:`~balloons.BalloonsError` (``JobFailed``, ``ResultTimeout``,
...); it never fails otherwise, never answers 500, and never lets a control character out.

Machines are never touched: the app's backend reads the local backend's machine records, but
launches, stops and destroys nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import balloons
from balloons import BalloonsError
from balloons.backends.local import LocalBackend
from balloons.cli import main as cli
from balloons.dashboard import create_app
from balloons.info import MachineInfo, MachineSpec
from balloons.listing import Filters, find_jobs, pool_summaries
from balloons.store.keys import JobKeys, PoolKeys, gc_lock_key, machine_key, machines_key, pools_key
from balloons.untrusted import integer
from tests.dashboard.conftest import ServerThread

pytestmark = pytest.mark.slow

#: Examples per run: CI runs them all; about 25 s on two shared cores (a minute at most).
EXAMPLES = 40
TOKEN = "hostile-readers-token-" + "z" * 16
ULID = "01jd3x9k2m8vq4t7w0c5r6y1zh"
JOB = f"default.{ULID}"
MACHINE = "0123456789abcd"
NOW = time.time()

# ------------------------------------------------------------------------- the values


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as JavaScript writes them


def _repr_bytes(value: float) -> bytes:
    return repr(value).encode()


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


class Big(bytes):
    """A large value, shown short in a failing example's report."""

    def __repr__(self) -> str:
        return f"Big({len(self):,} bytes: {bytes(self[:16])!r}...)"


SPECIAL = [
    b"", b"0", b"1", b"-1", b"nan", b"NaN", b"inf", b"-inf", b"1e400", b"1e308", Big(b"9" * 5000),
    b"\xff\xfe", b"\xc3(", b"PWNED", b"QUEUED", b"RUNNING", b"SUCCEEDED", b"FAILED",
    b"INVALID", b"copying [/data] to [bold]", b"[link=http://evil.test]x[/link]",
    b"\x1b[2J\x1b]52;c;aGk=\x07\x9b\xe2\x80\xae", b"{}", b"[]", b"null", b"true", b'"x"',
    Big(b"[" * 100_000), Big(b'{"a":' * 20_000 + b"1" + b"}" * 20_000), b"[1e400, NaN, -Infinity]",
]  # fmt: skip
#: Text with what a terminal or a page must never receive raw.
TEXT = st.text(
    alphabet=st.sampled_from("ab[]/=:\\<>&\"' \n\t\r\x00\x07\x1b\x7f\x85\x9b\u202e\u2028é"),
    max_size=24,
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from([10**400, -(10**30), 1e308])
    | TEXT,
    _containers,
    max_leaves=8,
)
VALUE = st.one_of(
    st.sampled_from(SPECIAL),
    st.binary(max_size=24),
    TEXT.map(str.encode),
    JSON.map(_json_bytes),
    st.floats().map(_repr_bytes),
)


def _small(value: bytes) -> bool:
    """A pool setting that asks for a few machines at most: the property is about content,
    not about a record asking for a warm floor of ten thousand machines (which it may)."""
    n = integer(value, 0, 10**9)
    return n is None or n <= 3


def _object(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A JSON object with some of ``fields``, each any JSON value or the strategy given."""
    return st.fixed_dictionaries(
        {}, optional={k: st.one_of(JSON, v) for k, v in fields.items()}
    ).map(_json_bytes)


RECORD = st.one_of(VALUE, st.none())  # None: the field is not there
STATUS = st.one_of(
    st.sampled_from([s.value.encode() for s in balloons.JobStatus]), VALUE, st.none()
)
PAYLOAD = st.one_of(
    VALUE,
    _object(
        {
            "task": st.just("tests.tasks:add"),
            "ser": st.sampled_from(["json", "pickle", "yaml"]),
            "cpus": st.integers(0, 20),
            "memory_mb": st.integers(0, 10**6),
            "timeout": st.floats(),
            "max_cost": st.floats(),
        }
    ),
)
ERROR = st.one_of(VALUE, _object({"type": TEXT, "message": TEXT, "traceback": TEXT}))
ATTEMPT = st.one_of(
    VALUE,
    _object(
        {
            "n": st.integers(0, 3),
            "machine": st.just(MACHINE),
            "launched": st.floats(),
            "started": st.floats(),
            "ended": st.floats(),
            "outcome": st.sampled_from(["SUCCEEDED", "FAILED", "PWNED"]),
            "reason": TEXT,
            "message": TEXT,
            "note": TEXT,
            "cpus": st.integers(-1, 100),
            "mem": st.integers(-1, 10**7),
        }
    ),
)
SLOT = st.one_of(
    VALUE,
    _object(
        {
            "job": st.sampled_from([ULID, "", "x"]),
            "attempt": st.integers(0, 2),
            "machine": st.sampled_from([MACHINE, "", "../x"]),
            "state": st.sampled_from(["starting", "running", "idle", "PWNED"]),
            "since": st.floats(),
            "deadline": st.floats(),
            "cancel": st.floats(),
            "cpus": st.integers(0, 20),
            "mem": st.integers(0, 10**6),
        }
    ),
)
JOB_FIELDS = {
    "payload": PAYLOAD,
    "args": VALUE,
    "sig": VALUE,
    "attempt": VALUE,
    "machine": VALUE,
    "created": VALUE,
    "started": VALUE,
    "finished": VALUE,
    "result": VALUE,
    "error": ERROR,
    "reason": VALUE,
    "due": VALUE,
    "progress": VALUE,
    "note": VALUE,
    "slot": st.one_of(st.just(f"{ULID}-1".encode()), VALUE),
    "need": VALUE,
}
CFG_FIELDS = ("cap", "min", "idle", "boot", "hb", "cpus", "mem", "standby", "conf")
MACHINE_FIELDS = ("state", "pool", "job", "attempt", "created", "exited", "exit_code", "signal")
MACHINE_FIELDS += ("requested_stop", "oom", "slot", "memory_mb", "cpus")
LEASE = st.sampled_from([0.0, 1.0, NOW - 60, NOW + 600, 1e12, float("inf"), float("-inf")])
SLOT_NAMES = st.sampled_from([f"{ULID}-1", f"{ULID}-0", "01jd3x9k2m8vq4t7w0c5r6y1zj-0", "x"])
KEYS = st.one_of(st.sampled_from([b"1", b"2", b"0", b"x", b"9" * 30]), st.binary(max_size=6))

#: Fields of a pool's stats hash: as the scripts write them, and near misses.
STAT_FIELDS = [
    "run:3:tests.tasks:add", "run:s:tests.tasks:add", "run:99:t", "run:0:t", "queue:x:t",
    "n:FAILED:task_error:t", "n:PWNED:x:t", "n:SUCCEEDED::bad task", "retry:oom:t", "retry:x:t",
    "ms:1:256:t", "ms:0:0:t", "ms:x:y:t", "ts:t", "ts:", "e2e:17:t", "boot:1", "n:",
]  # fmt: skip
RECORDS = st.fixed_dictionaries(
    {
        "job": st.fixed_dictionaries({"status": STATUS}, optional=JOB_FIELDS),
        "attempts": st.dictionaries(KEYS, ATTEMPT, max_size=3),
        "logs": st.lists(
            st.fixed_dictionaries({}, optional=dict.fromkeys(("t", "a", "s", "m"), VALUE)),
            max_size=3,
        ),
        "slots": st.dictionaries(SLOT_NAMES, st.tuples(LEASE, SLOT), max_size=3),
        "cfg": st.fixed_dictionaries({}, optional=dict.fromkeys(CFG_FIELDS, VALUE.filter(_small))),
        "usage": st.dictionaries(
            st.one_of(st.sampled_from(["idle:1:256", "idle:12:256", "idle:x:y", "idle:99999:1"]),
                      TEXT), VALUE, max_size=3),
        "stats": st.dictionaries(
            st.one_of(st.sampled_from(STAT_FIELDS), TEXT), VALUE, max_size=4
        ),
        "spend": st.dictionaries(
            st.one_of(st.sampled_from(["1:256:7", "1:256:7:h", "2:512:167", "0:1:1:h"]), TEXT),
            VALUE,
            max_size=4,
        ),
        "standby": st.dictionaries(
            st.sampled_from([MACHINE, "fedcba98765432", "x"]),
            st.one_of(VALUE, _object({"since": st.floats(), "slot": TEXT})),
            max_size=2,
        ),
        "machines": st.dictionaries(
            st.one_of(st.sampled_from([MACHINE, "fedcba98765432"]), TEXT),
            st.fixed_dictionaries(
                {}, optional={**dict.fromkeys(MACHINE_FIELDS, VALUE), "pool": VALUE}
            ),
            max_size=2,
        ),
    }
)  # fmt: skip

# --------------------------------------------------------------------- the readers


class ReadOnlyBackend(LocalBackend):
    """The local backend's readers (``list``, ``inspect``: machine records in Redis); its
    launches, stops and destroys are only noted."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def launch(self, spec: MachineSpec) -> MachineInfo:
        self.calls.append(("launch", spec.name))
        return MachineInfo(id=MACHINE, backend="local", state="created", job_id=spec.job_id)

    def stop(self, machine_id: str, grace: float = 10.0) -> None:
        self.calls.append(("stop", machine_id))

    def destroy(self, machine_id: str) -> None:
        self.calls.append(("destroy", machine_id))


class Rig:
    def __init__(self, r: redis.Redis, web: httpx.Client) -> None:
        self.r, self.web = r, web
        self.app = balloons.App(backend=ReadOnlyBackend())
        self.pk = PoolKeys("balloons", "default")
        self.jk = JobKeys.of("balloons", JOB)

    def write(self, rec: dict[str, Any]) -> None:
        r, pk, jk = self.r, self.pk, self.jk
        r.flushall()
        r.sadd(pools_key("balloons"), "default", b"\xff", "Not A Pool")
        r.zadd(pk.jobs, {ULID: NOW, "not-a-ulid": NOW, b"\xff": NOW})
        job = {k: v for k, v in rec["job"].items() if v is not None}
        if job:
            r.hset(jk.job, mapping=job)
        if rec["attempts"]:
            r.hset(jk.attempts, mapping=rec["attempts"])
        for entry in rec["logs"]:
            r.xadd(jk.logs, entry or {"x": b""})
        for slot, (lease, entry) in rec["slots"].items():
            r.zadd(pk.slots, {slot: lease})
            r.hset(pk.slot, slot, entry)
        for name, mapping in (
            ("cfg", pk.cfg), ("usage", pk.usage), ("standby", pk.standby), ("stats", pk.stats),
            ("spend", pk.spend),
        ):  # fmt: skip
            if rec[name]:
                r.hset(mapping, mapping=rec[name])
        for mid, fields in rec["machines"].items():
            r.zadd(machines_key("balloons"), {mid: NOW})
            if fields:
                r.hset(machine_key("balloons", mid), mapping=fields)

    def library(self) -> None:
        app, job = self.app, self.app.job(JOB)
        calls = [
            app.jobs,
            lambda: app.jobs(pool="default"),
            job.status,
            job.info,
            job.progress,
            job.logs,
            lambda: job.logs(tail=2),
            job.cost,
            job.queue_position,
            lambda: job.result(timeout=0),
            lambda: asyncio.run(self.result_async(job)),
            app.costs,
            lambda: find_jobs(app.store, Filters()),
            lambda: find_jobs(app.store, Filters(status=balloons.JobStatus.INVALID)),
            lambda: pool_summaries(app.store),
            lambda: app.store.pool_stats("default"),
            lambda: app.store.slots(self.pk),
            lambda: app.store.standby(self.pk),
            app.backend.list,
            lambda: app.backend.inspect(MACHINE),
        ]
        for call in calls:
            try:
                call()
            except BalloonsError:
                pass
        try:
            ended = job.status().terminal
        except BalloonsError:
            ended = False
        if ended:  # following the log ends once the job has
            for _ in job.stream_logs():
                pass

    async def result_async(self, job: balloons.Job[Any]) -> None:
        try:
            await job.result_async(timeout=0)
        finally:
            await self.app.store.aclose()  # this loop's client, before the loop ends

    def command_line(self) -> None:
        runner = CliRunner()
        for args in (
            ["jobs"], ["jobs", "--json"], ["jobs", "--status", "invalid"],
            ["status", JOB], ["status", JOB, "--json"],
            ["logs", JOB], ["logs", JOB, "--json"], ["logs", JOB, "--tail", "2"],
            ["result", JOB, "--timeout", "0"], ["wait", JOB, "--timeout", "0"],
            ["pools"], ["pools", "--json"], ["machines", "--all"], ["machines", "--all", "--json"],
            ["cost"], ["cost", "--json"], ["gc", "--dry-run", "--min-age", "0"],
        ):  # fmt: skip
            out = runner.invoke(cli, args)
            assert out.exception is None or isinstance(out.exception, SystemExit), (
                args,
                out.exception,
            )
            # A BalloonsError said in a line, with its code: 1 the job failed (or its result does
            # not decode), 3 a --timeout ran out, 4 no such job.
            assert out.exit_code in (0, 1, 3, 4), (args, out.output)
            assert "\x1b" not in out.output and "\x07" not in out.output, (args, out.output)

    def dashboard(self) -> None:
        for path in (
            "/jobs",
            "/jobs?status=INVALID",
            "/jobs?q=x",
            "/pools",
            "/cost",
            "/charts",
            "/metrics",
        ):
            page = self.web.get(path)
            assert page.status_code == 200, (path, page.text[:2000])
            assert "\x1b" not in page.text, path
        page = self.web.get(f"/jobs/{JOB}")
        assert page.status_code in (200, 404), page.text[:2000]
        assert "\x1b" not in page.text
        for path in ("/jobs/live", "/pools/live", f"/jobs/{JOB}/live"):
            with self.web.stream("GET", path) as resp:
                assert resp.status_code == 200, path
                first = next(line for line in resp.iter_lines() if line.startswith("event:"))
                assert first in ("event: update", "event: end"), (path, first)

    def supervisor(self) -> None:
        sup = self.app.supervisor(orphan_min_age=0, boot_probe=0)
        report = sup.step(gc=True)
        assert report.errors == [], report.errors
        self.r.delete(gc_lock_key("balloons"))  # the step's sweep holds the turn for a while
        sup.collect_orphans(dry_run=True, standby=True)
        assert isinstance(sup.collect_orphans(standby=True), list)


@pytest.fixture(scope="module")
def web() -> Iterator[httpx.Client]:
    served = ServerThread(create_app(balloons.App(backend=ReadOnlyBackend()), token=TOKEN))
    served.start()
    headers = {"authorization": f"Bearer {TOKEN}"}
    url = f"http://127.0.0.1:{served.port}"
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        yield client
    served.stop()


@pytest.fixture
def rig(r: redis.Redis, web: httpx.Client) -> Iterator[Rig]:
    yield Rig(r, web)
    r.flushall()


def _record(**job: bytes) -> dict[str, Any]:
    empty: dict[str, Any] = {"attempts": {}, "logs": [], "slots": {}, "cfg": {}, "usage": {}}
    return {**empty, "standby": {}, "machines": {}, "stats": {}, "spend": {}, "job": job}


# Its time grows with the machine's load (every reader runs per example: 34-114 s for one run
# beside two busy loops, where it takes about 25 s alone), so the suite's 120 s per test would
# end it on a busy host: a limit of its own.
@pytest.mark.timeout(600)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(rec=_record(status=b"PWNED"))
@example(rec=_record(status=b"SUCCEEDED", result=Big(b"[" * 100_000), payload=b"[]"))
@example(rec=_record(status=b"RUNNING", progress=b"nan", note=b"[/data] \x1b[2J", created=b"1e400"))
@example(rec={**_record(status=b"FAILED"), "usage": {"idle:12:256": b"30", "idle:x:y": b"nan"}})
@example(rec={**_record(status=b"RUNNING"), "stats": {"run:3:t": b"1e400", "ms:1:256:t": b"x"}})
@example(rec={**_record(status=b"RUNNING"), "spend": {"1:256:7": b"1e400", "1:256:7:h": b"-1"}})
@example(
    rec={**_record(status=b"RUNNING"), "slots": {f"{ULID}-1": (NOW + 600, Big(b"[" * 100_000))}}
)
@given(rec=RECORDS)
def test_every_reader_survives_any_record(rig: Rig, rec: dict[str, Any]) -> None:
    rig.write(rec)
    rig.library()
    rig.command_line()
    rig.dashboard()
    rig.supervisor()
