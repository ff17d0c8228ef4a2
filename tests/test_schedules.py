"""Schedules: cron runs submitted once by the supervisor, by the Redis server's clock.

The clock is patched: the supervisor's ``store.server_time`` (the Redis ``TIME`` clock) gives
the test's time, set days in the past so that no lease or deadline of a real job looks expired
(the scripts keep the real clock). Runs are real jobs on real local machines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

import balloons
from balloons import ConfigError
from balloons.control import cron
from balloons.control.supervisor import Supervisor
from balloons.schedules import LATE_S, Cron, Schedule
from balloons.store.keys import schedule_key, schedules_key
from tests import schedule_tasks
from tests.clirun import balloons as run_cli

FIVE = 300.0


class Clock:
    """The patched Redis clock: 10 days ago, on a 5-minute boundary, moved by the test."""

    def __init__(self) -> None:
        self.now = (time.time() - 10 * 86400) // 3600 * 3600

    def __call__(self, pk: object = None) -> float:
        return self.now


def _supervisor(app: balloons.App, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    monkeypatch.setattr(app.store, "server_time", clock)
    return app.supervisor()


def _scheduled(app: balloons.App, *names: str, **options: Any) -> balloons.App:
    for name in names:
        app.schedule(schedule_tasks.report, args=(name,), name=name, **options)
    return app


def _kinds(job_ids: list[str]) -> list[str]:
    return [schedule_tasks.app.job(j).result(timeout=60) for j in job_ids]


# ------------------------------------------------------------------ declaring


def test_a_task_declares_its_schedule() -> None:
    app = balloons.App()

    @app.task(name="nightly", schedule="*/5 * * * *")
    def nightly() -> None:
        pass

    @app.task(name="local", schedule=Cron("0 3 * * *", tz="Europe/Vilnius", catch_up="all"))
    def local() -> None:
        pass

    assert sorted(app.schedules) == [local.name, nightly.name]
    assert app.schedules[local.name].tz == "Europe/Vilnius"
    assert app.schedules[local.name].catch_up == "all"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cron": "61 * * * *"}, "'61 * * * *'"),
        ({"cron": "* * *"}, "'* * *'"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "'Mars/Olympus'"),
        ({"cron": "* * * * *", "catch_up": "some"}, "'some'"),
        ({"cron": "* * * * *", "name": "no spaces"}, "'no spaces'"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_value(options: dict[str, Any], named: str) -> None:
    app = balloons.App()
    with pytest.raises(ConfigError, match=re.escape(named)):
        app.schedule(schedule_tasks.report, args=("x",), **options)
    assert app.schedules == {}


def test_a_schedule_call_is_checked_and_names_are_unique() -> None:
    app = balloons.App()
    with pytest.raises(TypeError, match="report"):
        app.schedule(schedule_tasks.report, cron="* * * * *")  # its argument is missing
    app.schedule(schedule_tasks.report, cron="* * * * *", args=("a",))
    with pytest.raises(ConfigError, match="declared twice"):
        app.schedule(schedule_tasks.report, cron="0 * * * *", args=("b",))


# ------------------------------------------------------------------ due times


def _ts(zone: str, *fields: int) -> float:
    return dt.datetime(*fields, tzinfo=ZoneInfo(zone)).timestamp()


def test_catch_up_policies_after_three_missed_times() -> None:
    t0 = _ts("UTC", 2026, 5, 1, 12, 0)
    now = t0 + 3 * FIVE + 120  # three due times passed, the last two minutes ago
    kw: dict[str, Any] = {"task": schedule_tasks.report, "cron": "*/5 * * * *"}
    one = Schedule("one", args=("x",), **kw).runs(t0, now)
    every = Schedule("all", args=("x",), catch_up="all", **kw).runs(t0, now)
    none = Schedule("none", args=("x",), catch_up="none", **kw).runs(t0, now)
    assert one == ([t0 + 3 * FIVE], 2, t0 + 3 * FIVE)
    assert every == ([t0 + FIVE, t0 + 2 * FIVE, t0 + 3 * FIVE], 0, t0 + 3 * FIVE)
    assert none == ([], 3, t0 + 3 * FIVE)
    on_time = Schedule("none", args=("x",), catch_up="none", **kw).runs(t0, t0 + FIVE + LATE_S / 2)
    assert on_time == ([t0 + FIVE], 0, t0 + FIVE)


def test_dst_a_repeated_time_runs_once_and_a_skipped_one_right_after() -> None:
    ny = "America/New_York"
    back = Schedule("back", schedule_tasks.report, "30 1 * * *", ny, ("x",), catch_up="all")
    runs, missed, _ = back.runs(_ts(ny, 2026, 11, 1, 0, 0), _ts(ny, 2026, 11, 1, 4, 0))
    assert runs == [_ts(ny, 2026, 11, 1, 1, 30)] and missed == 0  # 01:30 EDT, not EST too
    spring = Schedule("spring", schedule_tasks.report, "30 2 * * *", ny, ("x",), catch_up="all")
    runs, _, _ = spring.runs(_ts(ny, 2026, 3, 8, 0, 0), _ts(ny, 2026, 3, 8, 5, 0))
    assert runs == [_ts(ny, 2026, 3, 8, 3, 0)]  # 02:30 does not exist that day


# ------------------------------------------------------------------ the supervisor


@pytest.mark.machines
def test_a_minute_schedule_runs_once_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _scheduled(balloons.App(), "minute", cron="* * * * *")
    clock = Clock()
    sup = _supervisor(app, clock, monkeypatch)
    assert sup.step().scheduled == []  # first sight: from now on
    clock.now += 30
    assert sup.step().scheduled == []
    clock.now += 31  # past the minute
    first = sup.step().scheduled
    assert len(first) == 1
    assert sup.step().scheduled == []  # the same minute again: nothing more
    clock.now += 60
    second = sup.step().scheduled
    assert len(second) == 1 and second != first
    assert _kinds(first + second) == ["minute", "minute"]
    st = cron.state(app, "minute")
    assert st.last_job == second[0]
    assert st.last_missed == 0


def _step(sup: Supervisor, barrier: threading.Barrier, submitted: list[str]) -> None:
    barrier.wait()
    submitted.extend(sup.step().scheduled)


@pytest.mark.machines
def test_two_supervisors_submit_each_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    apps = [_scheduled(balloons.App(), "both", cron="* * * * *") for _ in range(2)]
    sups = [_supervisor(a, clock, monkeypatch) for a in apps]
    sups[0].step()
    submitted: list[str] = []
    for _ in range(3):
        clock.now += 60
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=_step, args=(s, barrier, submitted)) for s in sups]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    distinct = set(submitted)
    assert len(distinct) == 3  # one job per minute, whichever supervisor submitted it
    assert _kinds(sorted(distinct)) == ["both"] * 3
    jobs = schedule_tasks.app.jobs(limit=100, pool="sched")
    assert len(jobs) == 3


@pytest.mark.machines
@pytest.mark.parametrize(
    ("catch_up", "runs", "missed"), [("one", 1, 2), ("all", 3, 0), ("none", 0, 3)]
)
def test_a_supervisor_down_across_three_due_times(
    monkeypatch: pytest.MonkeyPatch, catch_up: str, runs: int, missed: int
) -> None:
    app = _scheduled(balloons.App(), "down", cron="*/5 * * * *", catch_up=catch_up)
    clock = Clock()
    sup = _supervisor(app, clock, monkeypatch)
    sup.step()
    clock.now += 3 * FIVE + 120  # down for three due times, back two minutes after the last
    got = sup.step().scheduled
    assert len(got) == runs
    assert _kinds(got) == ["down"] * runs
    assert cron.state(app, "down").last_missed == missed
    assert sup.step().scheduled == []


@pytest.mark.machines
def test_a_supervisor_across_a_dst_change_runs_the_repeated_time_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ny = "America/New_York"
    app = _scheduled(balloons.App(), "dst", cron="30 1 * * *", tz=ny, catch_up="all")
    clock = Clock()
    clock.now = _ts(ny, 2026, 11, 1, 0, 0)  # the night 01:00-02:00 happens twice
    sup = _supervisor(app, clock, monkeypatch)
    sup.step()
    ran = []
    for _ in range(8):  # every 30 minutes to 04:00
        clock.now += 1800
        ran += sup.step().scheduled
    assert len(ran) == 1
    assert cron.state(app, "dst").last_due == _ts(ny, 2026, 11, 1, 1, 30)
    assert _kinds(ran) == ["dst"]


@pytest.mark.machines
def test_a_paused_schedule_submits_nothing_and_resumes_from_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = _scheduled(balloons.App(), "pausable", cron="* * * * *")
    clock = Clock()
    sup = _supervisor(app, clock, monkeypatch)
    sup.step()
    cron.set_paused(app, "pausable", True, clock.now)
    clock.now += 180
    assert sup.step().scheduled == []
    cron.set_paused(app, "pausable", False, clock.now)
    assert sup.step().scheduled == []  # the minutes due while paused are not run
    clock.now += 60
    assert len(sup.step().scheduled) == 1


@pytest.mark.machines
def test_a_schedule_no_longer_declared_is_forgotten_with_a_log_line(
    monkeypatch: pytest.MonkeyPatch, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ns = "balloons"
    r.sadd(schedules_key(ns), "old", "kept")
    r.hset(schedule_key(ns, "old"), mapping={"last_due": "1700000000", "paused": "0"})
    r.hset(schedule_key(ns, "kept"), mapping={"last_due": "1700000000"})
    app = _scheduled(balloons.App(), "kept", cron="0 * * * *")
    with caplog.at_level(logging.INFO, logger="balloons.control.cron"):
        _supervisor(app, Clock(), monkeypatch).step()
    assert not r.exists(schedule_key(ns, "old"))
    assert r.smembers(schedules_key(ns)) == {b"kept"}
    assert any("'old' removed" in rec.getMessage() for rec in caplog.records)


@pytest.mark.machines
@pytest.mark.parametrize(
    "state",
    [
        {"last_due": "garbage", "paused": "maybe", "last_missed": "-4", "last_job": "\x1b[2J"},
        {"last_due": "1e300"},
        {"last_due": "nan"},
    ],
)
def test_a_state_altered_in_redis_breaks_nothing(
    monkeypatch: pytest.MonkeyPatch, r: redis.Redis, state: dict[str, str]
) -> None:
    app = _scheduled(balloons.App(), "altered", cron="* * * * *")
    r.hset(schedule_key("balloons", "altered"), mapping=state)
    clock = Clock()
    sup = _supervisor(app, clock, monkeypatch)
    report = sup.step()
    assert report.errors == [] and report.scheduled == []  # read as unseen: from now on
    clock.now += 60
    assert len(sup.step().scheduled) == 1


def _listed() -> dict[str, Any]:
    ran = run_cli("schedules", "-A", "tests.schedule_cli_app", "--json")
    assert ran.code == 0, ran.err
    [row] = json.loads(ran.out)
    return dict(row)


@pytest.mark.slow
def test_the_cli_lists_pauses_and_resumes_schedules() -> None:
    row = _listed()
    assert row["name"] == "hourly" and row["paused"] is False and row["last_job"] is None
    assert row["next_run"] is not None and row["next_run"] % 3600 == 0
    assert run_cli("schedules", "pause", "hourly", "-A", "tests.schedule_cli_app").code == 0
    row = _listed()
    assert row["paused"] is True and row["next_run"] is None
    assert run_cli("schedules", "resume", "hourly", "-A", "tests.schedule_cli_app").code == 0
    assert _listed()["paused"] is False
    bad = run_cli("schedules", "pause", "nope", "-A", "tests.schedule_cli_app")
    assert bad.code == 2
    assert "no schedule 'nope' is declared (declared: hourly)" in bad.err
    table = run_cli("schedules", "-A", "tests.schedule_cli_app")
    assert table.code == 0 and "hourly" in table.out and "0 * * * * (UTC)" in table.out
