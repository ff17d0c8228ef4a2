"""What mypy --strict says of a user's code: async tasks' results, the task options and the
per-call options, all typed from their one definition (:class:`balloons.TaskOptions`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Each line a check concerns ends with a marker comment, found below by its text.
SAMPLE = """\
import datetime as dt
from typing import Any, Coroutine

import balloons

app = balloons.App()


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


@app.task(memory_mb=256, retries=2)
async def count(n: int) -> int:
    return n


@app.task(timeout=5)
def add(a: int, b: int) -> int:
    return a + b


reveal_type(fetch)  # ASYNC_TASK
reveal_type(fetch.submit("x").result())  # ASYNC_RESULT
reveal_type(count.submit(1))  # ASYNC_JOB
coro = fetch("x")
reveal_type(coro)  # LOCAL_CALL
local: Coroutine[Any, Any, int] = count(1)  # LOCAL_OK
reveal_type(add.submit(1, 2).result())  # SYNC_RESULT
job = add.options(delay=30, key="order-42", priority=5).submit(1, 2)  # CALL_OK
total: int = job.result()  # RESULT_OK
later = add.options(at=dt.datetime.now(dt.UTC), memory_mb=512).submit(1, 2)  # AT_OK
reveal_type(fetch.options(key="k", timeout=3))  # ASYNC_OPTIONS
reveal_type(add.options(delay=1.5))  # SYNC_OPTIONS
add.options(timeot=5)  # TYPO
add.options(delay="soon")  # BAD_DELAY
fetch.submit(3)  # BAD_ARG
wrong: str = count.submit(1).result()  # BAD_RESULT
reveal_type(add.submit_many([(1, 2), add.s(3, b=4)]))  # MANY
add.s(1, "two")  # BAD_S
reveal_type(next(iter(add.starmap([(1, 2)]))))  # MAPPED
reveal_type(next(iter(fetch.map(["x"], return_exceptions=True))))  # MAPPED_EXC


@app.task
def describe(n: int) -> str:
    return str(n)


reveal_type(balloons.chain(add.s(1, 2), describe).submit())  # CHAIN
reveal_type(balloons.chain(add.s(1, 2), describe).submit().result())  # CHAIN_RESULT
add.s(1)  # PARTIAL_S
reveal_type(balloons.group(add.s(1, 2), add.s(3, 4)).submit().result())  # GROUP_LIST
reveal_type(balloons.group(add.s(1, 2), callback=describe).submit())  # GROUP_CALLBACK


@app.task(timeot=5)  # TYPO_AT_REGISTRATION
def nothing() -> None:
    pass


@app.task(name="named", pool="p", max_cost=1.5)  # REGISTRATION_OK
def named() -> None:
    pass
"""


def _mypy(tmp_path: Path) -> dict[str, list[str]]:
    """mypy's lines about the sample, by the marker of the line they concern."""
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / "c"), "--hide-error-context", str(sample)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    marker = {
        n: line.rpartition("# ")[2]
        for n, line in enumerate(SAMPLE.splitlines(), 1)
        if "  # " in line
    }
    said: dict[str, list[str]] = {m: [] for m in marker.values()}
    for line in out.stdout.splitlines():
        parts = line.split(":", 3)
        if len(parts) == 4 and parts[1].isdigit() and int(parts[1]) in marker:
            said[marker[int(parts[1])]].append(f"{parts[2].strip()}:{parts[3]}")
    return said


def test_mypy_types_async_tasks_options_and_per_call_options(tmp_path: Path) -> None:
    said = _mypy(tmp_path)
    assert said["ASYNC_TASK"] == [
        'note: Revealed type is "balloons.task.AsyncTask[[url: str], bytes]"'
    ]
    assert said["ASYNC_RESULT"] == ['note: Revealed type is "bytes"']
    assert said["ASYNC_JOB"] == ['note: Revealed type is "balloons.job.Job[int]"']
    assert 'note: Revealed type is "typing.Coroutine[Any, Any, bytes]"' in said["LOCAL_CALL"]
    assert said["SYNC_RESULT"] == ['note: Revealed type is "int"']
    assert said["ASYNC_OPTIONS"] == [
        'note: Revealed type is "balloons.task.AsyncTask[[url: str], bytes]"'
    ]
    assert said["SYNC_OPTIONS"] == [
        'note: Revealed type is "balloons.task.Task[[a: int, b: int], int]"'
    ]
    for fine in ("LOCAL_OK", "CALL_OK", "RESULT_OK", "AT_OK", "REGISTRATION_OK"):
        assert said[fine] == [], (fine, said[fine])
    assert any('Unexpected keyword argument "timeot"' in s for s in said["TYPO"]), said
    assert any('"delay"' in s and "[arg-type]" in s for s in said["BAD_DELAY"]), said
    assert any("[arg-type]" in s for s in said["BAD_ARG"]), said
    assert any("[assignment]" in s for s in said["BAD_RESULT"]), said
    [many] = said["MANY"]
    assert many.endswith('list[balloons.job.Job[int]]"'), many
    assert any("[arg-type]" in s for s in said["BAD_S"]), said
    assert said["MAPPED"] == ['note: Revealed type is "int"']
    [mapped] = said["MAPPED_EXC"]
    assert "bytes" in mapped and "balloons.errors.JobFailed" in mapped, mapped
    assert any('keyword argument "timeot"' in s for s in said["TYPO_AT_REGISTRATION"]), said
    assert said["CHAIN"] == ['note: Revealed type is "balloons.flows.ChainJob[str]"']
    assert said["CHAIN_RESULT"] == ['note: Revealed type is "str"']
    # A link missing the result it is given is an error to mypy (a task alone types it).
    assert any("[call-arg]" in s for s in said["PARTIAL_S"]), said
    assert said["GROUP_LIST"] == ['note: Revealed type is "list[int]"']
    assert said["GROUP_CALLBACK"] == [
        'note: Revealed type is "balloons.flows.GroupJob[str]"'
    ]
