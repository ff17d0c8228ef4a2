"""LocalBackend: fresh isolated processes, allow-listed env, memory limits, records, stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import balloons
from balloons import JobFailed, JobStatus, LocalBackend
from tests import tasks
from tests.conftest import STATE_DIR, processes_mentioning
from tests.waiting import wait_for

pytestmark = pytest.mark.machines

ROOT = Path(__file__).parent.parent


def _wait_for(path: Path, timeout: float = 30) -> str:
    return wait_for(lambda: path.exists() and path.read_text(), f"{path} to be written", timeout)


def test_machine_env_is_allow_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_VAR", "yes")
    monkeypatch.setenv("PARENT_SECRET_TOKEN", "hunter2")
    app = balloons.App(env_allowlist=["ALLOWED_VAR"])
    t = balloons.Task(app, tasks.environment.fn, tasks.environment.name, tasks.environment.opts)
    out = t.submit().result(timeout=30)
    env = out["env"]
    assert env["ALLOWED_VAR"] == "yes"
    assert "PARENT_SECRET_TOKEN" not in env
    assert env["BALLOONS_JOB"].endswith("/1")
    assert set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "ALLOWED_VAR",
        "BALLOONS_JOB",
        "BALLOONS_REDIS_URL",
        "BALLOONS_SECRET",
        "BALLOONS_NAMESPACE",
        "BALLOONS_MACHINE_ID",
        "BALLOONS_HOME",  # the state directory: a machine may launch the next link of a chain
        "BALLOONS_PYTHONPATH",
        "BALLOONS_VERSION_FILES",  # the task modules whose source is the machine's version
    }


def test_each_machine_is_a_fresh_process_in_its_own_session(tmp_path: Path) -> None:
    # Both jobs wait for the flag, so neither machine is idle when the other job is placed and
    # each gets its own. (Without it, on a busy machine the first machine could finish before
    # the second submit and take that job warm, in the same process.)
    flag = tmp_path / "flag"
    ja, jb = (tasks.environment_after.submit(str(flag)) for _ in range(2))
    flag.touch()
    a, b = ja.result(timeout=30), jb.result(timeout=30)
    assert a["pid"] != b["pid"] != os.getpid()
    # Each job runs in a process forked by its machine's (the pool's isolation="process"),
    # which leads a session of its own.
    assert a["ppid"] != b["ppid"]
    assert a["sid"] == a["ppid"] and b["sid"] == b["ppid"]
    assert a["sid"] != os.getsid(0)


def test_exec_start_runs_a_fresh_interpreter() -> None:
    app = balloons.App(backend=LocalBackend(start="exec"))
    t = balloons.Task(app, tasks.environment.fn, tasks.environment.name, tasks.environment.opts)
    out = t.submit().result(timeout=60)
    assert out["sid"] == out["ppid"]  # the machine's process; the job runs in its child
    with pytest.raises(balloons.ConfigError, match="start 'thread'"):
        LocalBackend(start="thread")


def test_memory_limit_fails_the_job_with_oom() -> None:
    job = tasks.hog.submit(400)  # 400 MiB against a 128 MiB limit
    with pytest.raises(JobFailed) as info:
        job.result(timeout=60)
    assert info.value.reason == "oom"
    assert tasks.hog.options(memory_mb=512).submit(50).result(timeout=60) == 50


def test_machine_records_are_in_redis_and_shared() -> None:
    job = tasks.add.submit(1, 1)
    job.result(timeout=30)
    machine_id = job.info().machine_id
    assert machine_id
    # Another backend object (as in another process) sees the same record.
    other = balloons.App().backend

    def stopped() -> balloons.MachineInfo | None:
        info = other.inspect(machine_id)
        return info if info is not None and info.state == "stopped" else None

    info = wait_for(stopped, f"machine {machine_id} recorded as stopped")
    assert info.state == "stopped" and info.exit_code == 0
    assert info.job_id == job.id and info.attempt == 1 and info.pool == "default"
    assert [m.id for m in other.list(job=job.id)] == [machine_id]
    assert other.inspect("ffffffffffffff") is None


def test_killed_machine_fails_its_job_with_reason(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job = tasks.pid_then_sleep.submit(str(pidfile), 20)
    _wait_for(pidfile)  # the job runs (in a child of the machine's process)
    running = tasks.app.backend.inspect(job.info().machine_id or "")
    assert running is not None
    os.kill(int(running.detail["pid"]), signal.SIGKILL)  # the machine's process
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "killed"
    machine = tasks.app.backend.inspect(job.info().machine_id or "")
    assert machine is not None and machine.signal == signal.SIGKILL


def test_machine_exiting_without_a_result_is_noticed() -> None:
    job = tasks.exit_hard.submit(7)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "exit_code=7"


def test_stopping_a_machine_ends_its_job(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job = tasks.pid_then_sleep.submit(str(pidfile), 20)
    _wait_for(pidfile)
    machine_id = job.info().machine_id
    assert machine_id
    tasks.app.backend.stop(machine_id)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    # SIGTERM ends the sleep; the worker records it as the task failing, or the fork server
    # records the stop: either way the job ends, with a reason, and the machine is gone.
    assert info.value.reason in ("cancelled", "task_error")
    assert job.status() is JobStatus.FAILED


def test_run_timeout_is_enforced_cooperatively() -> None:
    job = tasks.sleep_past_timeout.submit(20)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "timeout"
    assert "timeout of 1s" in info.value.error_message


def test_run_timeout_is_enforced_even_when_the_task_ignores_it() -> None:
    job = tasks.ignore_timeout.submit(60)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=40)
    assert info.value.reason == "timeout"
    assert "killed" in info.value.error_message


def test_a_timed_out_attempt_is_retried_and_each_attempt_says_timeout() -> None:
    job = tasks.sleep_past_timeout.options(retries=1, retry_backoff=0.05).submit(20)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "timeout"
    attempts = job.info().attempts
    assert [(a.outcome, a.reason) for a in attempts] == [("FAILED", "timeout")] * 2
    assert all(a.message == "the task ran past its timeout of 1s" for a in attempts)


def test_run_timeout_stops_cpu_bound_python_that_swallows_exceptions() -> None:
    """A pure-Python loop that never sleeps: the timer's signal interrupts it between two
    bytecodes, and ``except Exception`` cannot catch what it raises."""
    job = tasks.spin_python.submit()
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "timeout"
    assert "timeout of 1s" in info.value.error_message
    assert info.value.error_type == "balloons.machine.worker.TaskTimeout"


def test_c_code_holding_the_interpreter_is_ended_by_the_workers_watchdog() -> None:
    """``sum(range(10**13))`` runs in C for hours holding the GIL: neither the timer's signal
    handler nor the heartbeat thread runs. The worker's watchdog (a C thread) ends the
    machine; the heartbeat of 3 s leaves the lease (15 s) running well past that. (One process
    runs the task: with the default isolation="process" its parent kills it instead, see
    tests/test_isolation.py.)"""
    tasks.app.pool("hog", heartbeat=3, idle_timeout=0, isolation="none")
    spin = balloons.Task(tasks.app, tasks.spin_in_c.fn, tasks.spin_in_c.name,
                         balloons.TaskOptions(pool="hog", timeout=1))  # fmt: skip
    job = spin.submit()
    with pytest.raises(JobFailed) as info:
        job.result(timeout=60)
    assert info.value.reason == "timeout", info.value
    assert "ran past its run timeout" in info.value.error_message
    assert "the worker ended its machine" in info.value.error_message
    machine = tasks.app.backend.inspect(job.info().machine_id or "")
    assert machine is not None and machine.exit_code == 1
    log = (STATE_DIR / "machines" / f"{machine.id}.log").read_text()
    assert "Timeout (0:00:" in log and "spin_in_c" in log  # faulthandler's dump of the stack


def test_c_code_holding_the_interpreter_past_its_lease_is_reclaimed_as_a_timeout() -> None:
    """The suite's heartbeat of 0.5 s: the lease lapses before the watchdog fires, and the
    waiting client reclaims the machine, past its job's deadline: a timeout, not a loss. (One
    process runs the task: with the default isolation="process" its parent holds the lease.)"""
    tasks.app.pool("hog-lease", isolation="none")
    spin = balloons.Task(tasks.app, tasks.spin_in_c.fn, tasks.spin_in_c.name,
                         balloons.TaskOptions(pool="hog-lease", timeout=1))  # fmt: skip
    job = spin.submit()
    with pytest.raises(JobFailed) as info:
        job.result(timeout=60)
    assert info.value.reason == "timeout", info.value
    assert "ran past its run timeout and its machine stopped heartbeating" in (
        info.value.error_message
    )


def test_job_survives_the_submitting_process_exiting(tmp_path: Path) -> None:
    code = f"from tests import tasks; print(tasks.touch.submit({str(tmp_path / 'ran')!r}).id)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert tasks.app.job(job_id).result(timeout=30) == str(tmp_path / "ran")
    machine = tasks.app.job(job_id).info().machine_id or ""
    wait_for(
        lambda: processes_mentioning(f"BALLOONS_MACHINE_ID={machine}") == [],
        f"the processes of machine {machine} to end",
    )


def test_launch_failure_fails_the_job_instead_of_losing_it() -> None:
    class Broken(LocalBackend):
        def launch(self, spec: balloons.MachineSpec) -> balloons.MachineInfo:
            raise balloons.BackendError("no capacity in region xyz")

    app = balloons.App(backend=Broken())
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    job = t.submit(1, 2)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=5)
    assert info.value.reason == "launch_failed"
    assert "no capacity in region xyz" in info.value.error_message
