"""What a Redis writer without the app's secret cannot do: make a reader decode, or show as the
task's, a result, an error or progress it wrote; or make a worker run an attempt again (a
finished job's record put back to run: a replay).

As in ``tests/test_hostile_records.py``, the real worker entry (``balloons.machine.worker.main``) runs
in this process against the suite's Valkey, for machines of a backend that launches nothing;
the replays of retried jobs go through the suite's real local machines.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import balloons
from balloons import JobFailed, JobStatus, SerializationError
from balloons.cli import main as cli
from balloons.ids import ulid as new_ulid
from balloons.machine.worker import EXIT_OK, main
from balloons.signing import sign, sign_outcome
from balloons.store.keys import JobKeys, PoolKeys
from balloons.store.writes import INVALID_MESSAGE, INVALID_PROGRESS
from tests import tasks
from tests.test_worker import HoldBackend

MACHINE = "abcdefabcdef01"
PK = PoolKeys("balloons", "default")


class Held:
    """One app whose machines are started by hand: the test runs the real worker for each
    launch, after altering Redis as a writer without the secret could."""

    def __init__(self, redis_url: str, secret: str, r: redis.Redis, tmp: Path) -> None:
        self.redis_url, self.secret, self.r, self.tmp = redis_url, secret, r, tmp
        self.backend = HoldBackend()
        self.app = balloons.App(redis_url=redis_url, secret=secret, backend=self.backend)
        self.app.pool("default", idle_timeout=0, heartbeat=0.2)
        self.seen = 0

    def submit(self, task: balloons.Task[Any, Any], *args: Any) -> balloons.Job[Any]:
        return balloons.Task(self.app, task.fn, task.name, task.opts).submit(*args)

    def launched(self) -> list[str]:
        """The handoffs of the machines launched since the last call."""
        specs, self.seen = self.backend.specs[self.seen :], len(self.backend.specs)
        return [s.env["BALLOONS_JOB"] for s in specs]

    def work(self, handoff: str) -> int:
        env = {
            "BALLOONS_JOB": handoff,
            "BALLOONS_REDIS_URL": self.redis_url,
            "BALLOONS_SECRET": self.secret,
            "BALLOONS_MACHINE_ID": MACHINE,
        }
        return main(env)

    def run(self, task: balloons.Task[Any, Any], *args: Any) -> balloons.Job[Any]:
        """Submit a job and run its machine: the job has ended."""
        job = self.submit(task, *args)
        (handoff,) = self.launched()
        self.work(handoff)
        assert job.status().terminal
        return job


@pytest.fixture
def held(redis_url: str, secret: str, r: redis.Redis, tmp_path: Path) -> Iterator[Held]:
    yield Held(redis_url, secret, r, tmp_path)
    r.flushall()


def key(job: balloons.Job[Any]) -> JobKeys:
    return JobKeys.of("balloons", job.id)


def runs(path: Path) -> int:
    """How many times a ``tasks.count`` job ran."""
    return int(path.read_text()) if path.exists() else 0


class _Boom:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def plant_pickle(r: redis.Redis, job: balloons.Job[Any], marker: Path) -> None:
    """The record says its serializer is pickle, and its result is a pickle that runs code."""
    jk = key(job)
    spec = json.loads(r.hget(jk.job, "payload"))  # type: ignore[arg-type]
    spec["ser"] = "pickle"
    r.hset(jk.job, mapping={"payload": json.dumps(spec), "result": pickle.dumps(_Boom(marker))})


# ------------------------------------------------------------------------------- results
@pytest.mark.parametrize("reader", ["result", "result_async", "cli result", "cli wait"])
def test_a_pickle_planted_as_the_result_is_never_decoded(held: Held, reader: str) -> None:
    marker = held.tmp / "code-ran"
    job = held.run(tasks.add, 1, 2)
    plant_pickle(held.r, job, marker)
    if reader.startswith("cli"):
        out = CliRunner().invoke(cli, [reader.split()[1], job.id, "--timeout", "5"])
        assert out.exit_code == 1, out.output
        said = " ".join(out.output.split())  # rich wraps long lines
        assert "result_invalid" in said and "does not verify" in said
    else:

        async def read_async() -> Any:
            try:
                return await job.result_async(timeout=5)
            finally:
                await job.app.store.aclose()

        with pytest.raises(JobFailed) as failed:
            job.result(timeout=5) if reader == "result" else asyncio.run(read_async())
        assert failed.value.reason == "result_invalid"
        assert "was not decoded" in failed.value.error_message
    assert not marker.exists()


@pytest.mark.parametrize("how", ["flipped", "no tag", "another job", "another attempt"])
def test_a_result_altered_or_copied_is_refused(held: Held, how: str) -> None:
    job = held.run(tasks.add, 1, 2)
    other = held.run(tasks.add, 2, 2)
    assert job.result(timeout=5) == 3 and other.result(timeout=5) == 4
    jk = key(job)
    if how == "flipped":
        held.r.hset(jk.job, "result", b"4")
    elif how == "no tag":
        held.r.hdel(jk.job, "rsig")
    elif how == "another job":
        result, tag = held.r.hmget(key(other).job, ["result", "rsig"])
        held.r.hset(jk.job, mapping={"result": result, "rsig": tag})  # type: ignore[dict-item]
    else:  # the record says another attempt succeeded than the one the result was tagged for
        held.r.hset(jk.job, "attempt", 2)
    with pytest.raises(JobFailed) as failed:
        job.result(timeout=5)
    assert failed.value.reason == "result_invalid"


def test_a_result_tagged_for_pickle_is_not_decoded_by_a_json_app(held: Held) -> None:
    """Even tagged with the secret (an insider's record), a result encoded with another
    serializer than the reading app's is not decoded: the record never chooses the decoder."""
    marker = held.tmp / "code-ran"
    job = held.run(tasks.add, 1, 2)
    data = pickle.dumps(_Boom(marker))
    tag = sign_outcome(held.secret.encode(), "result/pickle", job.id, 1, data)
    held.r.hset(key(job).job, mapping={"result": data, "rsig": tag})
    with pytest.raises(SerializationError, match="encoded with the pickle serializer"):
        job.result(timeout=5)
    assert not marker.exists()


# -------------------------------------------------------------------- errors, progress
def test_an_altered_error_is_shown_as_invalid_never_as_the_tasks(held: Held) -> None:
    job = held.run(tasks.fail, "the real message")
    jk = key(job)
    info = job.info()
    assert info.reason == "task_error" and info.error_message == "the real message"
    assert info.attempts[0].message == "the real message"
    error = json.loads(held.r.hget(jk.job, "error"))  # type: ignore[arg-type]
    error.update(message="FORGED error", traceback="FORGED traceback")
    held.r.hset(jk.job, "error", json.dumps(error))
    held.r.hset(jk.attempts, "1", json.dumps({"n": 1, "outcome": "FAILED", "message": "FORGED"}))
    with pytest.raises(JobFailed) as failed:
        job.result(timeout=5)
    assert failed.value.reason == "result_invalid"
    assert "FORGED" not in str(failed.value) and not failed.value.remote_traceback
    info = job.info()
    assert info.reason == "result_invalid" and "does not verify" in (info.error_message or "")
    assert info.traceback is None and info.attempts[0].message == INVALID_MESSAGE
    out = CliRunner().invoke(cli, ["status", job.id])
    assert out.exit_code == 0 and "FORGED" not in out.output and "does not verify" in out.output
    out = CliRunner().invoke(cli, ["status", job.id, "--json"])
    shown = json.loads(out.output)
    assert shown["reason"] == "result_invalid" and "FORGED" not in out.output


def test_an_error_copied_from_another_job_or_attempt_is_invalid(held: Held) -> None:
    job = held.run(tasks.fail, "mine")
    other = held.run(tasks.fail, "theirs")
    error, tag = held.r.hmget(key(other).job, ["error", "esig"])
    held.r.hset(key(job).job, mapping={"error": error, "esig": tag})  # type: ignore[dict-item]
    assert job.info().reason == "result_invalid"
    held.r.hset(key(other).job, "attempt", 2)  # its error is attempt 1's, the job failed at 2
    assert other.info().reason == "result_invalid"


def test_an_attempts_long_message_survives_the_end_script_and_verifies(held: Held) -> None:
    message = "é€😀<b>" + "x" * 600
    job = held.run(tasks.fail, message)
    assert job.info().attempts[0].message == message[:500]


def test_altered_progress_is_shown_as_invalid(held: Held) -> None:
    job = held.run(tasks.chatty, 1, 2)
    assert job.progress() == (1.0, "step 2")
    held.r.hset(key(job).job, "note", "FORGED")
    assert job.progress() == (0.0, INVALID_PROGRESS)
    held.r.hset(key(job).job, mapping={"note": "step 2", "progress": "0.1000"})
    assert job.progress() == (0.0, INVALID_PROGRESS)


# -------------------------------------------------------------------------------- replay
def put_back_queued(r: redis.Redis, job: balloons.Job[Any]) -> None:
    jk = key(job)
    r.hset(jk.job, "status", "QUEUED")
    r.zadd(jk.pool.queue, {jk.ulid: 0})


def test_a_finished_job_put_back_in_the_queue_is_not_taken_again(held: Held) -> None:
    done, other = held.tmp / "done", held.tmp / "other"
    job = held.run(tasks.count, str(done))
    assert runs(done) == 1
    nxt = held.submit(tasks.count, str(other))
    (handoff,) = held.launched()
    put_back_queued(held.r, job)
    # The machine runs its job, then takes from the queue (TAKE): not the finished one.
    assert held.work(handoff) == EXIT_OK
    assert runs(other) == 1 and nxt.status() is JobStatus.SUCCEEDED
    assert runs(done) == 1
    info = job.info()
    assert info.status is JobStatus.FAILED and info.reason == "record_invalid"
    assert held.r.zcard(PK.queue) == 0


def test_a_finished_job_put_back_on_a_slot_is_not_claimed_again(held: Held) -> None:
    done = held.tmp / "done"
    job = held.run(tasks.count, str(done))
    jk = key(job)
    slot = f"{jk.ulid}-1"
    held.r.hset(jk.job, mapping={"status": "STARTING", "slot": slot})
    held.r.zadd(PK.slots, {slot: time.time() + 60})
    entry = {"job": jk.ulid, "attempt": 1, "cpus": 1, "mem": 256, "state": "starting"}
    held.r.hset(PK.slot, slot, json.dumps({**entry, "since": time.time(), "machine": ""}))
    held.work(f"{job.id}/1")  # the machine of that slot, launched anew (CLAIM)
    assert runs(done) == 1
    info = job.info()
    assert info.status is JobStatus.FAILED and info.reason == "record_invalid"


def test_a_finished_job_made_a_machines_held_job_is_not_run_again(held: Held) -> None:
    """TAKE hands a machine back the job it holds (a lost reply): not one that ended."""
    done = held.tmp / "done"
    job = held.run(tasks.count, str(done))
    jk = key(job)
    own = new_ulid()
    slot = f"{own}-0"
    held.r.zadd(PK.slots, {slot: time.time() + 60})
    entry = {"job": jk.ulid, "attempt": 1, "cpus": 1, "mem": 256, "state": "running"}
    held.r.hset(PK.slot, slot, json.dumps({**entry, "since": time.time(), "machine": MACHINE}))
    held.r.hset(jk.job, mapping={"status": "RUNNING", "slot": slot, "machine": MACHINE})
    held.work(f"default.{own}/0")
    assert runs(done) == 1
    assert job.info().reason == "record_invalid"


def put_back_on_a_lapsed_slot(r: redis.Redis, job: balloons.Job[Any]) -> None:
    """The job STARTING again on its first slot, whose boot lease ran out long ago."""
    jk = key(job)
    slot = f"{jk.ulid}-1"
    r.hset(jk.job, mapping={"status": "STARTING", "slot": slot})
    r.zadd(PK.slots, {slot: 1.0})
    entry = {"job": jk.ulid, "attempt": 1, "cpus": 1, "mem": 256, "state": "starting"}
    r.hset(PK.slot, slot, json.dumps({**entry, "since": 1.0, "machine": ""}))


@pytest.mark.parametrize("how", ["put back", "put back, runs key deleted, past its TTL"])
def test_a_finished_job_put_back_on_a_lapsed_slot_earns_no_retry(held: Held, how: str) -> None:
    """The supervisor ends the attempt of a slot whose lease lapsed, with a retry when the
    job's policy allows (a lost machine): not for a finished job put back in Redis. With its
    runs key deleted, the supervisor still grants no retry to a record past its TTL (signed
    here with the secret only to make it an hour old without waiting an hour)."""
    done = held.tmp / "done"
    job = held.run(tasks.flaky, str(done), 0)  # retries=3: a lost machine is retried
    assert runs(done) == 1
    jk = key(job)
    if how != "put back":
        spec = json.loads(held.r.hget(jk.job, "payload"))  # type: ignore[arg-type]
        spec.update(created=time.time() - 3600, ttl=60)
        payload = json.dumps(spec).encode()
        sig = sign(held.secret.encode(), payload, held.r.hget(jk.job, "args") or b"")
        held.r.hset(jk.job, mapping={"payload": payload, "sig": sig})
        held.r.delete(jk.runs)
    put_back_on_a_lapsed_slot(held.r, job)
    report = held.app.supervisor().step(gc=False)
    assert report.errors == [] and [s for s, _ in report.reclaimed] == [f"{jk.ulid}-1"]
    for handoff in held.launched():
        held.work(handoff)
    assert runs(done) == 1
    info = job.info()
    assert info.status is JobStatus.FAILED and info.attempt == 1
    assert info.reason == ("record_invalid" if how == "put back" else "boot_timeout")


@pytest.mark.parametrize("kind", ["a hash", "garbage"])
def test_a_garbled_runs_key_never_crashes_a_script(held: Held, kind: str) -> None:
    """The runs key of a job not yet run, made a hash or garbage: read as no run, rewritten."""
    done = held.tmp / "done"
    job = held.submit(tasks.count, str(done))
    (handoff,) = held.launched()
    jk = key(job)
    if kind == "a hash":
        held.r.hset(jk.runs, "claimed", "x")
    else:
        held.r.set(jk.runs, "9x 9")
    held.work(handoff)
    assert runs(done) == 1 and job.status() is JobStatus.SUCCEEDED
    assert held.r.get(jk.runs) == b"1 1"


def test_a_record_older_than_its_ttl_is_not_run(held: Held) -> None:
    """With the job's runs marker deleted too (a writer may delete any key), a copy of a
    record is still refused once it is older than its TTL. Signed here with the secret only to
    make a record an hour old without waiting an hour."""
    done = held.tmp / "done"
    job = held.submit(tasks.count, str(done))
    (handoff,) = held.launched()
    jk = key(job)
    spec = json.loads(held.r.hget(jk.job, "payload"))  # type: ignore[arg-type]
    spec.update(created=time.time() - 3600, ttl=60)
    payload = json.dumps(spec).encode()
    args = held.r.hget(jk.job, "args") or b""
    held.r.hset(
        jk.job, mapping={"payload": payload, "sig": sign(held.secret.encode(), payload, args)}
    )
    held.r.delete(jk.runs)
    held.work(handoff)
    assert runs(done) == 0
    info = job.info()
    assert info.reason == "record_invalid" and "older than its TTL" in (info.error_message or "")


@pytest.mark.machines
@pytest.mark.parametrize("attempt", [2, 3], ids=["same attempt", "next attempt"])
def test_a_retried_job_put_back_is_not_run_again(tmp_path: Path, attempt: int) -> None:
    """On real machines: a job that succeeded at its second attempt, put back to run that
    attempt again, or a third one it was never granted, runs no more (a job submitted after it
    makes a machine launch for it, since it is first in the queue)."""
    path = tmp_path / "flaky"
    job = tasks.flaky.submit(str(path), 1)
    assert job.result(timeout=30) == 2
    r = redis.Redis.from_url(os.environ["BALLOONS_REDIS_URL"])
    try:
        r.hset(key(job).job, "attempt", attempt)
        put_back_queued(r, job)
    finally:
        r.close()
    assert tasks.count.submit(str(tmp_path / "other")).result(timeout=30) == 1
    with pytest.raises(JobFailed) as failed:
        job.result(timeout=30)
    assert failed.value.reason == ("record_invalid" if attempt == 2 else "signature_invalid")
    assert runs(path) == 2
