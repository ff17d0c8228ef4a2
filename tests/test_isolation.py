"""A pool's isolation: what one job leaves behind for the next on the same warm machine.

Each mode is shown with a module global, an ``os.environ`` change and leftover threads (one
daemon, one not): ``"process"`` (the default) forks a fresh child per job from a clean parent,
``"machine"`` gives every job its own machine, ``"none"`` runs job after job in one
interpreter. Real Valkey, real machines (``LocalBackend``'s forked processes).
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import balloons
from balloons import JobStatus
from balloons.backends.local import RUNNING_STATES, LocalBackend
from balloons.pools import Pool
from balloons.store.keys import PoolKeys
from balloons.store.replies import claim, take
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


@pytest.fixture(autouse=True)
def _machines_stopped() -> Iterator[None]:
    """The warm machines a test leaves are stopped, and their stop recorded, before the next
    test starts on an empty database (an idle machine exiting later would write there)."""
    yield
    backend = tasks.app.backend

    def running() -> list[str]:
        return [m.id for m in backend.list() if m.state in RUNNING_STATES]

    for machine in running():
        backend.stop(machine)
    wait_for(lambda: not running(), "the test's machines to stop")


def _two_jobs(task: Any) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Run ``task`` twice, one after the other: what each saw, and each job's machine."""
    first = task.submit("first")
    seen1 = first.result(timeout=60)
    second = task.submit("second")
    seen2 = second.result(timeout=60)
    machines = [job.info().attempts[-1].machine_id for job in (first, second)]
    return seen1, seen2, machines


def test_process_isolation_is_the_default() -> None:
    assert balloons.App().pool("anything").isolation == "process"
    assert Pool("p", max_machines=1, idle_timeout=1).isolation == "process"


def test_process_isolation_leaves_nothing_for_the_next_job() -> None:
    seen1, seen2, machines = _two_jobs(tasks.leave_state_process)
    assert machines[0] == machines[1]  # the same warm machine took the second job
    assert seen1["pid"] != seen2["pid"]  # in a process of its own
    for seen in (seen1, seen2):
        assert seen["global"] == [] and seen["env"] == "" and seen["threads"] == []


def test_no_isolation_shares_the_interpreter() -> None:
    seen1, seen2, machines = _two_jobs(tasks.leave_state_none)
    assert machines[0] == machines[1]
    assert seen1 == {"pid": seen1["pid"], "global": [], "env": "", "threads": []}
    assert seen2["pid"] == seen1["pid"]
    assert seen2["global"] == ["first"]
    assert seen2["env"] == "first"
    assert seen2["threads"] == ["left-daemon-first", "left-plain-first"]


def test_machine_isolation_gives_each_job_a_machine() -> None:
    seen1, seen2, machines = _two_jobs(tasks.leave_state_machine)
    assert machines[0] != machines[1]
    for seen in (seen1, seen2):
        assert seen["global"] == [] and seen["env"] == "" and seen["threads"] == []


def test_a_machine_of_an_isolated_pool_takes_no_second_job(r: redis.Redis) -> None:
    """Its slot is given back as its job ends, whatever the warm floor: no machine is left
    holding a slot of the pool once the job is done."""
    job = tasks.leave_state_machine.submit("only")
    job.result(timeout=60)
    pk = PoolKeys("balloons", "iso-machine")
    wait_for(lambda: r.zcard(pk.slots) == 0, "the machine to give its slot back")


@pytest.mark.parametrize(
    ("how", "reason"),
    [("segv", "killed"), ("exit", "exit_code=3"), ("kill", "killed")],
)
def test_a_job_process_that_dies_is_recorded_retried_and_the_machine_serves_on(
    tmp_path: Path, how: str, reason: str
) -> None:
    warm = tasks.iso_sleep.submit(0)  # the pool's machine, warm
    warm.result(timeout=60)
    job = tasks.crash_once.submit(str(tmp_path / "runs"), how)
    assert job.result(timeout=60) == 2  # the retry ran
    failed, retried = job.info().attempts
    assert failed.reason == reason
    assert failed.outcome == "FAILED"
    assert "the job's process" in (failed.message or "")
    machine = warm.info().attempts[-1].machine_id
    # The worker recorded it and served on: the same machine ran the retry and a next job.
    assert failed.machine_id == machine and retried.machine_id == machine
    after = tasks.iso_sleep.submit(0)
    assert after.result(timeout=60) == 0
    assert after.info().attempts[-1].machine_id == machine


def test_a_job_process_that_ignores_its_timeout_is_killed_and_the_machine_serves_on() -> None:
    warm = tasks.iso_sleep.submit(0)
    warm.result(timeout=60)
    job = tasks.iso_spin_in_c.submit()
    with pytest.raises(balloons.JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "timeout"
    machine = warm.info().attempts[-1].machine_id
    assert job.info().attempts[-1].machine_id == machine
    after = tasks.iso_sleep.submit(0)
    assert after.result(timeout=60) == 0
    assert after.info().attempts[-1].machine_id == machine


@pytest.mark.parametrize("task", [tasks.iso_sleep, tasks.iso_deaf_sleep])
def test_a_cancelled_job_process_ends_and_the_machine_serves_on(task: Any) -> None:
    warm = tasks.iso_sleep.submit(0)
    warm.result(timeout=60)
    job = task.submit(30)
    wait_for(lambda: job.status() is JobStatus.RUNNING, "the job to run", interval=0.02)
    job.cancel()
    assert job.status() is JobStatus.CANCELLED
    machine = warm.info().attempts[-1].machine_id
    after = tasks.iso_sleep.submit(0)
    assert after.result(timeout=60) == 0  # the machine ended the job's process, and went on
    assert after.info().attempts[-1].machine_id == machine


def test_isolation_is_checked() -> None:
    with pytest.raises(balloons.ConfigError, match="isolation 'thread' is not one of"):
        balloons.App().pool("p", isolation="thread")
    with pytest.raises(balloons.ConfigError, match="isolation 3"):
        Pool("p", max_machines=1, idle_timeout=1, isolation=3)  # type: ignore[arg-type]


def test_the_pool_isolation_travels_with_its_settings(r: redis.Redis) -> None:
    tasks.leave_state_none.submit("x").result(timeout=60)
    pk = PoolKeys("balloons", "iso-none")
    assert r.hget(pk.cfg, "iso") == b"none"
    assert tasks.app.store.pool_stats("iso-none")["isolation"] == "none"
    r.hset(pk.cfg, "iso", "shared\x00")  # not a value balloons writes: read as the default
    assert tasks.app.store.pool_stats("iso-none")["isolation"] == "process"


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        (b"none", "none"),
        (b"machine", "machine"),
        (b"process", "process"),
        (b"", "process"),  # settings written before isolation existed
        (b"NONE", "process"),
        (b"none\x00", "process"),
        (b"x" * 10_000, "process"),
    ],
)
def test_an_isolation_read_from_redis_is_one_balloons_knows_else_the_default(
    stored: bytes, read: str
) -> None:
    work = take([1, b"u", b"1", b"{}", b"[]", b"sig", b"", 0, stored]).work
    assert work is not None and work.isolation == read
    got = claim([1, b"{}", b"[]", b"sig", b"2", b"10", b"", stored], "u", 1).work
    assert got is not None and got.isolation == read
    for older in (
        [1, b"u", b"1", b"{}", b"[]", b"sig", b""],
        [1, b"u", b"1", b"{}", b"[]", b"sig", b"", 1],
    ):
        work = take(older).work  # a reply with no such item
        assert work is not None and work.isolation == "process"


def test_local_backend_start_method_and_its_old_keyword() -> None:
    assert LocalBackend(start="exec").start_method == "exec"
    assert LocalBackend().start_method == "fork"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = LocalBackend(isolation="exec")
    assert backend.start_method == "exec"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert "start=" in str(caught[0].message)
    with pytest.raises(balloons.ConfigError, match="start 'thread'"):
        LocalBackend(start="thread")


def test_a_job_process_sends_nothing_to_redis_its_parent_records_the_outcome(
    r: redis.Redis, tmp_path: Path
) -> None:
    """A job's process opens no connection: its parent took the job and records the outcome
    it hands over (a failure with its retry as well as a result)."""
    warm = tasks.iso_sleep.submit(0)
    warm.result(timeout=60)
    before = r.info("stats")["total_connections_received"]
    for n in range(1, 6):
        assert tasks.iso_sleep.submit(n / 1000).result(timeout=60) == n / 1000
    assert r.info("stats")["total_connections_received"] - before <= 1  # a waiter's, at most
    machine = warm.info().attempts[-1].machine_id
    job = tasks.iso_fail_once.submit(str(tmp_path / "runs"))
    assert job.result(timeout=60) == "second"
    failed, retried = job.info().attempts
    assert (failed.outcome, failed.reason, retried.outcome) == ("FAILED", "task_error", "SUCCEEDED")
    assert "first attempt" in (failed.message or "")
    assert failed.machine_id == retried.machine_id == machine


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A memory cgroup below this process's (cgroup v1), limited to 48 MiB; skipped where
    none can be made (not root, no memory controller, cgroup v2). The processes moved into it
    are moved back before it is removed."""
    own = ""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            own = path
    base = Path("/sys/fs/cgroup/memory") / own.lstrip("/")
    if not own or not (base / "memory.limit_in_bytes").is_file():
        pytest.skip("no cgroup v1 memory controller here")
    group = base / f"balloons-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(48 << 20))
        swap = group / "memory.memsw.limit_in_bytes"
        if swap.is_file():
            swap.write_text(str(48 << 20))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here: {exc}")
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (base / "cgroup.procs").write_text(pid)
        wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), "the cgroup to empty")
        group.rmdir()


def test_a_job_process_the_kernel_kills_for_memory_fails_as_oom(memory_cgroup: Path) -> None:
    """A child killed by the kernel's OOM killer fails its attempt as ``oom`` (its cgroup's
    count of OOM kills moved), not as ``killed``; the machine serves on."""
    warm = tasks.iso_join_cgroup.submit(str(memory_cgroup))  # the machine, in the cgroup
    machine = warm.info().attempts[-1].machine_id if warm.result(timeout=60) else ""
    wait_for(lambda: tasks.app.store.pool_stats("iso-process")["idle"] == 1, "the machine to idle")
    job = tasks.iso_hog.submit(96)
    with pytest.raises(balloons.JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "oom"
    assert "ran out of memory" in (job.info().attempts[-1].message or "")
    assert job.info().attempts[-1].machine_id == machine
    assert tasks.iso_hog.submit(1).result(timeout=60) == 1 << 20  # the machine serves on
