"""The core job scenarios with FlyBackend against the emulator served over real HTTP.

Each test's emulator runs the jobs app as a Fly deployment would: machines get the Redis URL
and the signing key from the app's secrets, never from the create request, and run the
worker with this interpreter (the emulator maps ``python`` to it) and this repository on
their import path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import balloons
from balloons import JobFailed, JobStatus
from balloons.fly.emulator import Faults
from tests import tasks
from tests.waiting import wait_for

from .conftest import JOBS_APP, JOBS_IMAGE, ROOT, TOKEN, FlyRig

CREATE = "POST /v1/apps/{app_name}/machines"


def on(app: balloons.App, task: balloons.Task[Any, Any]) -> balloons.Task[Any, Any]:
    """``task`` submitted through ``app`` (the module's tasks belong to the default app)."""
    return balloons.Task(app, task.fn, task.name, task.opts)


def _failure(job: balloons.Job[Any], timeout: float = 40) -> JobFailed:
    with pytest.raises(JobFailed) as info:
        job.result(timeout=timeout)
    return info.value


def _wait_for(path: Path, timeout: float = 30) -> str:
    return wait_for(lambda: path.exists() and path.read_text(), f"{path} to be written", timeout)


def test_success_costs_exactly_one_api_call(rig: FlyRig) -> None:
    app = rig.app()
    job = on(app, tasks.add).submit(2, 3)
    assert job.result(timeout=30) == 5
    assert job.status() is JobStatus.SUCCEEDED
    assert rig.stats()["calls"] == {CREATE: 1}
    info = job.info()
    assert info.machine_id in rig.emulator.machines
    (attempt,) = info.attempts
    assert attempt.outcome == "SUCCEEDED" and attempt.note is None
    rig.wait_all_destroyed()


def test_the_create_request_is_what_the_contract_says(
    rig: FlyRig, redis_url: str, secret: str
) -> None:
    os.environ["ALLOWED_VAR"] = "yes"
    try:
        app = rig.app(env_allowlist=["ALLOWED_VAR", "NOT_SET_VAR"])
        job = on(app, tasks.environment).options(memory_mb=512, cpus=2).submit()
        out = job.result(timeout=30)
    finally:
        del os.environ["ALLOWED_VAR"]
    machine = rig.emulator.machines[job.info().machine_id or ""]
    config = machine.config
    assert config["auto_destroy"] is True
    assert config["restart"] == {"policy": "no"}
    assert config["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}
    assert config["image"] == JOBS_IMAGE
    assert config["init"] == {"cmd": ["python", "-m", "balloons.machine"]}
    assert config["env"] == {"BALLOONS_JOB": f"{job.id}/1", "ALLOWED_VAR": "yes"}
    assert config["metadata"] == {
        "balloons_job": job.id, "balloons_attempt": "1", "balloons_pool": "default",
        "balloons_slot": f"{job.id.split('.')[1]}-1", "balloons": "balloons",
    }  # fmt: skip
    assert machine.name == f"balloons-{job.id.split('.')[1]}-1"
    # Nothing secret went through the API; the worker got it from the app's secrets.
    stored = repr(config) + repr(machine.name)
    for value in (secret, redis_url, TOKEN):
        assert value not in stored
    assert "files" not in config
    assert out["env"]["BALLOONS_SECRET"] == secret
    assert out["env"]["FLY_MACHINE_ID"] == machine.id


def test_task_error_carries_the_remote_traceback(rig: FlyRig) -> None:
    exc = _failure(on(rig.app(), tasks.fail).submit("boom 7"))
    assert exc.reason == "task_error"
    assert exc.error_type == "ValueError" and exc.error_message == "boom 7"
    assert "raise ValueError(message)" in exc.remote_traceback


def test_run_timeout_is_enforced_by_the_worker(rig: FlyRig) -> None:
    exc = _failure(on(rig.app(), tasks.sleep_past_timeout).submit(20))
    assert exc.reason == "timeout"
    assert "timeout of 1s" in exc.error_message


def test_a_task_ignoring_its_timeout_has_its_machine_destroyed(rig: FlyRig) -> None:
    job = on(rig.app(), tasks.ignore_timeout).submit(60)
    exc = _failure(job)
    assert exc.reason == "timeout"
    assert "killed" in exc.error_message
    # The worker ended its own machine, which Fly then destroyed (auto_destroy): no API call.
    rig.wait_all_destroyed()
    assert "DELETE /v1/apps/{app_name}/machines/{machine_id}" not in rig.stats()["calls"]


def test_a_task_holding_the_interpreter_is_ended_by_the_workers_watchdog(rig: FlyRig) -> None:
    """C code that never lets the timeout signal or the heartbeat in: the worker's watchdog
    ends the machine (exit code 1), and Fly's exit event with the slot's deadline says which
    timeout it was. A heartbeat of 3 s keeps the lease (15 s) out of it."""
    app = rig.app()
    app.pool("hog", heartbeat=3, idle_timeout=0, isolation="none")  # the machine's own process
    job = balloons.Task(app, tasks.spin_in_c.fn, tasks.spin_in_c.name,
                        balloons.TaskOptions(pool="hog", timeout=1)).submit()  # fmt: skip
    exc = _failure(job, timeout=60)
    assert exc.reason == "timeout", exc
    assert "ran past its run timeout" in exc.error_message
    assert "the worker ended its machine" in exc.error_message
    machine = app.backend.inspect(job.info().machine_id or "")
    assert machine is not None and machine.exit_code == 1


def test_out_of_memory_fails_the_job_with_oom(rig: FlyRig) -> None:
    exc = _failure(on(rig.app(), tasks.hog).submit(400))  # 400 MiB against 128 MiB
    assert exc.reason == "oom"


def test_killed_machine_fails_its_job_with_the_platforms_reason(
    rig: FlyRig, tmp_path: Path
) -> None:
    app = rig.app()
    app.pool("default", isolation="none")  # the task's process is the machine's
    pidfile = tmp_path / "pid"
    job = on(app, tasks.pid_then_sleep).submit(str(pidfile), 30)
    os.kill(int(_wait_for(pidfile)), signal.SIGKILL)
    exc = _failure(job)
    assert exc.reason == "killed"
    assert "signal 9" in exc.error_message
    machine = app.backend.inspect(job.info().machine_id or "")
    assert machine is not None and machine.state == "destroyed" and machine.signal == 9


def test_machine_exiting_without_a_result_is_noticed(rig: FlyRig) -> None:
    exc = _failure(on(rig.app(), tasks.exit_hard).submit(7))
    assert exc.reason == "exit_code=7"


def test_stopping_a_machine_ends_its_job(rig: FlyRig, tmp_path: Path) -> None:
    app = rig.app()
    pidfile = tmp_path / "pid"
    job = on(app, tasks.pid_then_sleep).submit(str(pidfile), 30)
    _wait_for(pidfile)
    app.backend.stop(job.info().machine_id or "")
    exc = _failure(job)
    assert exc.reason in ("cancelled", "task_error")
    machine = app.backend.inspect(job.info().machine_id or "")
    assert machine is not None and machine.requested_stop


def test_submit_returns_before_fly_answers_the_create(rig: FlyRig) -> None:
    """Creates are made from the app's launcher thread: a submit does not wait for Fly's
    answer (a second or more on the real API). Here the create is held at a gate, and the
    submit returns while it is held."""
    import httpx

    from .conformance import ConformantTransport

    gate = threading.Event()
    held: list[str] = []

    class Gated(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner = inner

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and request.url.path.endswith("/machines"):
                held.append(threading.current_thread().name)
                gate.wait(30)
            return self.inner.handle_request(request)

    transport = Gated(ConformantTransport(httpx.HTTPTransport(), rig.conformance))
    http = httpx.Client(transport=transport, timeout=60)
    rig.closers.append(http.close)
    app = rig.app(backend=rig.backend(http=http))
    job = on(app, tasks.add).submit(1, 2)
    assert job.status() is JobStatus.STARTING  # returned, with its create not answered yet
    assert not gate.is_set() and rig.stats()["calls"] == {}
    gate.set()
    assert job.result(timeout=30) == 3
    assert held == ["balloons-launcher"] and rig.stats()["calls"] == {CREATE: 1}
    (attempt,) = job.info().attempts
    assert attempt.slot == f"{job.id.rpartition('.')[2]}-1"  # nothing waited: still its own


def test_async_submit_and_result(rig: FlyRig) -> None:
    app = rig.app()
    add = on(app, tasks.add)

    ids: list[str] = []

    async def main() -> list[int]:
        jobs = [await add.submit_async(i, i) for i in range(3)]
        ids.extend(j.id for j in jobs)
        try:
            return list(await asyncio.gather(*(j.result_async(timeout=30) for j in jobs)))
        finally:
            await app.store.aclose()  # the loop's connections: redis-py's and the submit's

    assert asyncio.run(main()) == [0, 2, 4]
    # At most one create per job. Creates are made from the launcher thread: a job submitted
    # while one is being made goes back to the queue, and its slot's machine, created with no
    # job of its own, takes whatever is queued when it boots (perhaps nothing, by then).
    machines = {app.job(j).info().machine_id for j in ids}
    assert None not in machines and 1 <= len(machines) <= 3
    calls = rig.stats()["calls"]
    assert list(calls) == [CREATE] and len(machines) <= calls[CREATE] <= 3


def test_many_concurrent_jobs_within_flys_rate_limits(make_rig: Any) -> None:
    # The emulator enforces Fly's limits (429 past 1 create/s, bursts of 3): the client's
    # limiter spaces the creates so that none is refused, so each create is one machine. A job
    # whose create has to wait goes to the queue, where a machine already up may take it.
    rig = make_rig(faults=Faults(rate_limit=True))
    app = rig.app()
    add = on(app, tasks.add)
    jobs: list[balloons.Job[int]] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        job = add.submit(i, 1)
        with lock:
            jobs.append(job)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(j.result(timeout=30) for j in jobs) == [1, 2, 3, 4, 5, 6]
    app.close()  # makes the creates still waiting for the limiter
    calls = rig.stats()["calls"]
    assert list(calls) == [CREATE]
    # Each create is one machine (none refused). How many: as many as the limiter let through
    # before machines already up had taken the queued jobs, which on a busy machine may be one.
    assert 1 <= calls[CREATE] == len(rig.emulator.machines) <= 6
    rig.wait_all_destroyed()


def test_main_script_tasks_configured_from_the_environment(rig: FlyRig, tmp_path: Path) -> None:
    script = ROOT / "tests" / "scripts" / "ten_lines.py"
    env = {
        **os.environ,
        "BALLOONS_BACKEND": "fly",
        "FLY_API_TOKEN": TOKEN,
        "BALLOONS_FLY_APP": JOBS_APP,
        "BALLOONS_FLY_API_URL": rig.served.base_url,
        "FLY_IMAGE_REF": JOBS_IMAGE,
    }
    out = subprocess.run(
        [sys.executable, str(script), "fly"], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "FLY!"
    assert rig.stats()["calls"] == {CREATE: 1}


def test_the_worker_import_path_stays_free_of_httpx() -> None:
    code = (
        "import sys, balloons, balloons.machine.worker, tests.tasks; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore', "
        "'starlette', 'uvicorn') or m.startswith('balloons.fly')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_no_job_is_stranded_when_submits_race_idle_fly_machines(rig: FlyRig) -> None:
    """As on the local backend: submits from several threads race machines that finish and
    idle out after 20 ms; every job finishes, with no supervisor, and the cap holds."""
    from balloons.fly.ratelimit import Limit, RateLimiter

    loose = RateLimiter(limits={}, default=Limit(rate=1000, burst=1000))
    app = rig.app(backend=rig.backend(limiter=loose))
    app.pool("racy", max_machines=3, idle_timeout=0.02)
    add = balloons.Task(app, tasks.racy_add.fn, tasks.racy_add.name, tasks.racy_add.opts)
    results: list[int] = []
    errors: list[BaseException] = []

    def burst(offset: int) -> None:
        try:
            jobs = []
            for i in range(15):
                jobs.append(add.submit(offset, i))
                time.sleep((i % 4) * 0.02)
            results.extend(j.result(timeout=90) for j in jobs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(k * 100,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors
    assert sorted(results) == sorted(k * 100 + i for k in range(3) for i in range(15))
    slots = [m["config"]["metadata"]["balloons_slot"] for m in rig.machines(include_deleted="true")]
    assert len(slots) == len(set(slots))  # one machine per slot, never a duplicate create
    rig.wait_all_destroyed()


def test_a_submit_loop_never_waits_for_the_create_rate_limit(make_rig: Any) -> None:
    # Under Fly's limits (1 create/s, bursts of 3; the client keeps one spare) the third
    # machine's create has to wait: it is made from the app's launcher thread, so the loop
    # goes on, and its job waits in the queue for the first free machine.
    from balloons.fly.ratelimit import RateLimiter

    sleepers: list[str] = []

    def sleep(seconds: float) -> None:
        sleepers.append(threading.current_thread().name)
        time.sleep(seconds)

    rig = make_rig(faults=Faults(rate_limit=True))
    app = rig.app(backend=rig.backend(limiter=RateLimiter(sleep=sleep)))
    add = on(app, tasks.add)
    jobs = [add.submit(i, 1) for i in range(5)]
    assert [j.status() for j in jobs[2:]] == [JobStatus.QUEUED] * 3 or all(
        j.info().attempts[0].warm for j in jobs[2:] if j.status() is not JobStatus.QUEUED
    )
    assert [j.result(timeout=60) for j in jobs] == [1, 2, 3, 4, 5]
    assert all(j.info().attempts[-1].slot for j in jobs)
    app.close()
    assert set(sleepers) <= {"balloons-launcher"}
    calls = rig.stats()["calls"]
    assert list(calls) == [CREATE]
    assert 2 <= calls[CREATE] == len(rig.emulator.machines) <= 5
    rig.wait_all_destroyed()


@pytest.mark.parametrize("create_rate", [None, 0.4], ids=["fly-limit", "slow-creates"])
def test_closing_the_app_makes_the_launches_still_waiting(
    make_rig: Any, tmp_path: Path, create_rate: float | None
) -> None:
    """Every waiting create is made before ``close`` returns, because the queue still holds
    work when it is made: the jobs hold their machines until then. (Jobs that merely ran for
    a few seconds let a machine take a queued job first whenever the chain of creates took
    longer, as on a busy host, or with creates spaced wider than a job: ``slow-creates``; the
    launch then gives its slot back, as it should, and makes one create fewer.)"""
    from balloons.fly.ratelimit import Limit, RateLimiter

    rig = make_rig(faults=Faults(rate_limit=True))
    limiter = RateLimiter() if create_rate is None else RateLimiter(default=Limit(create_rate, 3))
    app = rig.app(backend=rig.backend(limiter=limiter))
    held = on(app, tasks.wait_then_mark)
    flag = tmp_path / "go"
    jobs = [held.submit(str(flag), str(tmp_path / f"mark{i}")) for i in range(4)]
    app.close()  # returns once every launch waiting for the limiter was made or given back
    calls = rig.stats()["calls"]
    flag.touch()
    assert list(calls) == [CREATE]
    assert calls[CREATE] == len(rig.emulator.machines) == 4
    assert [j.result(timeout=60) for j in jobs] == ["ok"] * 4
    rig.wait_all_destroyed()
