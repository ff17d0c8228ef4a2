"""Schedules: a task submitted on a cron expression, by the supervisor.

A schedule is declared in code (``@app.task(schedule="*/5 * * * *")`` or ``app.schedule(task,
cron=..., args=..., kwargs=..., name=...)``), so its task and arguments are the app's own and
signed like any submit: Redis holds only each schedule's state (paused, the last due time, the
last run's job, the runs missed), which a reader treats as untrusted. Cron expressions have 5
fields, or 6 with seconds first, read by ``cronsim`` in the schedule's time zone (DST as cron
does it: a time skipped by the change runs once, right after it; a time repeated runs once).

Each run is an ordinary job, submitted with the idempotency key ``schedule:NAME:DUE``, so
supervisors running at once submit it once. After downtime, ``catch_up`` decides: ``"one"``
(the default) runs once for all the times missed and records how many were missed; ``"all"``
runs each (at most :data:`MAX_CATCH_UP`); ``"none"`` runs only a time due less than
:data:`LATE_S` seconds ago.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import ConfigError

if TYPE_CHECKING:
    from .task import Task

CATCH_UP = ("one", "all", "none")
#: Runs ``catch_up="all"`` submits at most after downtime (the older ones count as missed).
MAX_CATCH_UP = 1000
#: How late a run may start under ``catch_up="none"``.
LATE_S = 60.0
#: Due times looked at after downtime, at most (a minute schedule down for about 70 days).
MAX_SCAN = 100_000
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-")


@dataclass(frozen=True)
class Cron:
    """A cron expression with its time zone and catch-up policy, for
    ``@app.task(schedule=Cron("0 3 * * *", tz="Europe/Vilnius"))``."""

    expr: str
    tz: str = "UTC"
    catch_up: str = "one"


@dataclass(frozen=True)
class Schedule:
    """A task run on a cron expression (see the module's docstring)."""

    name: str
    task: Task[Any, Any]
    cron: str
    tz: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "one"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 200:
            raise ConfigError(f"schedule name must be 1-200 characters, got {self.name!r}")
        if not set(self.name) <= _NAME_CHARS:
            raise ConfigError(
                f"schedule name {self.name!r} has characters other than letters, digits "
                "and _ . : @ -"
            )
        if self.catch_up not in CATCH_UP:
            raise ConfigError(
                f"catch_up of schedule {self.name!r} must be one of {CATCH_UP}, "
                f"got {self.catch_up!r}"
            )
        self.zone()  # a bad time zone or expression is said at declaration
        self.next_after(0.0)

    def zone(self) -> dt.tzinfo:
        """The schedule's time zone."""
        if self.tz in ("UTC", "utc"):
            return dt.UTC
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(
                f"time zone {self.tz!r} of schedule {self.name!r} is unknown: expected an IANA "
                "name such as 'Europe/Vilnius' or 'UTC'"
            ) from None

    def _times(self, after: float) -> Any:
        """The due times after ``after`` (epoch seconds), as an iterator of datetimes."""
        from cronsim import CronSim, CronSimError

        start = dt.datetime.fromtimestamp(math.floor(after), self.zone())
        try:
            return CronSim(self.cron, start)
        except (CronSimError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"cron expression {self.cron!r} of schedule {self.name!r} is invalid ({exc}): "
                "expected 5 fields (minute hour day month weekday), or 6 with seconds first"
            ) from None

    def next_after(self, after: float) -> float | None:
        """The first due time after ``after`` (None when there is none, e.g. Feb 30)."""
        for when in self._times(after):
            t = when.timestamp()
            if t > after:
                return float(t)
        return None

    def due_between(self, after: float, until: float) -> tuple[list[float], int]:
        """The due times in ``(after, until]``: the last :data:`MAX_CATCH_UP` of them, and how
        many there are (counted up to :data:`MAX_SCAN`)."""
        due: list[float] = []
        count = 0
        for when in self._times(after):
            t = when.timestamp()
            if t <= after:
                continue
            if t > until or count >= MAX_SCAN:
                break
            count += 1
            due.append(float(t))
            if len(due) > MAX_CATCH_UP:
                del due[0]
        return due, count

    def runs(self, after: float, now: float) -> tuple[list[float], int, float | None]:
        """What a supervisor does at ``now`` for a schedule last due at ``after``: the due
        times to submit, how many due times it misses, and the due time it reached (None:
        nothing was due)."""
        due, count = self.due_between(after, now)
        if not due:
            return [], 0, None
        if self.catch_up == "all":
            runs = due
        elif self.catch_up == "one":
            runs = due[-1:]
        else:
            runs = [t for t in due[-1:] if now - t <= LATE_S]
        return runs, count - len(runs), due[-1]

    def key(self, due: float) -> str:
        """The idempotency key of the run due at ``due``."""
        return f"schedule:{self.name}:{due:.0f}"


class ScheduleOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`balloons.App.schedule` besides ``cron``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    name: str | None
    tz: str
    catch_up: str


def declare(
    schedules: dict[str, Schedule],
    task: Task[Any, Any],
    cron: str,
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    name: str | None = None,
    tz: str = "UTC",
    catch_up: str = "one",
) -> Schedule:
    """Add a schedule to an app's ``schedules``: run ``task(*args, **kwargs)`` as a job on the
    cron expression ``cron`` (5 fields, or 6 with seconds first) in time zone ``tz``,
    submitted by the supervisor (``balloons supervise``, or ``app.start_supervisor()``),
    each run once however many supervisors run. ``name`` (default: the task's name)
    identifies it in Redis and the CLI. After downtime, ``catch_up``: ``"one"`` runs once for
    all missed times, ``"all"`` runs each, ``"none"`` skips them. The call is checked
    against the task's signature; the name must be unique."""
    from .calls import check_call

    kwargs = dict(kwargs or {})
    check_call(task, args, kwargs)
    sched = Schedule(name or task.name, task, cron, tz, tuple(args), kwargs, catch_up)
    if sched.name in schedules:
        raise ConfigError(
            f"schedule {sched.name!r} is declared twice: give app.schedule(..., name=...)"
        )
    schedules[sched.name] = sched
    return sched


def declare_cron(schedules: dict[str, Schedule], task: Task[Any, Any], spec: str | Cron) -> None:
    """The schedule of ``@app.task(schedule=...)``: the task with no arguments, named as it."""
    cron = spec if isinstance(spec, Cron) else Cron(spec)
    declare(schedules, task, cron.expr, tz=cron.tz, catch_up=cron.catch_up)
