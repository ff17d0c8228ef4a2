"""Chains on FlyBackend against the emulator served over real HTTP: the machines advance
them. A Fly machine holds no API token, so it launches nothing: the machine that ends a link
takes the next one itself (its pool's, whatever its idle timeout), and a link it cannot take
waits for a supervisor step."""

from __future__ import annotations

from typing import Any

import balloons
from balloons import JobStatus
from tests import tasks
from tests.waiting import wait_for

from .conftest import FlyRig

CREATE = "POST /v1/apps/{app_name}/machines"


def on(app: balloons.App, task: balloons.Task[Any, Any]) -> balloons.Task[Any, Any]:
    """``task`` submitted through ``app`` (the module's tasks belong to the default app)."""
    return balloons.Task(app, task.fn, task.name, task.opts)


def _ended(job: balloons.ChainJob[Any]) -> JobStatus:
    """The chain's status once ended, read from its record only (no waiter's check)."""
    return wait_for(lambda: job.status() if job.status().terminal else None, f"{job.id} ends")


def test_a_chain_of_three_links_is_advanced_by_its_machine(rig: FlyRig) -> None:
    app = rig.app()  # no supervisor, and nobody waits on the chain until it has ended
    add = on(app, tasks.add)
    job = balloons.chain(add.s(1, 2), add.s(10), add.s(100)).submit()
    assert _ended(job) is JobStatus.SUCCEEDED
    assert job.result(timeout=5) == 113
    links = job.jobs()
    assert [j.result(timeout=5) for j in links] == [3, 13, 113]
    # One machine, created for the first link by the client, advanced the chain and took
    # each next link itself (the pool has no idle timeout).
    assert len({j.info().machine_id for j in links}) == 1
    assert rig.stats()["calls"] == {CREATE: 1}
    rig.wait_all_destroyed()


def test_a_link_a_fly_machine_cannot_take_waits_for_a_supervisor_step(rig: FlyRig) -> None:
    app = rig.app()
    app.pool("other", idle_timeout=0)
    job = balloons.chain(
        on(app, tasks.add).s(1, 2), on(app, tasks.add).options(pool="other").s(10)
    ).submit()
    wait_for(lambda: len(job.jobs()) == 2, "the machine submits the second link")
    second = job.jobs()[1]
    assert second.id.startswith("other.")
    assert second.status() is JobStatus.QUEUED  # and no machine launched for it
    assert rig.stats()["calls"] == {CREATE: 1}
    app.supervisor().step(gc=False)  # the step launches its machine
    assert _ended(job) is JobStatus.SUCCEEDED
    assert job.result(timeout=5) == 13
    assert rig.stats()["calls"] == {CREATE: 2}
    rig.wait_all_destroyed()
