"""``balloons cancel`` of a chain or group, through the real CLI (a subprocess)."""

from __future__ import annotations

import pytest

import balloons
from balloons import FlowFailed, JobStatus
from tests import tasks
from tests.clirun import balloons as run_cli
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def test_cancel_of_a_chain_cancels_its_running_link_and_what_follows() -> None:
    job = balloons.chain(tasks.sleep.s(30), tasks.add.s(1), tasks.add.s(2)).submit()
    first = job.jobs()[0]
    wait_for(lambda: first.status() is JobStatus.RUNNING, "the first link runs")
    ran = run_cli("cancel", job.id, "--grace", "1")
    assert (ran.code, ran.out.strip()) == (0, f"{job.id} cancelled"), ran
    with pytest.raises(FlowFailed) as failed:
        job.result(timeout=30)
    assert (failed.value.status, failed.value.reason) == ("CANCELLED", "cancelled")
    wait_for(lambda: first.status() is JobStatus.CANCELLED, "the running link is cancelled")
    assert [m.job_id is None for m in job.info().members] == [False, True, True]
    again = run_cli("cancel", job.id)
    assert again.code == 1 and f"{job.id} had already ended (CANCELLED)" in again.out, again


def test_cancel_of_a_group_cancels_its_members_and_its_callback_never_runs() -> None:
    job = balloons.group(tasks.sleep.s(30), tasks.sleep.s(30), callback=tasks.echo).submit()
    members = job.jobs()
    wait_for(lambda: all(m.status() is JobStatus.RUNNING for m in members), "members run")
    ran = run_cli("cancel", job.id, "--grace", "1")
    assert ran.code == 0, ran
    assert job.status() is JobStatus.CANCELLED
    for m in members:
        wait_for(lambda m=m: m.status() is JobStatus.CANCELLED, f"{m.id} is cancelled")
    info = job.info()
    assert info.callback is not None and info.callback.job_id is None


def test_cancel_of_an_unknown_flow_says_so() -> None:
    gone = run_cli("cancel", "chain-01m96h4wr0wqzyyqz3cff5n4x3")
    assert gone.code == 4 and "not found" in (gone.out + gone.err), gone
    bad = run_cli("cancel", "chain-nope")
    assert bad.code == 2 and "chain or group id" in bad.err, bad
