"""Logs and progress of real tasks on real local machines, read back from the real store."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import balloons
from balloons.machine import capture
from tests import log_tasks, tasks

pytestmark = pytest.mark.machines


def test_stdout_stderr_and_logging_are_captured_with_time_and_attempt() -> None:
    before = time.time()
    job = tasks.chatty.submit(3)
    assert job.result(timeout=30) == 3
    # Stored before the outcome: readable the moment the result is.
    lines = job.logs()
    texts = [(ln.source, ln.text) for ln in lines]
    assert texts[:4] == [
        ("out", "line 0"),
        ("out", "line 1"),
        ("out", "line 2"),
        ("err", "to stderr"),
    ]
    assert ("out", "no newline at the end") in texts
    # logging imported by the task itself, after it started: Python's last-resort handler
    # writes to the captured stderr, so the record is kept as an err line.
    assert any(t == "a warning with args" for _, t in texts)
    assert all(ln.attempt == 1 for ln in lines)
    times = [ln.time for ln in lines]
    assert times == sorted(times) and before <= times[0] <= time.time()
    assert "#1 out line 0" in str(lines[0])
    assert [ln.text for ln in job.logs(tail=2)] == [lines[-2].text, lines[-1].text]
    assert [ln.text for ln in job.logs(after=lines[0].id)] == [ln.text for ln in lines[1:]]


def test_logging_records_go_through_the_root_hook_when_logging_is_imported() -> None:
    job = log_tasks.logs_a_record.submit("hello")
    assert job.result(timeout=30) == "hello"
    logged = [ln for ln in job.logs() if ln.source == "log"]
    assert [ln.text.splitlines()[0] for ln in logged] == [
        "INFO tests.log_tasks: info: hello",
        "ERROR tests.log_tasks: with a traceback",
    ]
    assert "KeyError: 'hello'" in logged[1].text


def test_an_attempt_keeps_at_most_the_byte_cap_then_says_so() -> None:
    job = tasks.chatty.submit(15_000)  # ~130 KB of lines per 15k; the cap is lowered below
    assert job.result(timeout=60) == 15_000
    lines = job.logs()
    assert len(lines) <= capture.MAX_LOG_LINES + 200  # trimmed by MAXLEN ~
    assert lines[-1].text != "" and lines[-1].source in ("out", "err", "log")
    big = tasks.loud.submit(3000, 600)  # 1.8 MB
    assert big.result(timeout=60) == 3000
    got = big.logs()
    assert got[-1].source == "log" and "log capped at" in got[-1].text
    assert sum(len(ln.text) + 1 for ln in got[:-1]) <= capture.MAX_LOG_BYTES


def test_warm_reuse_keeps_each_jobs_lines_apart() -> None:
    first = tasks.solo_chatty.submit(2)
    second = tasks.solo_chatty.submit(1)  # queued: the pool has one machine
    assert first.result(timeout=30) == 2 and second.result(timeout=30) == 1
    assert second.info().attempts[0].warm, "the second job should have run on the warm machine"
    assert second.info().machine_id == first.info().machine_id
    assert [ln.text for ln in first.logs()] == ["line 0", "line 1"]
    assert [ln.text for ln in second.logs()] == ["line 0"]


def test_stream_logs_follows_a_running_job_until_it_ends(tmp_path: Path) -> None:
    flag = tmp_path / "go"
    job = tasks.print_then_wait.submit(str(flag))
    seen: list[str] = []
    first = threading.Event()

    def read() -> None:
        for line in job.stream_logs():
            seen.append(line.text)
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(20), "the first line never arrived while the task ran"
    assert seen == ["waiting for the flag"]
    assert job.status() is balloons.JobStatus.RUNNING
    flag.write_text("")
    reader.join(30)
    assert not reader.is_alive()
    assert seen == ["waiting for the flag", "flag seen"]


def test_stream_logs_async() -> None:
    job = tasks.chatty.submit(2)

    async def collect() -> list[str]:
        try:
            return [line.text async for line in job.stream_logs_async()]
        finally:
            await job.app.store.aclose()

    got = asyncio.run(collect())
    assert got[:2] == ["line 0", "line 1"]
    assert job.status() is balloons.JobStatus.SUCCEEDED


def test_progress_is_recorded_and_read_back() -> None:
    job = tasks.chatty.submit(0, progress_steps=4)
    assert job.progress() in (None, *[((i + 1) / 4, f"step {i + 1}") for i in range(4)])
    job.result(timeout=30)
    assert job.progress() == (1.0, "step 4")
    assert tasks.add.submit(1, 2).progress() is None


def test_progress_outside_a_job_does_nothing_and_bad_values_are_refused() -> None:
    balloons.progress(0.5, "outside")  # no job here: nothing to record, no error
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(ValueError, match="progress must be"):
            balloons.progress(bad)  # type: ignore[arg-type]


def test_a_root_stream_handler_set_up_in_the_task_is_not_kept_twice() -> None:
    job = log_tasks.configures_logging.submit("once")
    assert job.result(timeout=30) == "once"
    texts = [(ln.source, ln.text) for ln in job.logs()]
    assert texts == [("log", "INFO tests.log_tasks: configured: once")]


def test_following_a_job_whose_machine_never_came_ends_with_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No supervisor runs: the follower itself checks the job's lease when nothing comes, as
    ``job.result()`` does, so a dead machine does not leave it waiting for ever."""
    from balloons import logs
    from tests.test_supervisor import held_app

    monkeypatch.setattr(logs, "QUIET", 0.5)
    _app, add = held_app("quiet", max_machines=1, boot_timeout=1)
    job = add.submit(1, 2)
    began = time.monotonic()
    assert list(job.stream_logs()) == []
    assert time.monotonic() - began < 10
    assert job.status() is balloons.JobStatus.FAILED
    assert job.info().reason == "boot_timeout"


def test_following_asynchronously_ends_too_when_the_machine_never_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from balloons import logs
    from tests.test_supervisor import held_app

    monkeypatch.setattr(logs, "QUIET", 0.5)
    _app, add = held_app("quietasync", max_machines=1, boot_timeout=1)
    job = add.submit(1, 2)

    async def collect() -> list[str]:
        try:
            return [line.text async for line in job.stream_logs_async()]
        finally:
            await job.app.store.aclose()

    assert asyncio.run(collect()) == []
    assert job.info().reason == "boot_timeout"
