"""``balloons jobs`` filters, ``balloons pools`` and ``balloons dashboard``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from balloons.cli import main as cli
from tests import tasks
from tests.dashboard.conftest import TOKEN
from tests.ports import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.machines

ROOT = Path(__file__).parent.parent.parent


def test_jobs_filters_by_status_task_and_pool() -> None:
    ok = tasks.add.submit(1, 2)
    other = tasks.add.options(pool="other").submit(3, 4)
    bad = tasks.fail.submit("nope")
    ok.result(timeout=30), other.result(timeout=30)
    with pytest.raises(Exception, match="nope"):
        bad.result(timeout=30)
    runner = CliRunner()

    def ids(*args: str) -> list[str]:
        out = runner.invoke(cli, ["jobs", "--json", *args])
        assert out.exit_code == 0, out.output
        return [j["id"] for j in json.loads(out.output)]

    assert ids() == [bad.id, other.id, ok.id]
    assert ids("--status", "failed") == [bad.id]
    assert ids("--task", "add") == [other.id, ok.id]
    assert ids("--task", "tests.tasks:fail") == [bad.id]
    assert ids("--pool", "other") == [other.id]
    assert ids("--pool", "other", "--status", "FAILED") == []
    assert ids("--limit", "1") == [bad.id]
    table = runner.invoke(cli, ["jobs", "--status", "failed"])
    assert table.exit_code == 0 and bad.id in table.output and ok.id not in table.output
    bad_pool = runner.invoke(cli, ["jobs", "--pool", "Bad Pool"])
    assert bad_pool.exit_code == 2 and "'Bad Pool' is not a pool name" in bad_pool.output
    bad_limit = runner.invoke(cli, ["jobs", "--limit", "0"])
    assert bad_limit.exit_code == 2 and "0 is not in the range 1<=x<=10000" in bad_limit.output


def test_pools_shows_jobs_by_status() -> None:
    tasks.add.submit(1, 2).result(timeout=30)
    tasks.add.options(pool="other").submit(1, 2).result(timeout=30)
    runner = CliRunner()
    out = runner.invoke(cli, ["pools", "--json"])
    assert out.exit_code == 0, out.output
    data = {p["pool"]: p for p in json.loads(out.output)}
    assert set(data) == {"default", "other"}
    assert data["default"]["jobs"]["SUCCEEDED"] == 1 and data["default"]["queued"] == 0
    table = runner.invoke(cli, ["pools"])
    assert table.exit_code == 0 and "other" in table.output and "queued" in table.output


def test_dashboard_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    out = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0", "--port", "1"])
    assert out.exit_code == 2  # a usage error: --host beyond loopback needs a token
    assert "refusing to serve the dashboard on '0.0.0.0' without a token" in out.output


def test_dashboard_command_serves_and_never_prints_the_token() -> None:
    port = free_port()
    env = {**os.environ, "BALLOONS_DASHBOARD_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "balloons", "dashboard", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def metrics() -> httpx.Response:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return httpx.get(base + "/metrics", headers={"authorization": f"Bearer {TOKEN}"})

        resp = wait_for(
            metrics, "the dashboard to answer", interval=0.1, ignoring=(httpx.TransportError,)
        )
        assert resp.status_code == 200
        assert httpx.get(base + "/metrics").status_code == 401
        httpx.post(base + "/login", data={"token": TOKEN}, headers={"origin": base})
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert f"balloons dashboard on http://127.0.0.1:{port}/" in output
    assert TOKEN not in output
    assert "POST /login" in output  # the access log was on, and still showed no token
