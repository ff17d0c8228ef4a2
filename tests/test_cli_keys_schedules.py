"""``balloons keys``, ``balloons schedules`` and ``balloons serve``'s checks before it listens,
through click's runner against the test's Valkey: what a user types, wrong names and scopes,
and records altered in Redis."""

from __future__ import annotations

import json
import socket

import pytest
import redis
from click.testing import CliRunner, Result

from balloons.cli import main as cli
from balloons.store.keys import schedule_key, service_keys_key
from tests import tasks

SCHEDULES = "tests.schedule_cli_app"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_a_key_is_made_listed_and_revoked_and_never_shown_again() -> None:
    made = run("keys", "create", "ci-bot", "--scope", "jobs:write, jobs:read,jobs:read")
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert len(key) > 32 and "cannot be shown again" in made.stderr
    listed = run("keys", "list")
    assert listed.exit_code == 0
    name, scopes, created, prefix = listed.stdout.strip().split("\t")
    assert (name, scopes) == ("ci-bot", "jobs:write,jobs:read") and created.endswith(" UTC")
    assert key not in listed.output and key[:12] not in listed.output
    assert len(prefix) == 8 and int(prefix, 16) >= 0  # of the key's digest, not of the key
    [row] = json.loads(run("keys", "list", "--json").stdout)
    assert row["name"] == "ci-bot" and row["scopes"] == ["jobs:write", "jobs:read"]
    assert row["created"] > 0 and key not in json.dumps(row)
    again = run("keys", "create", "ci-bot", "--scope", "admin")
    assert again.exit_code != 0 and "a key named 'ci-bot' exists" in again.output
    assert run("keys", "revoke", "ci-bot").stdout.strip() == "revoked ci-bot"
    assert run("keys", "list").stderr.strip() == "no keys"
    gone = run("keys", "revoke", "ci-bot")
    assert gone.exit_code == 1 and "no key named 'ci-bot'" in gone.output


@pytest.mark.parametrize(
    ("name", "scope", "says"),
    [
        ("ok", "jobs:delete", "unknown scope 'jobs:delete': expected some of"),
        ("ok", " , ", "unknown scope ''"),
        ("Bad Name", "admin", "key name 'Bad Name' is not valid"),
    ],
)
def test_a_bad_key_name_or_scope_is_refused_naming_it(name: str, scope: str, says: str) -> None:
    out = run("keys", "create", name, "--scope", scope)
    assert out.exit_code != 0 and says in out.output
    assert run("keys", "list", "--json").stdout.strip() == "[]"


def test_an_altered_key_entry_is_listed_as_unreadable(r: redis.Redis) -> None:
    assert run("keys", "create", "real", "--scope", "admin").exit_code == 0
    key = service_keys_key(tasks.app.settings.namespace)
    r.hset(key, "f" * 64, '{"name": "\\u001b[2Jevil", "scopes": ["admin"]}')
    r.hset(key, "e" * 64, b"\xff not json")
    out = run("keys", "list")
    assert out.exit_code == 0
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.stdout
    assert sum(line.startswith("(unreadable: ") for line in lines) == 2
    assert any(line.startswith("real\tadmin\t") for line in lines)


def test_schedules_are_listed_paused_and_resumed_in_process() -> None:
    [row] = json.loads(run("schedules", "-A", SCHEDULES, "--json").stdout)
    assert (row["name"], row["paused"], row["last_job"], row["last_outcome"]) == (
        "hourly",
        False,
        None,
        "-",
    )
    assert row["next_run"] % 3600 == 0
    out = run("schedules", "pause", "hourly", "-A", SCHEDULES)
    assert out.exit_code == 0 and "schedule hourly paused" in out.output
    table = run("schedules", "-A", SCHEDULES, "--wide")
    assert table.exit_code == 0 and "paused" in table.output and "0 * * * * (UTC)" in table.output
    out = run("schedules", "resume", "hourly", "-A", SCHEDULES)
    assert out.exit_code == 0 and "schedule hourly resumed" in out.output
    [row] = json.loads(run("schedules", "-A", SCHEDULES, "--json").stdout)
    assert row["paused"] is False and row["next_run"] is not None
    bad = run("schedules", "resume", "daily", "-A", SCHEDULES)
    assert bad.exit_code == 2 and "no schedule 'daily' is declared (declared: hourly)" in bad.output


@pytest.mark.machines
def test_a_schedules_last_job_shows_its_outcome_or_gone(r: redis.Redis) -> None:
    job = tasks.add.submit(1, 2)
    job.result(timeout=30)
    key = schedule_key(tasks.app.settings.namespace, "hourly")
    r.hset(key, mapping={"last_due": "1700000000.0", "last_job": job.id, "last_missed": "2"})
    [row] = json.loads(run("schedules", "-A", SCHEDULES, "--json").stdout)
    assert (row["last_job"], row["last_outcome"], row["last_missed"]) == (job.id, "SUCCEEDED", 2)
    assert row["last_run"] == 1700000000.0
    table = run("schedules", "-A", SCHEDULES, "--wide")
    assert table.exit_code == 0 and "SUCCEEDED" in table.output
    assert "2023-11-14 22:13:20" in table.output
    # What Redis holds is read as hostile: a job that is not there, text that is not printable.
    r.hset(key, "last_job", "default.01h00000000000000000000000")
    [row] = json.loads(run("schedules", "-A", SCHEDULES, "--json").stdout)
    assert row["last_outcome"] == "gone"
    r.hset(key, mapping={"last_job": "x\x1b[2J", "last_missed": "-4", "last_due": "nan"})
    [row] = json.loads(run("schedules", "-A", SCHEDULES, "--json").stdout)
    assert (row["last_job"], row["last_missed"], row["last_run"]) == (None, 0, None)
    assert "\x1b" not in run("schedules", "-A", SCHEDULES).output


def test_an_app_without_schedules_says_how_to_name_one() -> None:
    out = run("schedules", "-A", "tests.tasks")
    assert out.exit_code == 0 and "no schedules declared" in out.output
    assert json.loads(run("schedules", "-A", "tests.tasks", "--json").stdout) == []


def test_serve_says_a_wrong_redis_url_before_it_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("BALLOONS_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        serve_port = probe.getsockname()[1]
    out = run("serve", "--port", str(serve_port), "--no-supervise")
    assert out.exit_code != 0
    assert f"127.0.0.1:{port}" in out.output
    assert "balloons service on" not in out.output
    with socket.socket() as c, pytest.raises(OSError):
        c.connect(("127.0.0.1", serve_port))


def test_serve_refuses_a_port_out_of_range_and_a_bad_idle_exit() -> None:
    out = run("serve", "--port", "70000")
    assert out.exit_code == 2 and "70000" in out.output
    out = run("serve", "--idle-exit", "soon")
    assert out.exit_code == 2 and "soon" in out.output
