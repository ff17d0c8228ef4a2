"""The supervisor's schedules: each due run submitted once, the schedules' state in Redis.

At its first step a supervisor forgets the state of schedules no longer declared in its app
(with a log line). At every step, for each declared schedule not paused, it reads the state
(untrusted: a value it could not have written counts as absent), works out the runs due since
the last due time by the Redis server's clock (:meth:`balloons.schedules.Schedule.runs`),
submits each with its idempotency key (so supervisors running at once submit it once), then
records the due time reached, the run's job and the runs missed. A schedule seen for the
first time starts from now: nothing before its first sight runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store.keys import schedule_key, schedules_key
from ..untrusted import integer, text, timestamp

if TYPE_CHECKING:
    from ..schedules import Schedule
    from .supervisor import Control, StepReport

log = logging.getLogger("balloons.control.cron")


@dataclass(frozen=True)
class ScheduleState:
    """What Redis holds of a schedule, read as untrusted input."""

    paused: bool = False
    last_due: float | None = None
    last_job: str = ""
    last_missed: int = 0

    @classmethod
    def of(cls, raw: dict[Any, Any]) -> ScheduleState:
        got = {text(k): v for k, v in raw.items()}
        job = text(got.get("last_job")) or ""
        return cls(
            paused=got.get("paused") in (b"1", "1"),
            last_due=timestamp(got.get("last_due")),
            last_job=job if len(job) <= 80 and job.isprintable() else "",
            last_missed=integer(got.get("last_missed"), 0, 10**9) or 0,
        )


def step(app: Control, synced: bool, report: StepReport) -> bool:
    """A supervisor step's part: at its first (``synced`` false), forget the state of the
    schedules the app no longer declares; then submit the due runs. Returns whether the
    forgetting is done. (An app that declares no schedule never comes here: it may be a
    process that does not import them, and leaves their state alone.)"""
    try:
        if not synced:
            forget_undeclared(app)
            synced = True
        report.scheduled += submit_due(app, app.store.server_time())
    except Exception as exc:
        log.exception("supervisor: schedules: %s", exc)
        report.errors.append(f"schedules: {exc}")
    return synced


def state(app: Control, name: str) -> ScheduleState:
    """The state of schedule ``name`` (defaults when Redis holds none)."""
    with app.store.errors():
        raw = app.store.redis.hgetall(schedule_key(app.settings.namespace, name))
    return ScheduleState.of(raw)


def forget_undeclared(app: Control) -> list[str]:
    """Forget the state of the schedules Redis lists that the app no longer declares; list the
    declared ones. Returns the names forgotten."""
    ns = app.settings.namespace
    redis = app.store.redis
    with app.store.errors():
        listed = {text(n) or "" for n in redis.smembers(schedules_key(ns))}
        gone = sorted(listed - set(app.schedules))
        pipe = redis.pipeline(transaction=False)
        for name in gone:
            pipe.delete(schedule_key(ns, name))
            pipe.srem(schedules_key(ns), name)
        if app.schedules:
            pipe.sadd(schedules_key(ns), *app.schedules)
        pipe.execute()
    for name in gone:
        log.info("schedule %r removed: the app no longer declares it", name)
    return gone


def submit_due(app: Control, now: float) -> list[str]:
    """Submit the runs of every schedule due by ``now`` (the Redis server's clock); the ids of
    the jobs submitted (a run another supervisor submitted first is not counted again)."""
    submitted: list[str] = []
    for schedule in app.schedules.values():
        try:
            submitted += _submit_schedule(app, schedule, now)
        except Exception as exc:  # one bad schedule must not stop the others
            log.exception("schedule %r: %s", schedule.name, exc)
    return submitted


def _submit_schedule(app: Control, schedule: Schedule, now: float) -> list[str]:
    key = schedule_key(app.settings.namespace, schedule.name)
    redis = app.store.redis
    st = state(app, schedule.name)
    if st.paused:
        return []
    if st.last_due is None:
        with app.store.errors():
            redis.hset(key, "last_due", repr(now))
        return []
    runs, missed, reached = schedule.runs(st.last_due, now)
    if reached is None:
        return []
    ids = []
    task = schedule.task
    for due in runs:
        job = task.options(key=schedule.key(due)).submit(*schedule.args, **schedule.kwargs)
        ids.append(job.id)
    fields: dict[str, Any] = {"last_due": repr(reached), "last_missed": missed}
    if ids:
        fields["last_job"] = ids[-1]
    with app.store.errors():
        redis.hset(key, mapping=fields)
    if missed:
        log.warning(
            "schedule %r: %d run(s) missed while no supervisor ran (catch_up=%r)",
            schedule.name,
            missed,
            schedule.catch_up,
        )
    for job_id in ids:
        log.info("schedule %r: submitted %s", schedule.name, job_id)
    return ids


def set_paused(app: Control, name: str, paused: bool, now: float) -> None:
    """Pause or resume a schedule. Resuming starts from ``now``: the runs due while it was
    paused are not run."""
    key = schedule_key(app.settings.namespace, name)
    fields: dict[str, Any] = {"paused": "1" if paused else "0"}
    if not paused:
        fields["last_due"] = repr(now)
        fields["last_missed"] = 0
    with app.store.errors():
        pipe = app.store.redis.pipeline(transaction=False)
        pipe.hset(key, mapping=fields)
        pipe.sadd(schedules_key(app.settings.namespace), name)
        pipe.execute()


def rows(app: Control, now: float, undeclared: bool = False) -> list[dict[str, Any]]:
    """What ``balloons schedules`` and the dashboard show of each schedule the app declares
    (next and last run, last job and its outcome, runs missed); with ``undeclared``, also the
    schedules whose state Redis holds that this app does not declare (their cron unknown
    here)."""
    out: list[dict[str, Any]] = []
    for s in app.schedules.values():
        st = state(app, s.name)
        out.append(
            {
                "name": s.name,
                "task": s.task.name,
                "cron": f"{s.cron} ({s.tz})",
                "catch_up": s.catch_up,
                "paused": st.paused,
                "next_run": None if st.paused else s.next_after(max(now, st.last_due or now)),
                "last_run": st.last_due,
                "last_job": st.last_job or None,
                "last_outcome": _outcome(app, st.last_job),
                "last_missed": st.last_missed,
            }
        )
    if undeclared:
        with app.store.errors():
            listed = sorted(
                text(n) or ""
                for n in app.store.redis.smembers(schedules_key(app.settings.namespace))
            )
        for name in listed:
            if name in app.schedules or not name.isprintable() or len(name) > 200:
                continue
            st = state(app, name)
            out.append(
                {
                    "name": name,
                    "task": None,
                    "cron": None,
                    "catch_up": None,
                    "paused": st.paused,
                    "next_run": None,
                    "last_run": st.last_due,
                    "last_job": st.last_job or None,
                    "last_outcome": _outcome(app, st.last_job),
                    "last_missed": st.last_missed,
                }
            )
    return out


def _outcome(app: Control, job_id: str) -> str:
    """The status of a schedule's last job, ``-`` for none, ``gone`` when it cannot be read."""
    if not job_id:
        return "-"
    from ..job import Job

    try:
        return Job(app, job_id).status().value  # type: ignore[arg-type]
    except Exception:  # forgotten, expired, or no job id: said as it is
        return "gone"
