"""``balloons jobs``, ``machines`` and ``pools`` as real subprocesses: on an 80-column terminal a
table fits, ids whole; piped, or with ``--wide``, every column is printed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.cells import cell_len

from balloons.cli.jobs import JOB_COLUMNS
from balloons.cli.machines import COST_COLUMNS, MACHINE_COLUMNS, POOL_COLUMNS
from balloons.job import Job
from tests import tasks
from tests.clirun import balloons, on_terminal, running_job

pytestmark = pytest.mark.machines


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Job[str]]:
    """A running job (its machine up), after a succeeded and a failed one."""
    assert tasks.add.submit(1, 2).result(timeout=30) == 3
    failed = tasks.fail.submit("boom")
    with contextlib.suppress(Exception):
        failed.result(timeout=30)
    with running_job(tmp_path / "go") as job:
        yield job


def _headers(out: str) -> list[str]:
    return out.splitlines()[0].replace("┃", " ").split()


def _machine_of(job: Job[str]) -> str:
    machine = job.info().machine_id
    assert machine
    return machine


def test_tables_fit_an_80_column_terminal_with_every_id_whole(running: Job[str]) -> None:
    ids = [j.id for j in tasks.app.jobs(limit=10)]
    assert len(ids) == 3
    ran = on_terminal("jobs", columns=80)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines and max(cell_len(line) for line in lines) <= 80, ran.out
    for job_id in ids:
        assert job_id in ran.out
    assert {"id", "status", "task"} <= set(_headers(ran.out))
    # Columns dropped, never cut: no ellipsis anywhere.
    assert "…" not in ran.out

    machine = _machine_of(running)
    ran = on_terminal("machines", columns=80)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert max(cell_len(line) for line in lines) <= 80, ran.out
    assert machine in ran.out and running.id in ran.out and "…" not in ran.out
    assert {"id", "state", "job"} <= set(_headers(ran.out))

    ran = on_terminal("pools", columns=40)
    assert ran.code == 0, ran.err
    assert max(cell_len(line) for line in ran.out.splitlines()) <= 40, ran.out
    assert "default" in ran.out.split() and "…" not in ran.out

    ran = on_terminal("cost", columns=60)
    assert ran.code == 0, ran.err
    tables = [line for line in ran.out.splitlines() if not line.startswith("warm machines")]
    assert max(cell_len(line) for line in tables) <= 60, ran.out
    assert tasks.add.name in ran.out.split() and "…" not in ran.out
    assert {"task", "jobs", "USD"} <= set(ran.out.split())
    assert "efficiency" not in ran.out  # dropped first


def test_piped_or_wide_tables_have_every_column(running: Job[str]) -> None:
    ids = [j.id for j in tasks.app.jobs(limit=10)]
    machine = _machine_of(running)
    for ran in (balloons("jobs", env={"COLUMNS": "80"}), on_terminal("jobs", "--wide", columns=80)):
        assert ran.code == 0, ran.err
        assert _headers(ran.out) == [c.name for c in JOB_COLUMNS]
        assert all(job_id in ran.out for job_id in ids) and machine in ran.out
        assert "tests.tasks:print_then_wait" in ran.out and "…" not in ran.out
    for ran in (
        balloons("machines", env={"COLUMNS": "80"}),
        on_terminal("machines", "--wide", columns=80),
    ):
        assert ran.code == 0, ran.err
        assert _headers(ran.out) == [c.name for c in MACHINE_COLUMNS]
        assert machine in ran.out and running.id in ran.out and "…" not in ran.out
    ran = balloons("pools", env={"COLUMNS": "30"})
    assert _headers(ran.out) == [c.name for c in POOL_COLUMNS]
    for ran in (balloons("cost", env={"COLUMNS": "30"}), on_terminal("cost", "--wide", columns=30)):
        task_table = ran.out.split("\n\n")[-1] if "\n\n" in ran.out else ran.out
        assert [c.name for c in COST_COLUMNS][1:] == _headers(task_table)[1:], ran.out


def test_a_narrow_terminal_drops_columns_in_the_documented_order(running: Job[str]) -> None:
    wide = balloons("jobs").out
    width = max(cell_len(line) for line in wide.splitlines())
    order = [c.name for c in sorted(JOB_COLUMNS, key=lambda c: c.drop or 0) if c.drop]
    kept = on_terminal("jobs", columns=width).out
    assert _headers(kept) == [c.name for c in JOB_COLUMNS]  # it fits: nothing dropped
    narrower = on_terminal("jobs", columns=width - 1).out
    assert _headers(narrower) == [c.name for c in JOB_COLUMNS if c.name != order[0]]
    tight = on_terminal("jobs", columns=40).out  # only what is never dropped: id and status
    assert _headers(tight) == ["id", "status"]
    assert running.id in tight


def test_tables_show_task_text_from_redis_as_text() -> None:
    job = tasks.add.submit(1, 2)
    assert job.result(timeout=30) == 3
    record = tasks.app.store.keys(job.id).job
    tasks.app.store.redis.hset(record, "reason", "\x1b]0;x\x07[bold]forged[/bold]")
    for ran in (balloons("jobs"), on_terminal("jobs", "--wide", columns=200)):
        assert ran.code == 0, ran.err
        assert "\x07" not in ran.out and "␛]0;x" in ran.out
        assert "[bold]forged[/bold]" in ran.out
