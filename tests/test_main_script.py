"""Tasks defined in a script run as __main__ work: a ten-line script is a complete example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.machines

SCRIPT = Path(__file__).parent / "scripts" / "ten_lines.py"


def test_ten_line_script_runs_its_task_on_a_machine(tmp_path: Path) -> None:
    # Run from elsewhere, as a user would: the script's own directory is what matters.
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "hello"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "HELLO!"


def test_a_msgpack_app_sends_and_gets_bytes_through_a_machine(tmp_path: Path) -> None:
    script = Path(__file__).parent / "scripts" / "msgpack_job.py"
    out = subprocess.run([sys.executable, str(script), "abc"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=dict(os.environ))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b'\\xffcba'"


def test_typing_checks_submit_arguments_and_results(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import balloons\n"
        "app = balloons.App()\n"
        "@app.task(memory_mb=256)\n"
        "def add(a: int, b: int) -> int:\n"
        "    return a + b\n"
        "job = add.submit(1, 2)\n"
        "total: int = job.result(timeout=1)\n"
        "bad_arg = add.submit('x', 2)\n"
        "bad_result: str = add.submit(1, 2).result()\n"
        "reveal_type(add)\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "c"),
            str(sample),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = out.stdout.splitlines()
    assert any(":8:" in ln and "arg-type" in ln for ln in lines), out.stdout
    assert any(":9:" in ln and "assignment" in ln for ln in lines), out.stdout
    assert any("Task[[a: int, b: int], int]" in ln for ln in lines), out.stdout
    assert not any(":7:" in ln for ln in lines), out.stdout
