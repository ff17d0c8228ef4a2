"""The command line, through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from balloons.cli import main as cli
from tests import tasks

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
    assert out.exit_code == 1 and "not found" in out.output
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
