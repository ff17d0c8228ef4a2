"""Tasks the dashboard tests submit: each waits on a file the test creates, or on nothing."""

from __future__ import annotations

import time
from pathlib import Path

from tests.tasks import app


@app.task(timeout=60)
def wait_for(path: str, seconds: float = 50.0) -> str:
    """Run until ``path`` exists (the test decides when), then return its text."""
    deadline = time.monotonic() + seconds
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return Path(path).read_text()


@app.task(timeout=30)
def big(payload: dict[str, str]) -> int:
    return sum(len(v) for v in payload.values())
