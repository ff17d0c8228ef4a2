"""The command line, through click's runner and as a real subprocess."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from balloons.cli import main as cli
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines

ROOT = Path(__file__).parent.parent


def test_submit_then_status_result_and_jobs() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["submit", "tests.tasks:add", "2", "40"])
    assert out.exit_code == 0, out.output
    job_id = out.output.strip()
    assert tasks.app.job(job_id).result(timeout=30) == 42
    out = runner.invoke(cli, ["result", job_id])
    assert out.exit_code == 0 and out.output.strip() == "42"
    out = runner.invoke(cli, ["status", job_id, "--json"])
    data = json.loads(out.output)
    assert data["status"] == "SUCCEEDED" and data["attempts"][0]["outcome"] == "SUCCEEDED"
    out = runner.invoke(cli, ["status", job_id])
    assert "SUCCEEDED" in out.output and "attempt 1" in out.output
    out = runner.invoke(cli, ["jobs", "--json"])
    assert [j["id"] for j in json.loads(out.output)] == [job_id]
    out = runner.invoke(cli, ["jobs"])
    assert out.exit_code == 0 and job_id in out.output


def test_submit_wait_with_kwargs_and_failure() -> None:
    runner = CliRunner()
    out = runner.invoke(
        cli, ["submit", "tests.tasks:echo", "1", "x", "-k", 'opt={"a": 1}', "--wait"]
    )
    assert out.exit_code == 0, out.output
    assert "SUCCEEDED" in out.stderr
    assert json.loads(out.stdout) == {"args": [1, "x"], "kwargs": {"opt": {"a": 1}}}
    out = runner.invoke(cli, ["submit", "tests.tasks:fail", "nope", "--wait"])
    assert out.exit_code == 1
    assert "ValueError: nope" in out.output


def test_bad_input_is_explained() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["submit", "tests.tasks"])
    assert out.exit_code == 2 and "expected MODULE:FUNCTION" in out.output
    out = runner.invoke(cli, ["submit", "tests.tasks:not_a_task"])
    assert out.exit_code == 2 and "not a task registered" in out.output
    out = runner.invoke(cli, ["submit", "tests.tasks:echo", "-k", "novalue"])
    assert out.exit_code == 2 and "KEY=VALUE" in out.output
    out = runner.invoke(cli, ["status", "default.01jd3x9k2m8vq4t7w0c5r6y1zh"])
    assert out.exit_code == 4 and "not found" in out.output
    out = runner.invoke(cli, ["status", "garbage"])
    assert out.exit_code == 2 and "not a balloons job id" in out.output


def test_python_dash_m_balloons_runs_the_same_cli() -> None:
    for args in (
        ["--help"],
        ["submit", "--help"],
        ["dev", "--help"],
        ["worker", "--help"],
        ["fly-emulator", "--help"],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "balloons", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr
        assert "Usage:" in out.stdout or "usage:" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "balloons", "fly-emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "--port" in out.stdout and "--secret" in out.stdout


def test_logs_wait_retry_and_cost_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    job = tasks.chatty.submit(2, 2)
    out = runner.invoke(cli, ["wait", job.id])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "2"
    assert "SUCCEEDED" in out.stderr and "100%" in out.stderr
    out = runner.invoke(cli, ["status", job.id, "--json"])
    data = json.loads(out.stdout)
    assert data["progress"] == {"fraction": 1.0, "note": "step 2"}
    assert data["cost"]["usd"] == job.cost().usd > 0
    out = runner.invoke(cli, ["status", job.id])
    assert "progress: 100% step 2" in out.stdout and "cost: $" in out.stdout
    out = runner.invoke(cli, ["logs", job.id])
    assert out.exit_code == 0
    printed = out.stdout.splitlines()
    assert printed[0].endswith("#1 out line 0") and "err to stderr" in out.stdout
    out = runner.invoke(cli, ["logs", job.id, "--tail", "1", "--json"])
    (last,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert last["attempt"] == 1 and last["source"] in ("out", "err") and last["time"] > 0
    out = runner.invoke(cli, ["logs", job.id, "-f"])  # ended: prints everything and returns
    assert out.exit_code == 0 and out.stdout.splitlines() == printed
    out = runner.invoke(cli, ["logs", "default.01jd3x9k2m8vq4t7w0c5r6y1zh"])
    assert out.exit_code == 4 and "not found" in out.output

    out = runner.invoke(cli, ["retry", job.id, "--json"])
    assert out.exit_code == 0, out.output
    new = json.loads(out.stdout)
    assert new["retried"] == job.id and new["id"] != job.id
    assert tasks.app.job(new["id"]).result(timeout=30) == 2

    out = runner.invoke(cli, ["cost", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["tasks"]["tests.tasks:chatty"]["jobs"] == 2
    assert data["total"]["usd"] > 0 and data["total"]["efficiency"] >= 1.0
    assert data["prices"]["source"].startswith("https://fly.io/")
    out = runner.invoke(cli, ["cost"])
    assert out.exit_code == 0 and "tests.tasks:chatty" in out.stdout and "efficiency" in out.stdout


def test_follow_prints_lines_of_a_running_job(tmp_path: Path) -> None:
    flag = tmp_path / "go"
    job = tasks.print_then_wait.submit(str(flag))
    proc = subprocess.Popen(
        [sys.executable, "-m", "balloons", "logs", job.id, "-f"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.rstrip().endswith("#1 out waiting for the flag")
        assert job.status().value == "RUNNING"
        flag.write_text("")
        rest = proc.stdout.read()
        assert rest.rstrip().endswith("#1 out flag seen")
        assert proc.wait(30) == 0
    finally:
        flag.write_text("")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_machines_jobs_filters_cancel_and_pools(tmp_path: Path) -> None:
    runner = CliRunner()
    flag = tmp_path / "go"
    running = tasks.print_then_wait.submit(str(flag))
    failed = tasks.fail.submit("boom")
    with contextlib.suppress(Exception):
        failed.result(timeout=30)
    wait_for(lambda: running.status().value == "RUNNING", "the job to run")
    out = runner.invoke(cli, ["machines", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    mine = [r for r in rows if r["job"] == running.id]
    assert mine and mine[0]["state"] == "started" and mine[0]["slot"] == "running"
    assert mine[0]["cpus"] == 1 and mine[0]["memory_mb"] == 256
    out = runner.invoke(cli, ["machines"])
    assert out.exit_code == 0 and mine[0]["id"] in out.stdout
    out = runner.invoke(cli, ["jobs", "--status", "failed", "--task", "fail", "--json"])
    assert [j["id"] for j in json.loads(out.stdout)] == [failed.id]
    out = runner.invoke(cli, ["pools", "--json"])
    assert any(p["pool"] == "default" for p in json.loads(out.stdout))
    out = runner.invoke(cli, ["cancel", running.id, "--grace", "2"])
    assert out.exit_code == 0 and "cancelled" in out.stdout
    assert running.status().value == "CANCELLED"
    out = runner.invoke(cli, ["cancel", running.id])
    assert out.exit_code == 1 and "already ended" in out.stdout
    flag.write_text("")


def test_status_shows_each_failed_attempts_message(tmp_path: Path) -> None:
    job = tasks.flaky.submit(str(tmp_path / "n"), 1)
    assert job.result(timeout=60) == 2
    out = CliRunner().invoke(cli, ["status", job.id])
    assert out.exit_code == 0, out.output
    assert "(task_error)" in out.stdout
    assert "attempt 1 fails" in [line.strip() for line in out.stdout.splitlines()]


def test_status_says_why_a_job_failed_or_is_invalid_and_shows_it_safely() -> None:
    failed = tasks.fail.submit("nope")
    with contextlib.suppress(Exception):
        failed.result(timeout=30)
    out = CliRunner().invoke(cli, ["status", failed.id])
    assert out.exit_code == 0, out.output
    assert "reason: task_error" in out.stdout

    # Its status altered in Redis: the job is INVALID, and the text says why.
    job = tasks.add.submit(1, 2)
    assert job.result(timeout=30) == 3
    r, record = tasks.app.store.redis, tasks.app.store.keys(job.id).job
    r.hset(record, "status", "PWNED")
    out = CliRunner().invoke(cli, ["status", job.id])
    assert out.exit_code == 0, out.output
    assert "reason: record_invalid" in out.stdout
    assert "status 'PWNED' is not a job status" in out.stdout

    # A reason written by someone else is shown as text: no escape sequence, no markup.
    r.hset(record, mapping={"status": "SUCCEEDED", "reason": "\x1b]0;x\x07[bold]forged[/bold]"})
    out = CliRunner().invoke(cli, ["status", job.id])
    assert out.exit_code == 0, out.output
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert "[bold]forged[/bold]" in out.stdout
