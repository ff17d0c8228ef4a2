"""A deploy on Fly (the emulator): the version is the image, and a job the old image's code
queued is re-routed by the new code's supervisor and runs on a machine of the new image, or,
when the new code cannot run it, fails ``version_gone`` (balloons.control.versions)."""

from __future__ import annotations

from typing import Any

import pytest

import balloons
from balloons import JobFailed, JobStatus
from tests import tasks
from tests.waiting import wait_for

from .conftest import FlyRig

OLD_IMAGE = "registry.fly.io/balloons-jobs:deployment-old"
NEW_IMAGE = "registry.fly.io/balloons-jobs:deployment-new"


def _deployed(rig: FlyRig) -> tuple[balloons.App, balloons.App]:
    return (
        rig.app(backend=rig.backend(image=OLD_IMAGE)),
        rig.app(backend=rig.backend(image=NEW_IMAGE)),
    )


def _ended(new: balloons.App, job_id: str) -> None:
    supervisor = new.supervisor(version_grace=0)

    def ended() -> bool:
        supervisor.step(gc=False)
        return new.job(job_id).info().status in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    wait_for(ended, f"job {job_id} to end", timeout=90)


def _old_add(a: int, b: int, c: int) -> int:  # the task as the old image defined it
    return a + b + c


def test_a_job_queued_by_the_old_image_runs_on_the_new_one(rig: FlyRig) -> None:
    old, new = _deployed(rig)
    assert old.compat().tag != new.compat().tag  # the image is the version
    task: balloons.Task[Any, Any] = balloons.Task(
        old, tasks.environment.fn, tasks.environment.name, tasks.environment.opts
    )
    job = task.options(delay=0.2).submit()  # delayed: no machine of the old image for it
    assert rig.stats()["calls"] == {}
    _ended(new, job.id)
    out = new.job(job.id).result(timeout=10)
    assert out["env"]["FLY_IMAGE_REF"] == NEW_IMAGE
    info = new.job(job.id).info()
    assert info.rerouted_from == old.compat().tag and info.note
    assert rig.emulator.machines[info.machine_id or ""].config["image"] == NEW_IMAGE


def test_a_job_the_new_image_cannot_run_fails_version_gone(rig: FlyRig) -> None:
    old, new = _deployed(rig)
    task: balloons.Task[Any, Any] = balloons.Task(old, _old_add, tasks.add.name, tasks.add.opts)
    job = task.options(delay=0.2).submit(1, 2, 3)
    _ended(new, job.id)
    with pytest.raises(JobFailed) as failed:
        new.job(job.id).result(timeout=10)
    assert failed.value.reason == "version_gone" and "no longer bind" in str(failed.value)
    assert rig.stats()["calls"] == {}  # no machine was created for it
