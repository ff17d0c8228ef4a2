"""Chains with no supervisor and nobody waiting on them, against a real Valkey and real local
machines: each link is started by the machine that ended the one before, whether it takes
it itself (its pool, an isolation that lets it) or launches a machine for it."""

from __future__ import annotations

import pytest

import balloons
from balloons import JobStatus
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def _ends(job: balloons.ChainJob[int]) -> JobStatus:
    """The chain's status once ended, read from its record only: no waiter's check runs."""
    return wait_for(lambda: job.status() if job.status().terminal else None, f"{job.id} ends")


def test_a_link_in_another_pool_starts_with_no_supervisor() -> None:
    job = balloons.chain(tasks.add.s(1, 2), tasks.add.options(pool="solo").s(10)).submit()
    assert _ends(job) is JobStatus.SUCCEEDED
    assert [j.id.partition(".")[0] for j in job.jobs()] == ["default", "solo"]
    assert job.result(timeout=5) == 13


def test_links_of_a_pool_with_a_machine_per_job_start_with_no_supervisor() -> None:
    add = tasks.add.options(pool="iso-machine")
    job = balloons.chain(add.s(1, 2), add.s(10), add.s(100)).submit()
    assert _ends(job) is JobStatus.SUCCEEDED
    machines = [j.info().machine_id for j in job.jobs()]
    assert len(set(machines)) == 3  # each link on a machine of its own
    assert job.result(timeout=5) == 113


def test_links_of_a_pool_with_no_idle_timeout_start_with_no_supervisor() -> None:
    add = tasks.add.options(pool="spares")
    job = balloons.chain(add.s(1, 2), add.s(10), add.s(100)).submit()
    assert _ends(job) is JobStatus.SUCCEEDED
    assert job.result(timeout=5) == 113
