"""What the pages show: previews, timelines, durations (pure logic)."""

from __future__ import annotations

import json

from balloons.dashboard.views import (
    PREVIEW_CHARS,
    fmt_duration,
    fmt_time,
    preview_result,
    previews_of_call,
    timeline,
)
from balloons.info import AttemptInfo, JobInfo, JobStatus


def test_arguments_are_previewed_one_by_one_and_cut() -> None:
    data = json.dumps({"args": [1, "x" * 5000], "kwargs": {"to": "a@b.c"}}).encode()
    p = previews_of_call(data, "json")
    assert [x.label for x in p] == ["[0]", "[1]", "to"]
    assert p[0].text == "1" and not p[0].truncated
    assert p[1].truncated and len(p[1].text) == PREVIEW_CHARS and p[1].size == 5002
    assert p[2].text == '"a@b.c"'
    pickled = previews_of_call(b"\x80\x04garbage", "pickle")
    assert pickled[0].text == "9 bytes, not decoded here"
    assert previews_of_call(b"not json", "json")[0].text == "not json"
    assert preview_result(b'{"a": [1]}', "json").text == '{\n  "a": [\n    1\n  ]\n}'


def test_timeline_places_attempts_on_the_jobs_span() -> None:
    a1 = AttemptInfo(1, "m1", launched_at=100.0, started_at=101.0, ended_at=110.0, outcome="FAILED")
    a2 = AttemptInfo(2, "m2", launched_at=110.0, started_at=111.0, ended_at=None)
    info = JobInfo(
        "default.01jd3x9k2m8vq4t7w0c5r6y1zh",
        "m:f",
        "default",
        JobStatus.RUNNING,
        2,
        "m2",
        100.0,
        101.0,
        None,
        None,
        None,
        None,
        None,
        (a1, a2),
    )
    bars = timeline(info, now=120.0)
    assert [b.state for b in bars] == ["failed", "running"]
    assert bars[0].left == 0 and bars[0].run_left == 5 and bars[0].width == 50
    assert bars[1].left == 50 and round(bars[1].run_left, 6) == 55 and bars[1].width == 50


def test_times_and_durations_read_well() -> None:
    assert fmt_time(None) == "-" and fmt_time(0) == "-"
    assert fmt_time(86400.5) == "1970-01-02 00:00:00"
    assert fmt_duration(None) == "-" and fmt_duration(0.0123) == "12 ms"
    assert fmt_duration(3.5) == "3.50 s" and fmt_duration(600) == "10.0 min"
