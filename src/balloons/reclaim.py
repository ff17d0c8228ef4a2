"""Ending a slot whose machine is gone, the same way wherever it is noticed.

The local fork server (through the worker's RESP client) and the supervisor (through
redis-py) both call :func:`end_slot`: read what the slot was running, decide on a retry from
the job's policy, and free the slot and end the attempt in one script (:data:`lua.LOST`),
which refuses if the slot moved on meanwhile, so the read is simply repeated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from . import lua
from .keys import PoolKeys
from .retry import decide
from .status import MachineInfo, Reason, exit_reason

Execute = Callable[..., Any]  # (command, *args) -> reply
Eval = Callable[..., Any]  # (script, pool keys, *args) -> reply


def end_slot(
    execute: Execute,
    eval_: Eval,
    pk: PoolKeys,
    slot: str,
    reason: str,
    message: str,
    *,
    only_if_expired: bool = False,
) -> list[Any]:
    """Free ``slot`` and end the attempt it runs (if any) with ``reason``.

    Returns the LOST script's reply: ``[1, ulid, attempt, machine, ended]`` when the slot was
    freed, ``[0]`` when there was nothing to do (already freed, or its lease was renewed).
    """
    error = json.dumps({"type": "", "message": message, "traceback": "", "reason": reason})
    reply: list[Any] = [0]
    for _ in range(5):
        raw = execute("HGET", pk.slot, slot)
        try:
            info = json.loads(raw) if raw else {}
            job, n = info.get("job") or "", info.get("attempt") or 0
        except (ValueError, AttributeError):
            job, n = "", 0
        # An entry altered in Redis names no job here; LOST reads the slot's name instead.
        ulid = job if isinstance(job, str) else ""
        attempt = int(n) if ulid and isinstance(n, int | float) else 0
        retry = ("", "")
        if ulid:
            payload = execute("HGET", pk.job(ulid), "payload")
            try:
                spec = json.loads(payload) if payload else {}
            except ValueError:
                spec = {}
            # The payload is not verified here: a forged retry count only earns the job more
            # attempts, each of which its worker refuses unless the signature holds.
            retry = decide(spec if isinstance(spec, dict) else {}, attempt, reason)
        reply = list(
            eval_(
                lua.LOST,
                pk,
                slot,
                ulid,
                attempt,
                error,
                reason,
                *retry,
                "1" if only_if_expired else "0",
            )
        )
        if reply[0] != -2:
            return reply
    return reply


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
