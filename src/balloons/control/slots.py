"""The supervisor's look at one slot of a pool: reclaim it when its lease lapsed (no heartbeat,
or a machine that never booted) or when the backend says its booting machine already died,
asking the backend why its machine stopped (the attempt ends with that reason, retried as its
policy allows); else stop its machine when its job was cancelled or is overdue. A base of
:class:`~balloons.control.supervisor.Supervisor`, whose step and waiter's check run it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..info import MachineInfo, Reason
from ..store.keys import PoolKeys
from ..store.replies import Code
from ..untrusted import MAX_ATTEMPT, integer, timestamp
from . import commands
from .reclaim import deadline_reason, end_slot, machine_outcome

if TYPE_CHECKING:
    from .supervisor import Control, StepReport

log = logging.getLogger("balloons.control.supervisor")


class SlotChecks:
    """Reclaiming a slot whose machine is gone, and stopping an overdue one (see the module's
    docstring); the supervisor's settings and memory it reads are declared here."""

    app: Control
    cancel_grace: float
    timeout_grace: float
    boot_probe: float
    _stopped_machines: dict[str, float]  # machine -> when it was last stopped
    _probed: dict[str, float]  # slot -> when its booting machine was last asked

    def _reclaim(self, pk: PoolKeys, now: float, report: StepReport, ended: bool = False) -> None:
        for slot, lease, info in self.app.store.slots(pk):
            try:
                self._reclaim_slot(pk, slot, lease, info, now, report, ended=ended)
            except Exception as exc:  # one slot must not keep the others from being looked at
                log.exception("supervisor: pool %s, slot %s: %s", pk.pool, slot, exc)
                report.errors.append(f"{pk.pool}: slot {slot}: {exc}")

    def _reclaim_slot(
        self,
        pk: PoolKeys,
        slot: str,
        lease: float,
        info: dict[str, Any],
        now: float,
        report: StepReport,
        *,
        ended: bool = False,
    ) -> None:
        """Reclaim ``slot`` if its lease lapsed or its booting machine already died; stop its
        machine if its job was cancelled or is overdue. With ``ended``, only reclaim it, and
        only if the backend says its machine has ended, whatever the slot's state and lease
        (:meth:`recover`)."""
        store = self.app.store
        if not ended and commands.watch(self, pk, slot, lease, info, now):
            return  # a command job's own machine still runs: its lease was renewed
        machine = _text(info.get("machine"))
        died_booting = None
        if ended or (
            lease >= now
            and info.get("state") == "starting"
            and (info.get("job") or info.get("machine"))
        ):
            died_booting = self._died_booting(pk, slot, info, now, at_once=ended)
            if ended and died_booting is None:
                return
        if lease < now or died_booting is not None:
            reason, message = died_booting or self._why(pk, slot, info, now)
            lost = end_slot(
                lambda *cmd: store.redis.execute_command(*cmd),
                store.eval,
                pk,
                slot,
                reason,
                message,
                secret=self.app.secret.encode(),
                only_if_expired=died_booting is None,
                commands=getattr(self.app.backend, "runs_images", False),
            )
            if lost.code is Code.OK:
                report.reclaimed.append((slot, reason))
                lifecycle.emit(
                    "machine_gone",
                    logging.WARNING,
                    job=f"{pk.pool}.{_text(info.get('job'))}" if info.get("job") else "-",
                    attempt=integer(info.get("attempt"), 0, MAX_ATTEMPT) or 0,
                    machine=machine or "-",
                    slot=slot,
                    reason=reason,
                    lease_lapsed_s=now - lease,
                    message=message,
                )
                if machine:
                    self._destroy(machine)
            return
        if machine and info.get("job"):
            self._stop_if_overdue(machine, info, now, report)

    def _stop_if_overdue(
        self, machine: str, info: dict[str, Any], now: float, report: StepReport
    ) -> None:
        """Stop the machine of a slot whose job was cancelled more than ``cancel_grace``
        seconds ago, or is past its deadline by more than ``timeout_grace`` (at most once per
        ``cancel_grace``)."""
        # Times as the worker and CANCEL write them; anything else (altered) is no time at all.
        cancelled = timestamp(info.get("cancel"))
        deadline = timestamp(info.get("deadline"))
        if (cancelled and now - cancelled > self.cancel_grace) or (
            deadline and now - deadline > self.timeout_grace
        ):
            last = self._stopped_machines.get(machine, 0.0)
            if now - last > self.cancel_grace:
                self._stopped_machines[machine] = now
                with contextlib.suppress(Exception):
                    self.app.backend.stop(machine)
                    report.stopped.append(machine)

    def _died_booting(
        self, pk: PoolKeys, slot: str, info: dict[str, Any], now: float, at_once: bool = False
    ) -> tuple[str, str] | None:
        """A slot still booting after ``boot_probe`` seconds: ask the backend (at most every
        ``boot_probe`` seconds) whether its machine already died, rather than wait out the
        whole boot timeout. The reason, or None while it may still come up. With ``at_once``,
        whatever the slot's age and state."""
        since = timestamp(info.get("since")) or now
        probed = self._probed.get(slot, 0.0)
        if not at_once and (now - since < self.boot_probe or now - probed < self.boot_probe):
            return None
        self._probed[slot] = now
        if len(self._probed) > 10_000:
            self._probed.clear()
        machine = _text(info.get("machine"))
        if machine:  # a standby machine being started: its id is known
            m = None
            with contextlib.suppress(Exception):
                m = self.app.backend.inspect(machine)
            found = [m] if m is not None else []
        else:
            found = self._machines_of_slot(pk, slot)
        if not found or any(m.running for m in found):
            return None
        return _reason_of(found[0])

    def _why(
        self, pk: PoolKeys, slot: str, info: dict[str, Any], now: float | None = None
    ) -> tuple[str, str]:
        """Ask the backend why a slot's machine stopped heartbeating (``now``: the server's
        clock, read when not given)."""
        machine = _text(info.get("machine"))
        if not machine:
            found = self._machines_of_slot(pk, slot)
            if not found:
                return (
                    Reason.BOOT_TIMEOUT.value,
                    "no machine started for the job within its pool's boot timeout",
                )
            m = found[0]
        else:
            inspected = None
            with contextlib.suppress(Exception):
                inspected = self.app.backend.inspect(machine)
            if inspected is None:
                return Reason.LOST.value, f"machine {machine} is gone without a word"
            m = inspected
        reason, message = _reason_of(m)
        # Stopped by a supervisor for running past its deadline, or silent past it: say which
        # deadline (end_slot, reading the job's timeout too, says the same).
        if now is None:
            now = self.app.store.server_time(pk)
        return deadline_reason(info, {}, reason, message, now)

    def _machines_of_slot(self, pk: PoolKeys, slot: str) -> list[MachineInfo]:
        with contextlib.suppress(Exception):
            return self.app.backend.list(slot=slot)
        return []

    def _destroy(self, machine: str) -> None:
        with contextlib.suppress(Exception):
            self.app.backend.destroy(machine)


def _reason_of(m: MachineInfo) -> tuple[str, str]:
    found = machine_outcome(m)
    if found is not None:
        return found
    return Reason.LOST.value, f"machine {m.id} stopped heartbeating while still running"


def _text(raw: object) -> str:
    """A string field of a slot entry; ``""`` for anything else (altered in Redis)."""
    return raw if isinstance(raw, str) else ""
