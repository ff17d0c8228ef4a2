"""Retry policy: which failures retry, and after how long. Pure functions, standard library only.

A task's policy travels in its signed payload (``retries``, ``backoff``, ``backoff_max``,
``mem_factor``, ``mem_max``), so the worker, the local fork server and the supervisor all decide
alike. The ``retry_on`` exception classes stay with the task: only the worker, which has them
imported, judges a task error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import random

# Failures of the machine, not of the task: they retry under the same budget.
MACHINE_REASONS = frozenset({"oom", "killed", "lost", "boot_timeout", "timeout"})
# Failures that another attempt cannot fix.
FINAL_REASONS = frozenset(
    {
        "signature_invalid",
        "record_invalid",
        "task_not_found",
        "serialization",
        "launch_failed",
        "cancelled",
        "cost_cap",
        "version_gone",
    }
)


class RetryPlan:
    """A retry that an end script schedules: the next attempt after ``delay`` seconds, on a
    machine with ``memory`` (``'FACTOR MAX'``: FACTOR times the memory, up to MAX MB; ``''``:
    the same). A plain slotted class: a ``NamedTuple`` costs every machine 2 ms to define."""

    __slots__ = ("delay", "memory")

    def __init__(self, delay: float, memory: str = "") -> None:
        self.delay = delay
        self.memory = memory

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPlan):
            return NotImplemented
        return (self.delay, self.memory) == (other.delay, other.memory)

    def __hash__(self) -> int:
        return hash((self.delay, self.memory))

    def __repr__(self) -> str:
        return f"RetryPlan(delay={self.delay!r}, memory={self.memory!r})"


def retry_argv(plan: RetryPlan | None) -> tuple[str, str]:
    """The end scripts' arguments for ``plan``: retry delay and memory, ``''`` for none."""
    if plan is None:
        return "", ""
    if isinstance(plan, RetryPlan):
        return f"{plan.delay:.3f}", plan.memory
    return plan  # already the scripts' own pair of strings


class Retry(Exception):
    """Raise inside a task to ask for another attempt: ``raise balloons.Retry(delay=30)``.

    ``delay`` overrides the task's backoff for this retry; the task's ``retries`` budget still
    applies (when it is spent, the job fails with this exception).
    """

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and (
            isinstance(delay, bool)
            or not isinstance(delay, (int, float))
            or not 0 <= delay <= 1e9  # NaN and infinity too
        ):
            raise ValueError(
                f"Retry delay must be a number of seconds from 0 to 1e9, got {delay!r}"
            )
        self.delay = delay


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: ``base * 2**(attempt-1)``, capped, with jitter
    drawn from the upper half (so retries of a burst spread out but never come early)."""
    delay: float = min(cap, base * (2 ** max(0, attempt - 1)))
    if rng is None:
        import random

        rng = random.Random()
    r: float = rng.random()
    return delay * (0.5 + 0.5 * r)


def decide(
    spec: dict[str, Any],
    attempt: int,
    reason: str,
    *,
    requested_delay: float | None = None,
) -> RetryPlan | None:
    """The retry to schedule for a failed attempt, or None: no retry.

    ``spec`` is the job's payload; ``attempt`` the number of the attempt that failed. A policy
    that does not parse (a payload altered in Redis) means no retry, never an error.
    """
    if reason in FINAL_REASONS:
        return None
    try:
        return _decide(spec, attempt, reason, requested_delay)
    except (TypeError, ValueError, OverflowError):
        return None


def _decide(
    spec: dict[str, Any], attempt: int, reason: str, requested_delay: float | None
) -> RetryPlan | None:
    retries = int(spec.get("retries") or 0)
    if attempt > retries:
        return None
    if requested_delay is not None:
        delay = float(requested_delay)
    else:
        # 0 is a backoff a task may ask for (retry at once): only a missing one is the default.
        base, cap = spec.get("backoff"), spec.get("backoff_max")
        delay = backoff(
            attempt, 1.0 if base is None else float(base), 300.0 if cap is None else float(cap)
        )
    memory = ""
    factor = float(spec.get("mem_factor") or 1.0)
    if reason == "oom" and factor > 1.0:
        limit = int(spec.get("mem_max") or int(spec.get("memory_mb") or 256) * 8)
        memory = f"{factor:g} {limit}"
    return RetryPlan(delay, memory)
