"""``GET .../wait``: block until a machine reaches one of the wanted states.

``state`` may be repeated or comma-separated; besides real states it accepts ``settled``
(any resting state: created, started, stopped, destroyed). Without ``from_event_id`` the
machine's *current* state is checked; with it, every state the machine reached after that
event counts, so a client that saw event X cannot miss a quick ``started → stopped``.
``version``/``instance_id`` restrict the wait to that machine version. Timeouts are capped at
60 s; running out answers 408 with Fly's message. A machine forgotten while waited on is 404.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .config import DEFAULT_WAIT_TIMEOUT, MAX_WAIT_TIMEOUT
from .errors import ApiError, bad_request
from .model import SETTLED_STATES, Machine, MachineState
from .state import Emulator

#: Values ``state`` may take (the spec's enum; ``suspended`` and ``failed`` never happen here).
WAITABLE = frozenset({"started", "stopped", "suspended", "destroyed", "failed", "settled"})


def parse_states(values: list[str]) -> list[str]:
    """Repeated and comma-separated ``state`` values, in order; default ``started``."""
    states = [part.strip() for value in values for part in value.split(",") if part.strip()]
    for state in states:
        if state not in WAITABLE:
            raise bad_request(f"invalid state {state!r}: expected one of {sorted(WAITABLE)}")
    return states or ["started"]


def capped_timeout(requested: float | None) -> float:
    """Seconds a wait may block: ``requested`` (default 60), never more than Fly's 60."""
    return DEFAULT_WAIT_TIMEOUT if requested is None else min(requested, MAX_WAIT_TIMEOUT)


def _matches(state: MachineState, wanted: list[str]) -> bool:
    return str(state) in wanted or ("settled" in wanted and state in SETTLED_STATES)


def _result(
    machine: Machine, wanted: list[str], version: str | None, from_event_id: str | None
) -> dict[str, Any] | None:
    if version and version != machine.instance_id:
        return None
    if from_event_id:
        candidates = [(tid, st) for tid, st in machine.transitions if tid > from_event_id]
    else:
        last_id = machine.transitions[-1][0] if machine.transitions else ""
        candidates = [(last_id, machine.state)]
    for transition_id, state in candidates:
        if _matches(state, wanted):
            return {"ok": True, "state": str(state), "event_id": transition_id,
                    "version": machine.instance_id}  # fmt: skip
    return None


async def wait(
    emu: Emulator,
    app_name: str,
    machine_id: str,
    *,
    wanted: list[str],
    timeout: float | None,
    version: str | None,
    from_event_id: str | None,
) -> dict[str, Any]:
    """The wait answer, or 408/404 as Fly gives them."""
    deadline = time.monotonic() + capped_timeout(timeout)
    while True:
        entry = emu.notifier.subscribe()
        try:
            with emu.lock:
                machine = emu.machine(app_name, machine_id)
                found = _result(machine, wanted, version, from_event_id)
                current = machine.state
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApiError(
                    408,
                    "deadline_exceeded: machine failed to reach desired state, "
                    f"{','.join(wanted)}, currently {current}",
                )
            try:
                await asyncio.wait_for(entry[1].wait(), remaining)
            except TimeoutError:
                pass
        finally:
            emu.notifier.unsubscribe(entry)
