"""The documentation site builds with ``mkdocs build --strict`` (no broken link, no page left
out of the navigation, every ``:::`` reference resolving to a documented name, the CLI
reference generated from the Click app), and the pages say what the code does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in (
        "app.App",
        "job.Job",
        "task.Task.submit_async",
        "errors.JobFailed",
        "backends.local.LocalBackend",
        "backends.fly.FlyBackend",
        "testing.inline",
    ):
        assert f'id="balloons.{name}"' in api, name
    assert ":class:" not in api  # Sphinx roles are dropped
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("submit", "supervise", "fly-emulator", "--grace", "--image"):
        assert command in cli
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert 'src="../bench-warm-latency.png"' in bench  # the plots of docs/, as BENCHMARKS.md


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f": {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"


def test_the_getting_started_script_is_the_one_the_suite_runs() -> None:
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    script = (ROOT / "tests" / "scripts" / "ten_lines.py").read_text(encoding="utf-8")
    assert f"```python\n{script}```" in page


def test_the_recipes_quote_their_examples() -> None:
    """Each recipe's code is its example's (whitespace aside), so the tested code is shown."""

    def squash(text: str) -> str:
        return re.sub(r"\s+", " ", text)

    quoted = {
        "fastapi.md": (
            "examples/fastapi_reports/app.py",
            ["async def lifespan", "async def count"],
        ),
        "flask.md": ("examples/flask_email/tasks.py", ["ENV_ALLOWLIST =", "def send_email"]),
        "django.md": (
            "examples/django_reports/management/commands/balloons_supervise.py",
            ["def add_arguments"],
        ),
    }
    for page, (path, starts) in quoted.items():
        source = squash((ROOT / path).read_text(encoding="utf-8"))
        text = (DOCS / page).read_text(encoding="utf-8")
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
        for start in starts:
            [block] = [b for b in blocks if start in b]
            body = block[block.index(start) :].split("\n\n")[0]
            assert squash(body) in source, f"{page}: {start} differs from {path}"


def test_gpu_machines_are_said_to_be_unsupported_while_balloons_sends_no_gpu() -> None:
    wire = (ROOT / "src" / "balloons" / "fly" / "wire.py").read_text(encoding="utf-8")
    guide = (DOCS / "deploy-fly.md").read_text(encoding="utf-8")
    if "gpu" not in wire:
        assert "**Not supported yet.**" in guide
