"""One structured line per lifecycle event on the ``balloons`` logger, never with a secret."""

from __future__ import annotations

import logging

import pytest

from balloons import JobFailed, lifecycle
from tests import tasks
from tests.conftest import REDIS_URL, SECRET


def fields_of(records: list[logging.LogRecord], event: str) -> list[dict[str, object]]:
    return [
        r.balloons  # type: ignore[attr-defined]
        for r in records
        if getattr(r, "balloons", {}).get("event") == event
    ]


@pytest.mark.machines
def test_submit_launch_and_end_are_logged_with_elapsed_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="balloons")
    ok = tasks.add.submit(1, 2)
    bad = tasks.fail.submit("no")
    assert ok.result(timeout=30) == 3
    with pytest.raises(JobFailed):
        bad.result(timeout=30)
    (sub,) = [f for f in fields_of(caplog.records, "submitted") if f["job"] == ok.id]
    assert sub["task"] == "tests.tasks:add" and sub["placed"] in ("launch", "warm", "queued")
    assert float(sub["submit_s"]) >= 0  # type: ignore[arg-type]
    launched = [f for f in fields_of(caplog.records, "launched") if f["job"] == ok.id]
    if sub["placed"] == "launch":
        assert launched and launched[0]["size"] == "1x256MB" and launched[0]["machine"] != "-"
    (done,) = [f for f in fields_of(caplog.records, "succeeded") if f["job"] == ok.id]
    assert float(done["total_s"]) >= float(done["run_s"]) >= 0  # type: ignore[arg-type]
    (failed,) = [f for f in fields_of(caplog.records, "failed") if f["job"] == bad.id]
    assert failed["reason"] == "task_error"
    lines = [r.getMessage() for r in caplog.records if r.name == "balloons"]
    assert any(line.startswith(f"event=succeeded job={ok.id} ") for line in lines)
    for line in lines:
        assert SECRET not in line and REDIS_URL not in line


def test_a_failed_launch_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="balloons")

    class Refusing:
        name = "refusing"

        def bind(self, ctx: object) -> None:
            pass

        def launch(self, spec: object) -> None:
            raise RuntimeError("no capacity anywhere")

    import balloons

    app = balloons.App(backend=Refusing())  # type: ignore[arg-type]

    @app.task(name="never_runs")
    def never_runs() -> None: ...

    job = never_runs.submit()
    with pytest.raises(JobFailed, match="launch_failed"):
        job.result(timeout=10)
    (f,) = fields_of(caplog.records, "launch_failed")
    assert f["job"] == job.id and "no capacity anywhere" in str(f["error"])
    assert any(r.levelno == logging.ERROR for r in caplog.records if r.name == "balloons")


def test_lines_are_logfmt() -> None:
    assert lifecycle.line("x", {"a": 1, "b": 0.5, "c": "two words", "d": 'q"'}) == (
        'event=x a=1 b=0.500 c="two words" d="q\\""'
    )


def test_values_read_from_records_stay_on_one_line_without_escapes() -> None:
    assert lifecycle.line("failed", {"reason": "x\ny=1 \x1b[2J\t"}) == (
        'event=failed reason="x\\ny=1 ␛[2J\\t"'
    )
