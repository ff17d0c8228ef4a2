"""Noticing, while waiting for a result, a machine that ended without recording an outcome.

A local machine has a parent (the fork server) that sees it die and fails its attempt at once;
such a backend says so with ``reports_exits = True``. A Fly Machine has none: when it is
killed, runs out of memory or is stopped before its worker records anything, only the
platform knows. So a waiter (``job.result()``) that has waited :data:`FIRST_CHECK` seconds
asks the backend about the attempt's machine, then again at growing intervals (never more
often than every :data:`FIRST_CHECK` seconds, at most :data:`MAX_INTERVAL` apart): a job that
finishes sooner costs no API call. When the machine has stopped, the attempt is failed with
the machine's own account (``oom``, ``killed``, ``cancelled``, ``exit_code=N``, ``lost``).
When the task runs :data:`TIMEOUT_GRACE` seconds past its timeout (code that ignores the
worker's deadline), the machine is destroyed and the attempt fails with ``timeout``.

Failing goes through the ``FINISH`` script, which refuses if the worker recorded an outcome
meanwhile, so a check can never overwrite a result.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from .status import MachineInfo, Reason, exit_reason

if TYPE_CHECKING:
    from .app import App
    from .keys import JobKeys

#: Seconds a waiter waits before its first look at the machine, and the shortest interval.
FIRST_CHECK = 5.0
#: Longest interval between two looks.
MAX_INTERVAL = 60.0
#: Seconds past a task's run timeout before its machine is destroyed (as the fork server's).
TIMEOUT_GRACE = 5.0


def machine_outcome(info: MachineInfo) -> tuple[str, str] | None:
    """``(reason, message)`` for a machine that no longer runs; ``None`` while it runs."""
    if info.running or info.state == "stopping":
        return None
    what = f"machine {info.id} {info.state}"
    if info.oom_killed:
        return Reason.OOM.value, f"{what}: it ran out of memory (oom_killed)"
    if info.requested_stop:
        return Reason.CANCELLED.value, f"{what}: it was stopped before the job finished"
    if info.signal:
        return Reason.KILLED.value, f"{what}: it was killed by signal {info.signal}"
    if info.exit_code is not None:
        return exit_reason(info.exit_code), (
            f"{what}: its worker exited with code {info.exit_code} without recording a result"
        )
    return Reason.LOST.value, f"{what} without recording an outcome"


class Watch:
    """The machine checks of one ``result()`` call."""

    def __init__(self, app: App, keys: JobKeys) -> None:
        self.app = app
        self.keys = keys
        self.interval = FIRST_CHECK
        self.at = time.monotonic() + FIRST_CHECK
        self.enabled = True

    def until_due(self) -> float:
        """Seconds until the next check (``inf`` when the backend reports exits itself)."""
        return max(0.0, self.at - time.monotonic()) if self.enabled else float("inf")

    def check_if_due(self, rec: dict[str, bytes]) -> bool:
        """Check the attempt's machine if it is time; True if a check was made."""
        if not self.enabled or time.monotonic() < self.at:
            return False
        if getattr(self.app.backend, "reports_exits", False):
            self.enabled = False
            return False
        self.interval = min(self.interval * 2, MAX_INTERVAL)
        self.at = time.monotonic() + self.interval
        try:
            self._check(rec)
        except Exception as exc:  # a backend that cannot answer now must not break result()
            import logging

            logging.getLogger("balloons").warning(
                "job %s: could not check its machine: %s", self.keys.job_id, exc
            )
        return True

    def _check(self, rec: dict[str, bytes]) -> None:
        status = rec.get("status", b"").decode()
        machine = rec.get("machine", b"").decode()
        attempt = int(rec.get("attempt") or 1)
        backend = self.app.backend
        if status == "STARTING":
            # Not claimed yet: the record has no machine id. A backend that can find the
            # attempt's machine tells whether it died before its worker got going.
            find = getattr(backend, "find_attempt", None)
            found = find(self.keys.job_id, attempt) if find is not None else None
            early = machine_outcome(found) if found is not None else None
            if early is not None:
                self.app.store.fail(self.keys, attempt, *early)
            return
        if status != "RUNNING" or not machine:
            return
        info = backend.inspect(machine)
        if info is None:
            return  # a backend that does not know the machine cannot tell how it ended
        outcome = machine_outcome(info)
        if outcome is None:
            overdue = self._overdue_at(rec)
            if overdue is None:
                return
            if time.time() < overdue:
                self.at = min(self.at, time.monotonic() + overdue - time.time() + 0.05)
                return
            backend.destroy(machine)
            timeout = self._timeout(rec)
            outcome = (
                Reason.TIMEOUT.value,
                f"the task ran past its timeout of {timeout:g}s and did not stop; its machine "
                f"{machine} was killed",
            )
        self.app.store.fail(self.keys, attempt, *outcome)

    @staticmethod
    def _timeout(rec: dict[str, bytes]) -> float:
        try:
            return float(json.loads(rec.get("payload") or b"{}").get("timeout") or 0)
        except (ValueError, AttributeError):
            return 0.0

    def _overdue_at(self, rec: dict[str, bytes]) -> float | None:
        timeout = self._timeout(rec)
        started = rec.get("started")
        if timeout <= 0 or not started:
            return None
        return float(started) + timeout + TIMEOUT_GRACE
