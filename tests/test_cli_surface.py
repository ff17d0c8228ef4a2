"""What a script or a shell sees of ``balloons``, as real subprocesses: one exit code per kind of
outcome, shell completion through Click, and a help text on every command and option."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from balloons.cli import main as cli
from balloons.cli.exits import MEANING, Exit
from balloons.cli.jobs import JOB_COLUMNS
from balloons.cli.machines import COST_COLUMNS, MACHINE_COLUMNS, POOL_COLUMNS
from balloons.cli.tables import drop_order
from balloons.job import Job
from tests import tasks
from tests.clirun import ROOT, balloons, running_job
from tests.ports import free_port

UNKNOWN = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Job[str]]:
    with running_job(tmp_path / "go") as job:
        yield job


@pytest.mark.machines
def test_ok_and_a_failed_job(running: Job[str]) -> None:
    ok = balloons("status", running.id)
    assert ok.code == Exit.OK == 0, ok.err
    failed = tasks.fail.submit("nope")
    with contextlib.suppress(Exception):
        failed.result(timeout=30)
    ran = balloons("result", failed.id)
    assert ran.code == Exit.FAILED == 1
    assert "ValueError: nope" in ran.err
    ran = balloons("submit", "tests.tasks:fail", "again", "--wait")
    assert ran.code == 1 and "ValueError: again" in ran.err


@pytest.mark.machines
def test_timing_out_while_waiting_exits_3(running: Job[str]) -> None:
    for command in ("wait", "result"):
        ran = balloons(command, running.id, "--timeout", "0.3")
        assert ran.code == Exit.TIMEOUT == 3, (command, ran.err)
        assert running.id in ran.err
    assert running.status().value == "RUNNING"


@pytest.mark.slow
def test_usage_errors_exit_2() -> None:
    for args in (["jobs", "--no-such-option"], ["jobs", "--limit", "0"], ["status", "garbage"],
                 ["no-such-command"], ["submit", "tests.tasks"]):  # fmt: skip
        ran = balloons(*args)
        assert ran.code == Exit.USAGE == 2, (args, ran.err)
        assert ran.err.strip()


@pytest.mark.slow
def test_a_missing_job_exits_4() -> None:
    for command in ("status", "result", "wait", "logs"):
        ran = balloons(command, UNKNOWN)
        assert ran.code == Exit.NOT_FOUND == 4, (command, ran.err)
        assert "not found" in ran.err


@pytest.mark.slow
def test_an_unreachable_redis_exits_5() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["status", UNKNOWN], ["jobs"], ["pools"]):
        ran = balloons(*args, env={"BALLOONS_REDIS_URL": url})
        assert ran.code == Exit.UNREACHABLE == 5, (args, ran.err)
        assert "cannot reach Redis" in ran.err and url.split("/0")[0] in ran.err


@pytest.mark.slow
def test_exit_codes_are_documented_in_help_and_readme() -> None:
    ran = balloons("--help")
    readme = (ROOT / "README.md").read_text()
    for code in Exit:
        assert f"{int(code)}  {MEANING[code]}" in ran.out
        assert f"| {int(code)} | {MEANING[code]} |" in readme
    # And the order in which narrow terminals drop each table's columns.
    for table, columns in (("jobs", JOB_COLUMNS), ("machines", MACHINE_COLUMNS),
                           ("pools", POOL_COLUMNS), ("cost", COST_COLUMNS)):  # fmt: skip
        kept = ", ".join(c.name for c in columns if c.drop is None)
        assert f"| `{table}` | {drop_order(columns)} | {kept} |" in readme


@pytest.mark.slow
def test_shell_completion_script_and_completing_a_command(tmp_path: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        ran = balloons(env={"_BALLOONS_COMPLETE": f"{shell}_source"})
        assert ran.code == 0, ran.err
        assert "_BALLOONS_COMPLETE" in ran.out and f"{shell}_complete" in ran.out
    # Click's protocol, as the bash script speaks it.
    ran = balloons(env={"_BALLOONS_COMPLETE": "bash_complete", "COMP_WORDS": "balloons jo",
                        "COMP_CWORD": "1"})  # fmt: skip
    assert ran.code == 0 and ran.out.split() == ["plain,jobs"]
    ran = balloons(env={"_BALLOONS_COMPLETE": "bash_complete", "COMP_WORDS": "balloons jobs --wi",
                        "COMP_CWORD": "2"})  # fmt: skip
    assert ran.out.split() == ["plain,--wide"]
    # And bash itself, with the script sourced as README says.
    exe = tmp_path / "balloons"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m balloons "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    script = (
        'eval "$(_BALLOONS_COMPLETE=bash_source balloons)"; '
        "COMP_WORDS=(balloons ca); COMP_CWORD=1; _balloons_completion balloons; "
        'echo "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cancel"]


def _commands(group: click.Group, path: str = "balloons") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")


def test_every_command_and_option_has_help() -> None:
    missing = []
    found = [("balloons", cli), *_commands(cli)]
    assert len(found) > 15
    for path, command in found:
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
    assert missing == []
