"""The records that describe jobs, attempts and machines; job statuses and failure reasons
(defined in :mod:`balloons.states`, which a machine imports without these records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .states import TERMINAL, JobStatus, Reason, exit_reason

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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttemptInfo:
        return cls(
            number=int(d.get("n", 0)),
            machine_id=d.get("machine") or None,
            launched_at=_opt_float(d.get("launched")),
            started_at=_opt_float(d.get("started")),
            ended_at=_opt_float(d.get("ended")),
            outcome=d.get("outcome") or None,
            reason=d.get("reason") or None,
            message=d.get("message") or None,
            warm=bool(d.get("warm")),
            slot=d.get("slot") or None,
            note=d.get("note") or None,
            cpus=int(d["cpus"]) if d.get("cpus") else None,
            memory_mb=int(d["mem"]) if d.get("mem") else None,
        )


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

    @property
    def running(self) -> bool:
        return self.state in ("created", "starting", "started")


def _opt_float(v: Any) -> float | None:
    if v in (None, ""):
        return None
    return float(v)
