"""Tasks the dashboard tests submit: each waits on a file the test creates, or on nothing."""

from __future__ import annotations

from pathlib import Path

from tests import waiting
from tests.tasks import app


@app.task(timeout=60)
def wait_for_file(path: str, seconds: float = 50.0) -> str:
    """Run until ``path`` exists (the test decides when), then return its text."""
    waiting.wait_for(Path(path).exists, f"{path} to appear", seconds, 0.02)
    return Path(path).read_text()


@app.task(timeout=30)
def big(payload: dict[str, str]) -> int:
    return sum(len(v) for v in payload.values())
