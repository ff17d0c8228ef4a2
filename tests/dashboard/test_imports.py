"""The dashboard stays off a machine's start-up path and out of the CLI's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

HEAVY = ("starlette", "jinja2", "prometheus_client", "uvicorn", "a2wsgi", "balloons.dashboard")


def loaded_after(statement: str) -> list[str]:
    code = (
        f"{statement}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(out.stdout))


def test_the_worker_and_the_library_import_nothing_of_the_dashboard() -> None:
    assert loaded_after("import balloons, balloons.machine.worker, balloons.app") == []


def test_the_cli_imports_the_dashboard_only_for_its_command() -> None:
    assert loaded_after("import balloons.cli") == []
