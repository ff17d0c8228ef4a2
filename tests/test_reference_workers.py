"""The reference workers of examples/workers/ (POSIX sh + curl, Node + fetch), run as command
jobs on local machines against the attempt routes served by uvicorn."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import balloons
from balloons.errors import JobFailed
from tests.asgiserver import ServerThread
from tests.attemptserver import attempt_server

pytestmark = pytest.mark.machines
WORKERS = Path(__file__).resolve().parent.parent / "examples" / "workers"
# scripts/setup installs node where the tests need it; only a machine where it truly cannot
# be installed skips these.
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture
def server(app: balloons.App) -> Iterator[ServerThread]:
    with attempt_server(app) as s:
        yield s


def _logs(job: balloons.Job[Any]) -> list[tuple[str, str]]:
    return [(line.source, line.text) for line in job.logs()]


@needs_curl
def test_the_sh_worker_completes_with_its_command_output(
    app: balloons.App, server: ServerThread
) -> None:
    script = 'read -r n; echo "working on \\"$n\\"" >&2; echo "{\\"double\\": $((n * 2))}"'
    job = app.submit_command(
        ["sh", str(WORKERS / "worker.sh"), "sh", "-c", script],
        input=21,
        service_url=server.url,
        timeout=60,
    )
    assert job.result(timeout=60) == {"double": 42}
    assert ("err", 'working on "21"') in _logs(job)


@needs_curl
def test_the_sh_worker_fails_with_its_command_exit(app: balloons.App, server: ServerThread) -> None:
    job = app.submit_command(
        ["sh", str(WORKERS / "worker.sh"), "sh", "-c", "echo bad >&2; exit 9"],
        service_url=server.url,
        timeout=60,
    )
    with pytest.raises(JobFailed) as err:
        job.result(timeout=60)
    assert err.value.reason == "task_error"
    assert err.value.error_message == "the command exited with code 9"
    assert ("err", "bad") in _logs(job)


HANDLER = """
export default async function (input, ctx) {
  ctx.log(`got ${input.items.length} items`);
  await ctx.progress(0.5, "halfway");
  if (input.fail) { const e = new Error("no luck"); e.name = "LuckError"; throw e; }
  return { sum: input.items.reduce((a, b) => a + b, 0) };
}
"""


@needs_node
def test_the_node_worker_completes_with_its_handler_result(
    app: balloons.App, server: ServerThread, tmp_path: Path
) -> None:
    handler = tmp_path / "handler.mjs"
    handler.write_text(HANDLER)
    job = app.submit_command(
        ["node", str(WORKERS / "worker.mjs"), str(handler)],
        input={"items": [1, 2, 3]},
        service_url=server.url,
        timeout=60,
    )
    assert job.result(timeout=60) == {"sum": 6}
    assert ("out", "got 3 items") in _logs(job)
    assert job.progress() == (0.5, "halfway")


@needs_node
def test_the_node_worker_fails_with_its_handler_error(
    app: balloons.App, server: ServerThread, tmp_path: Path
) -> None:
    handler = tmp_path / "handler.mjs"
    handler.write_text(HANDLER)
    job = app.submit_command(
        ["node", str(WORKERS / "worker.mjs"), str(handler)],
        input={"items": [1], "fail": True},
        service_url=server.url,
        timeout=60,
    )
    with pytest.raises(JobFailed) as err:
        job.result(timeout=60)
    assert (err.value.reason, err.value.error_type) == ("task_error", "LuckError")
    assert err.value.error_message == "no luck"
