"""Chains and groups end to end, against a real Valkey and real local machines: results passed
along, a chain outliving the process that submitted it, failures and cancels, and the
supervisor advancing a flow whose advance its machine missed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

import balloons
from balloons import FlowFailed, JobStatus
from balloons.store.keys import flow_key, flows_key
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines
ROOT = Path(__file__).resolve().parent.parent


def test_a_chain_passes_each_result_to_the_next_link() -> None:
    job = balloons.chain(tasks.add.s(1, 2), tasks.add.s(10), tasks.add.s(100)).submit()
    assert job.result(timeout=60) == 113
    assert job.status() is JobStatus.SUCCEEDED
    info = job.info()
    assert (info.kind, info.status) == ("chain", JobStatus.SUCCEEDED)
    assert [m.task for m in info.members] == ["tests.tasks:add"] * 3
    assert [m.status for m in info.members] == [JobStatus.SUCCEEDED] * 3
    assert [j.result(timeout=5) for j in job.jobs()] == [3, 13, 113]
    # The machine that ran a link submitted the next one for itself to take: it launched none.
    assert len({j.info().machine_id for j in job.jobs()}) == 1


def test_a_chain_outlives_the_process_that_submitted_it() -> None:
    code = (
        "import balloons\nfrom tests import tasks\n"
        "job = balloons.chain(tasks.sleep.s(0.5), tasks.add.s(1), tasks.add.s(2)).submit()\n"
        "print(job.id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    flow_id = out.stdout.strip().splitlines()[-1]
    # The submitter has exited: another process reads the result.
    assert balloons.ChainJob(tasks.app, flow_id).result(timeout=60) == 3.5


def test_a_failing_link_stops_the_chain_with_its_reason(r: redis.Redis) -> None:
    job = balloons.chain(tasks.add.s(1, 2), tasks.fail.s(), tasks.add.s(100)).submit()
    with pytest.raises(FlowFailed) as failed:
        job.result(timeout=60)
    exc = failed.value
    assert (exc.job_id, exc.status, exc.reason) == (job.id, "FAILED", "task_error")
    assert (exc.error_type, exc.error_message) == ("ValueError", "3")
    info = job.info()
    assert info.status is JobStatus.FAILED
    assert exc.member == info.members[1].job_id
    assert info.members[2].job_id is None  # the third link was never submitted
    assert len(job.jobs()) == 2
    assert not r.zscore(flows_key("balloons"), job.id)  # no longer advanced


def test_cancelling_a_chain_cancels_its_running_link_and_what_follows() -> None:
    job = balloons.chain(tasks.sleep.s(30), tasks.add.s(1)).submit()
    first = job.jobs()[0]
    wait_for(lambda: first.status() is JobStatus.RUNNING, "the first link runs")
    assert job.cancel() is True
    assert job.cancel() is False  # once
    with pytest.raises(FlowFailed) as failed:
        job.result(timeout=30)
    assert (failed.value.status, failed.value.reason) == ("CANCELLED", "cancelled")
    wait_for(lambda: first.status() is JobStatus.CANCELLED, "the running link is cancelled")
    tasks.app.supervisor().step(gc=False)  # a step after the cancel submits nothing more
    assert len(job.jobs()) == 1


def test_a_group_runs_its_callback_with_the_results_in_order() -> None:
    job = balloons.group(
        tasks.add.s(1, 2), tasks.sleep.s(0.3), tasks.add.s(3, 4), callback=tasks.echo.s("sum")
    ).submit()
    assert job.result(timeout=60) == {"args": ["sum", [3, 0.3, 7]], "kwargs": {}}
    info = job.info()
    assert info.kind == "group" and len(info.members) == 3
    assert info.callback is not None and info.callback.status is JobStatus.SUCCEEDED


def test_a_group_without_callback_gives_the_list_of_results() -> None:
    job = balloons.group(tasks.add.s(1, 1), tasks.add.s(2, 2)).submit()
    assert job.result(timeout=60) == [2, 4]


def test_a_failed_member_fails_the_group_and_its_callback_never_runs() -> None:
    job = balloons.group(tasks.add.s(1, 2), tasks.fail.s("boom"), callback=tasks.echo.s()).submit()
    with pytest.raises(FlowFailed) as failed:
        job.result(timeout=60)
    assert (failed.value.reason, failed.value.error_message) == ("task_error", "boom")
    info = job.info()
    assert info.status is JobStatus.FAILED
    assert info.callback is not None and info.callback.job_id is None


def test_a_group_may_give_its_callback_the_failures() -> None:
    job = balloons.group(
        tasks.add.s(1, 2), tasks.fail.s("boom"), callback=tasks.echo.s(), return_exceptions=True
    ).submit()
    got = job.result(timeout=60)
    ok, failed = got["args"][0]
    assert ok == 3
    assert (failed["status"], failed["reason"], failed["error_message"]) == (
        "FAILED",
        "task_error",
        "boom",
    )


def test_the_supervisor_advances_a_chain_its_machine_did_not(r: redis.Redis) -> None:
    """The machine that ran the first link finds no record when it advances (hidden here, as
    if it had died between its FINISH and its advance): a supervisor step advances it."""
    job = balloons.chain(tasks.sleep.s(1.0), tasks.add.s(2)).submit()
    key = flow_key("balloons", job.id)
    first = job.jobs()[0]
    r.rename(key, key + ":hidden")
    wait_for(lambda: first.status() is JobStatus.SUCCEEDED, "the first link ends")
    wait_for(lambda: r.zscore(flows_key("balloons"), job.id) is None, "its advance was missed")
    r.rename(key + ":hidden", key)
    r.zadd(flows_key("balloons"), {job.id: 1})
    assert len(job.jobs()) == 1  # nothing advanced it
    report = tasks.app.supervisor().step(gc=False)
    assert job.id in report.advanced
    assert job.result(timeout=60) == 3.0


def test_calls_that_cannot_follow_are_refused_before_anything_is_stored(
    r: redis.Redis,
) -> None:
    with pytest.raises(TypeError, match="link 1 cannot take the result"):
        balloons.chain(tasks.add.s(1, 2), tasks.add.s(1, 2))
    with pytest.raises(TypeError, match="missing"):
        balloons.chain(tasks.add.s(1), tasks.add.s(2))
    with pytest.raises(TypeError, match="callback cannot take"):
        balloons.group(tasks.add.s(1, 2), callback=tasks.add.s(1, 2))
    with pytest.raises(balloons.ConfigError, match="per-call options"):
        balloons.chain(tasks.add.options(delay=5).s(1, 2))
    with pytest.raises(TypeError, match="at least one"):
        balloons.chain()
    with pytest.raises(TypeError):
        tasks.add.s(1).submit()  # a partial call is only a link
    assert r.keys("*flow*") == []


def test_a_flow_record_altered_in_redis_is_invalid_and_never_advanced(r: redis.Redis) -> None:
    job = balloons.chain(tasks.sleep.s(0.2), tasks.add.s(1)).submit()
    key = flow_key("balloons", job.id)
    r.hset(key, "spec", r.hget(key, "spec").replace(b"add", b"fail"))
    r.hset(key, "job:7", "not a job id")
    assert job.status() is JobStatus.INVALID
    info = job.info()
    assert info.status is JobStatus.INVALID and info.problems
    tasks.app.supervisor().step(gc=False)
    with pytest.raises(FlowFailed) as failed:
        job.result(timeout=10)
    assert failed.value.reason == "record_invalid"
    assert len(job.jobs()) == 1


def test_balloons_status_shows_a_flow_as_one_item_with_its_members() -> None:
    from click.testing import CliRunner

    from balloons.cli import main as cli

    job = balloons.chain(tasks.add.s(1, 2), tasks.fail.s(), tasks.add.s(100)).submit()
    with pytest.raises(FlowFailed):
        job.result(timeout=60)
    runner = CliRunner()
    out = runner.invoke(cli, ["status", job.id, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert (data["kind"], data["status"], data["reason"]) == ("chain", "FAILED", "task_error")
    assert [m["status"] for m in data["members"]] == ["SUCCEEDED", "FAILED", None]
    out = runner.invoke(cli, ["status", job.id], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == [job.id, "chain", "FAILED"]
    assert "reason: task_error (ValueError: 3)" in out.output
    assert lines[-1].split()[1:] == ["tests.tasks:add", "-", "not", "submitted"]
    assert [ln.split()[-1] for ln in lines[-3:-1]] == ["SUCCEEDED", "FAILED"]
    out = runner.invoke(cli, ["status", "chain-nope"])
    assert out.exit_code == 2 and "chain or group id" in out.output
    gone = "group-" + job.id.partition("-")[2]
    out = runner.invoke(cli, ["status", gone])
    assert out.exit_code != 0 and "not found" in out.output


def test_a_member_that_ends_before_its_id_is_recorded_still_advances_its_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race of a member whose job ends (and whose machine's advance finds nothing
    recorded yet) before its advancer records its id: that advancer must see it ended."""
    from balloons.control import flows as control

    real = control.advance
    monkeypatch.setattr(control, "advance", lambda app, flow_id: False)
    job = balloons.chain(tasks.add.s(1, 2), tasks.add.s(10)).submit()  # stored, not started
    monkeypatch.setattr(control, "advance", real)
    assert job.jobs() == []
    ulid = job.id.partition("-")[2]
    first = tasks.add.options(key=f"chain:{ulid}:0").submit(1, 2)  # as if submitted already
    assert first.result(timeout=60) == 3
    assert control.advance(tasks.app, job.id) is True  # records it, sees it ended, goes on
    assert job.jobs()[0] == first
    assert job.result(timeout=60) == 13


def test_a_link_may_be_a_task_alone_and_the_twins_are_awaitable() -> None:
    async def run() -> object:
        job = await balloons.chain(tasks.add.s(2, 3), tasks.echo).submit_async()
        return await job.result_async(timeout=60)

    assert asyncio.run(run()) == {"args": [5], "kwargs": {}}


def test_advancers_racing_submit_each_member_once(
    monkeypatch: pytest.MonkeyPatch, r: redis.Redis
) -> None:
    from balloons.control import flows as control

    real = control.advance
    monkeypatch.setattr(control, "advance", lambda app, flow_id: False)
    job = balloons.group(*(tasks.add.s(i, i) for i in range(5)), callback=tasks.echo).submit()
    monkeypatch.setattr(control, "advance", real)
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        real(tasks.app, job.id)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert job.result(timeout=60) == {"args": [[0, 2, 4, 6, 8]], "kwargs": {}}
    stored = [k for k in r.keys("balloons:*:job:*") if b":machine:" not in k]
    assert len(stored) == 6  # five members and one callback, whoever submitted them


@pytest.mark.parametrize(
    "field", ["spec", "sig", "end", "job:0", "job:1", "job:cb", "job:x", "other"]
)
def test_every_reader_survives_any_value_in_a_flow_record(r: redis.Redis, field: str) -> None:
    job = balloons.chain(tasks.add.s(1, 1), tasks.add.s(1)).submit()
    assert job.result(timeout=60) == 3
    key = flow_key("balloons", job.id)
    values = [
        b"",
        b"\xff\xfe",
        b"nan",
        b"{}",
        b"[]",
        b"x" * 100_000,
        b'{"status":"SUCCEEDED"}',
        b'{"status":"FAILED","reason":7,"at":1e300,"member":["x"]}',
        b"default.nope",
    ]
    for value in values:
        r.hset(key, field, value)
        info = job.info()
        assert info.id == job.id
        assert job.status() in set(JobStatus)
        for m in info.members:
            assert m.job_id is None or m.job_id.startswith("default.")
        tasks.app.supervisor().step(gc=False)
        try:
            job.result(timeout=0.5)
        except (FlowFailed, balloons.ResultTimeout, balloons.JobFailed):
            pass


def test_a_machine_submits_the_next_link_with_its_own_code_version() -> None:
    """The client's code version is a digest of every task module it imported (here one
    more than the machine imports): the link a machine submits must carry the version of the
    machines running the chain, or none of them would take it."""
    import tests.log_tasks  # noqa: F401  (its tasks change this process's code version)

    job = balloons.chain(tasks.add.s(1, 2), tasks.add.s(10)).submit()
    assert job.result(timeout=60) == 13


def test_members_are_submitted_through_the_advancing_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process may register a task's name again with another app (of another Redis): the
    advancer submits through its own app, never through the one registered last."""
    from balloons import registry

    elsewhere = balloons.App(redis_url="redis://127.0.0.1:1/0", secret="s" * 32)
    again = balloons.Task(elsewhere, tasks.add.fn, tasks.add.name, tasks.add.opts)
    monkeypatch.setitem(registry.TASKS, tasks.add.name, again)
    job = balloons.chain(tasks.add.s(1, 2), tasks.add.s(10)).submit()
    assert job.result(timeout=60) == 13
    elsewhere.close()
