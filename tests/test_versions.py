"""Jobs queued by code of a version that no machine runs any more (a deploy) are never left
waiting (balloons.control.versions), on real local machines and a real Valkey: a job the old
code submitted (delayed, so that no machine of its version was launched for it) is re-routed
by the new code's supervisor once stranded for the grace, and runs on a machine of the new
version; a job whose task the new code no longer has, or whose arguments no longer bind, ends
FAILED with reason ``version_gone`` and says why. Two apps naming versions A and B stand for
the code before and after the deploy, as in test_compat_machines."""

from __future__ import annotations

from typing import Any

import pytest

import balloons
from balloons import JobFailed, JobStatus
from balloons.control.supervisor import Supervisor
from tests import tasks
from tests.test_worker import bound
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def apps(pool: str) -> tuple[balloons.App, balloons.App]:
    old = balloons.App(version="A", env_allowlist=["ALLOWED_VAR"])
    new = balloons.App(version="B", env_allowlist=["ALLOWED_VAR"])
    for app in (old, new):
        app.pool(pool, max_machines=1, idle_timeout=1)
    return old, new


def queued_by_old_code(task: balloons.Task[Any, Any], pool: str, *args: Any) -> str:
    """Submit ``task`` with the old code, delayed so that nothing launches a machine of its
    version for it (a step promotes it to the queue when due); its id."""
    job = task.options(pool=pool, delay=0.2).submit(*args)
    assert job.info().status is JobStatus.QUEUED
    return job.id


def status(app: balloons.App, job_id: str) -> JobStatus:
    return app.job(job_id).info().status


def stepped_until_ended(supervisor: Supervisor, app: balloons.App, job_id: str) -> None:
    def ended() -> bool:
        supervisor.step(gc=False)
        return status(app, job_id) in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    wait_for(ended, f"job {job_id} to end", timeout=90)


def test_a_job_queued_by_the_old_code_is_rerouted_to_the_new_version() -> None:
    old, new = apps("deploy-old")
    job_id = queued_by_old_code(bound(old, tasks.environment), "deploy-old")
    # Within the grace the new code's supervisor leaves it queued (its own version's waiters
    # and supervisor may still launch a machine for it), and launches nothing of its own.
    patient = new.supervisor(version_grace=3600)
    for _ in range(3):
        assert not patient.step(gc=False).versions
    assert status(new, job_id) is JobStatus.QUEUED
    assert new.store.pool_stats("deploy-old")["machines"] == 0
    # Once stranded for the grace, it is re-routed and runs on a machine of version B.
    supervisor = new.supervisor(version_grace=0)
    stepped_until_ended(supervisor, new, job_id)
    done = new.job(job_id)
    assert done.result(timeout=10)["env"]["BALLOONS_VERSION"] == "B"
    info = done.info()
    assert info.compat == new.compat().tag
    assert info.rerouted_from == old.compat().tag
    assert info.note and "re-routed" in info.note


def _old_add(a: int, b: int, c: int) -> int:  # the task as the old code defined it
    return a + b + c


def _removed() -> None:  # a task the new code no longer has
    return None


@pytest.mark.parametrize(
    ("name", "fn", "args", "why"),
    [
        ("tests.tasks:add", _old_add, (1, 2, 3), "no longer bind"),
        ("tests.tasks:removed_in_b", _removed, (), "no task tests.tasks:removed_in_b"),
    ],
)
def test_a_job_the_new_code_cannot_run_fails_with_version_gone(
    name: str, fn: Any, args: tuple[Any, ...], why: str
) -> None:
    old, new = apps("deploy-gone")
    job_id = queued_by_old_code(balloons.Task(old, fn, name, tasks.add.opts), "deploy-gone", *args)
    supervisor = new.supervisor(version_grace=0)
    stepped_until_ended(supervisor, new, job_id)
    with pytest.raises(JobFailed) as failed:
        new.job(job_id).result(timeout=10)
    assert failed.value.reason == "version_gone"
    assert why in str(failed.value) and "queued by code of a version" in str(failed.value)
    info = new.job(job_id).info()
    assert info.status is JobStatus.FAILED and info.reason == "version_gone"
    assert new.store.pool_stats("deploy-gone")["machines"] == 0  # nothing ran it


def test_supervise_once_says_what_it_did_with_jobs_of_a_version_gone() -> None:
    import json

    from click.testing import CliRunner

    from balloons.cli import main as cli

    out = CliRunner().invoke(cli, ["supervise", "--once", "--version-grace", "0"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["versions"] == []
    bad = CliRunner().invoke(cli, ["supervise", "--once", "--version-grace", "nan"])
    assert bad.exit_code != 0 and "nan" in bad.output
