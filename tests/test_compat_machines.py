"""Compatibility on real machines (local subprocesses, a real Valkey): two apps with different
secrets share a pool and each gets its own job run; a warm machine of version A leaves a job of
version B, a machine of B is launched for it within the cap and the A machine retires; the warm
floor is replaced when the version changes, its old machine running no new job."""

from __future__ import annotations

from typing import Any

import pytest

import balloons
from balloons import JobStatus
from tests import tasks
from tests.test_worker import bound
from tests.waiting import wait_for

pytestmark = pytest.mark.machines

OTHER_SECRET = "another-app-signing-key-of-32-bytes-at-least"


def pool_of(app: balloons.App, name: str, **opts: Any) -> None:
    app.pool(name, max_machines=opts.pop("cap", 1), idle_timeout=opts.pop("idle", 20), **opts)


def machine_of(job: balloons.Job[Any]) -> str:
    attempt = job.info().attempts[-1]
    assert attempt.machine_id
    return attempt.machine_id


def idle_count(app: balloons.App, pool: str) -> int:
    return int(app.store.pool_stats(pool)["idle"])


def gone(app: balloons.App, machine: str) -> bool:
    info = app.backend.inspect(machine)
    return info is not None and info.state not in ("started", "starting", "running")


def drain(app: balloons.App, pool: str) -> None:
    """Let the pool's machines idle out (their slots given back)."""
    wait_for(lambda: app.store.pool_stats(pool)["machines"] == 0, "the machines idled out", 60)


def test_two_apps_with_different_secrets_on_one_pool_each_run_their_own_job() -> None:
    first = tasks.app
    second = balloons.App(secret=OTHER_SECRET, env_allowlist=["ALLOWED_VAR"])
    for app in (first, second):
        pool_of(app, "shared", cap=2, idle=8)
    mine = bound(first, tasks.add).options(pool="shared").submit(1, 2)
    assert mine.result(timeout=60) == 3
    wait_for(lambda: idle_count(first, "shared") == 1, "the first app's machine idles")
    theirs = bound(second, tasks.add).options(pool="shared").submit(2, 3)
    assert theirs.result(timeout=60) == 5  # not signature_invalid on the first app's machine
    assert machine_of(theirs) != machine_of(mine)
    assert theirs.info().status is JobStatus.SUCCEEDED
    drain(first, "shared")


def test_a_warm_machine_leaves_another_versions_job_and_retires_for_its_machine() -> None:
    old = balloons.App(version="A", env_allowlist=["ALLOWED_VAR"])
    new = balloons.App(version="B", env_allowlist=["ALLOWED_VAR"])
    for app in (old, new):
        pool_of(app, "deploy", cap=1, idle=20)
    before = bound(old, tasks.environment).options(pool="deploy").submit()
    assert before.result(timeout=60)["env"]["BALLOONS_VERSION"] == "A"
    wait_for(lambda: idle_count(old, "deploy") == 1, "version A's machine idles")
    a_machine = machine_of(before)
    after = bound(new, tasks.environment).options(pool="deploy").submit()
    assert after.result(timeout=60)["env"]["BALLOONS_VERSION"] == "B"
    assert machine_of(after) != a_machine and not after.info().attempts[-1].warm
    # The cap of one held: version A's idle machine gave its slot up and exited.
    wait_for(lambda: gone(old, a_machine), "version A's machine exits", 30)
    drain(new, "deploy")


def test_the_warm_floor_is_replaced_on_a_version_change() -> None:
    old = balloons.App(version="A", env_allowlist=["ALLOWED_VAR"])
    new = balloons.App(version="B", env_allowlist=["ALLOWED_VAR"])
    for app in (old, new):
        pool_of(app, "floor", cap=1, idle=1, min_machines=1)
    first = bound(old, tasks.environment).options(pool="floor").submit()
    assert first.result(timeout=60)["env"]["BALLOONS_VERSION"] == "A"
    a_machine = machine_of(first)
    wait_for(lambda: idle_count(old, "floor") == 1, "version A's machine idles on the floor")
    old.supervisor().step(gc=False)
    assert old.store.pool_stats("floor")["machines"] == 1  # the floor is met by version A
    new.supervisor().step(gc=False)  # version B's supervisor replaces it
    wait_for(lambda: gone(old, a_machine), "version A's floor machine exits", 30)
    wait_for(lambda: idle_count(new, "floor") == 1, "version B's floor machine idles", 60)
    job = bound(new, tasks.environment).options(pool="floor").submit()
    assert job.result(timeout=60)["env"]["BALLOONS_VERSION"] == "B"
    assert job.info().attempts[-1].warm and machine_of(job) != a_machine
    new.pool("floor", max_machines=1, idle_timeout=1, min_machines=0)
    bound(new, tasks.add).options(pool="floor").submit(0, 0).result(timeout=60)
    drain(new, "floor")
