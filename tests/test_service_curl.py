"""The job service from another language: tests/service_curl.sh (bash and curl, no JSON tool)
against a real service (uvicorn on 127.0.0.1), a real Valkey and real local machines."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from tests.servicehttp import serving

SCRIPT = Path(__file__).resolve().parent / "service_curl.sh"
# scripts/setup installs curl with apt-get where the tests need it; only a machine where it
# cannot be installed skips this.
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.mark.machines
@needs_curl
def test_the_service_from_bash_and_curl() -> None:
    with serving() as service:
        env = {**os.environ, "BALLOONS_URL": service.url, "BALLOONS_TOKEN": service.token}
        done = subprocess.run(
            ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("passed, 0 failed"), done.stdout
    assert done.stdout.count("ok: ") >= 15, done.stdout
