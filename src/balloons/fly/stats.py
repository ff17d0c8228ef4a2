"""Counts of the Fly Machines API calls this process made, for ``/metrics``.

Each HTTP try is one call, labelled by its action (``create``, ``get``, ``stop``, ...) and its
outcome: the status code's class (``2xx``, ``4xx``, ``429``, ``5xx``) or ``transport`` when no
answer came. The counts live in this process (the client, a supervisor thread or the dashboard
that launches and inspects machines), as Prometheus counters should.
"""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_calls: Counter[tuple[str, str]] = Counter()


def outcome(status: int | None) -> str:
    """The outcome of a call with HTTP ``status``: ``2xx``, ``4xx``, ..., ``429``, or
    ``transport`` when no answer came."""
    if status is None:
        return "transport"
    if status == 429:
        return "429"
    return f"{status // 100}xx"


def count(action: str, status: int | None) -> None:
    """Count one call of ``action`` with that outcome."""
    with _lock:
        _calls[(action, outcome(status))] += 1


def snapshot() -> dict[tuple[str, str], int]:
    """``(action, outcome) -> calls`` so far."""
    with _lock:
        return dict(_calls)


def is_error(outcome_: str) -> bool:
    """Whether an outcome counts as an error (anything but ``2xx`` and ``3xx``)."""
    return outcome_ not in ("2xx", "3xx")
