"""The records that describe jobs, attempts and machines; job statuses and failure reasons
(defined in :mod:`balloons.states`, which a machine imports without these records)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .states import TERMINAL, JobStatus, Reason, exit_reason
from .store.keys import POOL_RE
from .untrusted import MAX_ATTEMPT, MAX_CPUS, MAX_MEMORY_MB, describe, integer, timestamp

T = TypeVar("T")

__all__ = [
    "TERMINAL",
    "AttemptInfo",
    "JobInfo",
    "JobStatus",
    "MachineInfo",
    "MachineSpec",
    "Reason",
    "exit_reason",
]


@dataclass(frozen=True)
class AttemptInfo:
    """One attempt of a job: one machine, from launch to its outcome."""

    number: int
    machine_id: str | None = None
    launched_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None  # SUCCEEDED / FAILED / CANCELLED, None while running
    reason: str | None = None
    message: str | None = None  # why it failed, in words (its first 500 characters)
    warm: bool = False  # taken by a machine that was already running (no launch)
    slot: str | None = None  # the pool slot (machine) that ran it
    note: str | None = None  # what the backend did to launch it (regions refused, ...)
    cpus: int | None = None  # the size of the machine that ran it
    memory_mb: int | None = None

    #: What could not be read of this attempt's record (altered in Redis), if anything.
    problems: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: object, number: int = 0) -> AttemptInfo:
        """An attempt from its JSON record, whatever it holds: a field that cannot be read is
        left unknown and named in :attr:`problems`. ``number``: the attempt's number in the
        attempts hash, for a record that does not say."""
        if not isinstance(d, dict):
            return cls(number=number, problems=("its record is not a JSON object",))
        fields = _Fields(d)
        n = fields.read("n", lambda v: integer(v, 1, MAX_ATTEMPT), "an attempt number")
        return cls(
            number=n if n is not None else number,
            machine_id=fields.text("machine"),
            launched_at=fields.read("launched", timestamp, "a time"),
            started_at=fields.read("started", timestamp, "a time"),
            ended_at=fields.read("ended", timestamp, "a time"),
            outcome=fields.text("outcome"),
            reason=fields.text("reason"),
            message=fields.text("message"),
            warm=bool(d.get("warm")),
            slot=fields.text("slot"),
            note=fields.text("note"),
            cpus=fields.read("cpus", lambda v: integer(v, 1, MAX_CPUS), "a number of CPUs"),
            memory_mb=fields.read(
                "mem", lambda v: integer(v, 1, MAX_MEMORY_MB), "a memory size in MB"
            ),
            problems=tuple(fields.problems),
        )


class _Fields:
    """Reads the fields of one JSON record, noting each that is present but unreadable."""

    def __init__(self, d: dict[Any, Any]) -> None:
        self.d = d
        self.problems: list[str] = []

    def read(self, name: str, parse: Callable[[object], T | None], what: str) -> T | None:
        raw = self.d.get(name)
        if raw is None or raw == "":
            return None
        value = parse(raw)
        if value is None:
            self.problems.append(f"{name} {describe(raw)} is not {what}")
        return value

    def text(self, name: str) -> str | None:
        raw = self.d.get(name)
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            self.problems.append(f"{name} {describe(raw)} is not a string")
            return None
        return raw


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of a job record, as returned by ``Job.info()``."""

    id: str
    task: str
    pool: str
    status: JobStatus
    attempt: int
    machine_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    reason: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    attempts: tuple[AttemptInfo, ...] = field(default_factory=tuple)
    #: What could not be read of the job's record (altered in Redis), if anything; a status
    #: that cannot be read makes :attr:`status` ``INVALID``.
    problems: tuple[str, ...] = ()
    #: The job's compatibility tag, ``KEYID.VERSION`` (:mod:`balloons.compat`): only machines
    #: holding that signing key and running that code version take it. None if unreadable.
    compat: str | None = None
    #: The key id of a machine that left the job in the queue because it does not hold the
    #: job's signing key (another app's machine in the same pool), if one did.
    passed_by: str | None = None
    #: The tag the job was submitted with, when a supervisor re-routed it to the current code
    #: version because no machine of its own remained (:mod:`balloons.control.versions`).
    rerouted_from: str | None = None

    @property
    def note(self) -> str | None:
        """Why a queued job was left by a machine, when one left it for another key; that a
        job was re-routed to the current code version, when it was."""
        if self.rerouted_from is not None:
            return (
                f"submitted by code version {self.rerouted_from.partition('.')[2]}, which no "
                "machine ran any more: re-routed to version "
                f"{(self.compat or '').partition('.')[2] or 'unknown'}, whose code can run it"
            )
        if self.passed_by is None or self.status is not JobStatus.QUEUED:
            return None
        key = self.compat.partition(".")[0] if self.compat else "unknown"
        return (
            f"left in the queue by a machine holding another signing key (key id "
            f"{self.passed_by}); it is signed with key id {key} and waits for a machine "
            "of its own app"
        )

    @property
    def invalid(self) -> bool:
        """Whether some of the job's record, or of its attempts' records, could not be read."""
        return bool(self.all_problems)

    @property
    def all_problems(self) -> tuple[str, ...]:
        """:attr:`problems` and those of its attempts (``attempt N: ...``)."""
        of_attempts = (f"attempt {a.number}: {p}" for a in self.attempts for p in a.problems)
        return (*self.problems, *of_attempts)

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the end, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class MachineSpec:
    """What a backend needs to launch one machine for one attempt of one job.

    ``env`` holds only the handoff variable and the names the app allow-lists: never a
    token, a Redis URL or the signing key. A backend that must pass those (the local
    backend) adds them itself, as a platform adds app secrets.
    """

    job_id: str
    attempt: int
    pool: str
    name: str
    cpus: int
    memory_mb: int
    timeout: float
    env: dict[str, str]
    metadata: dict[str, str]
    cwd: str | None = None
    python_path: tuple[str, ...] = ()
    #: The machine stops rather than being destroyed when its worker exits, so that
    #: ``Backend.start`` can run it again (a pool's standby machines).
    keep: bool = False
    #: A command job's own machine, on a backend that runs images (Fly): ``image``, ``cmd``
    #: (its argv), ``env`` (all it gets: never the app's secrets) and ``files`` (the input).
    #: None: a balloons worker (which runs a command job itself when it takes one).
    command: Mapping[str, Any] | None = None
    #: 'http': a Python worker of the worker protocol, given no store credentials (its env
    #: holds its attempt's URL and token instead of the handoff).
    protocol: str = ""


@dataclass(frozen=True)
class MachineInfo:
    """What a backend knows of one machine."""

    id: str
    backend: str
    state: str  # starting, started, stopped, destroyed (Fly's vocabulary)
    job_id: str | None = None
    attempt: int | None = None
    pool: str | None = None
    created_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    requested_stop: bool = False
    detail: dict[str, str] = field(default_factory=dict)
    #: What could not be read of the machine's record (altered in Redis), if anything.
    problems: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        """Whether the machine is created, starting or started (not yet stopped or destroyed)."""
        return self.state in ("created", "starting", "started")

    @classmethod
    def from_record(
        cls,
        machine_id: str,
        d: Mapping[str, str],
        backend: str,
        detail: Iterable[str] = ("pid", "host", "memory_mb", "cpus", "exited", "slot"),
    ) -> MachineInfo:
        """A machine from its record in Redis (``NS:machine:ID``, fields as text), whatever it
        holds: a field that cannot be read is left unknown and named in :attr:`problems`;
        ``detail`` names the fields kept as they are."""
        fields = _Fields(dict(d))
        pool = d.get("pool") or None
        if pool is not None and not POOL_RE.match(pool):
            fields.problems.append(f"pool {describe(pool)} is not a pool name")
            pool = None

        def whole(v: object) -> int | None:
            return integer(v, -(2**31), 2**31)

        return cls(
            id=machine_id,
            backend=backend,
            state=d.get("state") or "unknown",
            job_id=d.get("job") or None,
            attempt=fields.read("attempt", lambda v: integer(v, 0, MAX_ATTEMPT), "a number"),
            pool=pool,
            created_at=fields.read("created", timestamp, "a time"),
            exit_code=fields.read("exit_code", whole, "an exit code"),
            signal=fields.read("signal", whole, "a signal number"),
            oom_killed=d.get("oom") == "1",
            requested_stop=d.get("requested_stop") == "1",
            detail={k: d[k] for k in detail if k in d},
            problems=tuple(fields.problems),
        )
