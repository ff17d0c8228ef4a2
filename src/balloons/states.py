"""Job statuses and failure reasons: ``str`` enums, light enough for a machine's start-up path
(the records that describe jobs and machines are in :mod:`balloons.info`)."""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """Where a job is in its life. ``TERMINAL`` holds the statuses it never leaves."""

    QUEUED = "QUEUED"  # stored, waiting for a machine (a slot, or its time)
    STARTING = "STARTING"  # a machine is being launched for it
    RUNNING = "RUNNING"  # a worker has claimed it and runs the task
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    #: Not a status a job goes through: what readers report for a record whose status cannot
    #: be read (altered in Redis). No script changes such a record, so it is terminal too:
    #: ``job.result()`` raises :class:`~balloons.JobFailed` with reason ``record_invalid``.
    INVALID = "INVALID"

    @property
    def terminal(self) -> bool:
        """Whether the status is final: ``SUCCEEDED``, ``FAILED``, ``CANCELLED`` or ``INVALID``."""
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INVALID}
)


class Reason(enum.StrEnum):
    """Why an attempt failed. ``exit_code=N`` reasons are built with :func:`exit_reason`."""

    TASK_ERROR = "task_error"
    OOM = "oom"
    TIMEOUT = "timeout"
    KILLED = "killed"
    LOST = "lost"
    BOOT_TIMEOUT = "boot_timeout"
    CANCELLED = "cancelled"
    SIGNATURE_INVALID = "signature_invalid"
    RECORD_INVALID = "record_invalid"
    TASK_NOT_FOUND = "task_not_found"
    SERIALIZATION = "serialization"
    LAUNCH_FAILED = "launch_failed"
    COST_CAP = "cost_cap"  # the job's max_cost was reached: its machine was stopped
    # Queued by code of a version no machine runs any more, and the current code cannot run it
    # (its task is gone, or its arguments no longer bind): see balloons.control.versions.
    VERSION_GONE = "version_gone"
    # A reader's verdict, never an attempt's: the stored result or error does not verify with
    # the app's secret (altered in Redis, or copied from another job or attempt).
    RESULT_INVALID = "result_invalid"

    def __str__(self) -> str:
        return self.value


def exit_reason(code: int) -> str:
    """The reason string for a machine that exited with ``code`` before recording a result."""
    return f"exit_code={code}"
