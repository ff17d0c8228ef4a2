"""Ending a slot whose machine is gone: one rule shared by the supervisor and the fork server.

It is apart from :mod:`balloons.control.supervisor` because the fork server runs it too, with the
worker's RESP client and no redis-py: it takes either client's commands as functions, and
loads nothing of the supervisor's loop.

The local fork server (through the worker's RESP client) and the supervisor (through
redis-py) both call :func:`end_slot`: read what the slot was running, decide on a retry from
the job's policy, and free the slot and end the attempt in one script (:data:`lua.LOST`),
which refuses if the slot moved on meanwhile, so the read is simply repeated. Both hold the
app's secret: the error they record is sealed with it, and so is a retry's grant.

A machine that ended without a word while its job ran past its deadline ends the attempt with
the deadline's reason (:func:`deadline_reason`), whoever noticed: what stopped it was a
supervisor's overdue stop, the worker's own hard stop, or a task holding the interpreter so
long that its heartbeat stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..info import MachineInfo, Reason, exit_reason
from ..retry import RetryPlan, decide, retry_argv
from ..signing import run_by, seal_error, sign_grant, verify
from ..store import lua, replies
from ..store.keys import PoolKeys, slot_job
from ..store.replies import Code, Lost

Execute = Callable[..., Any]  # (command, *args) -> reply
Eval = Callable[..., Any]  # (script, pool keys, *args, jobs=ULIDs the args name) -> reply


def end_slot(
    execute: Execute,
    eval_: Eval,
    pk: PoolKeys,
    slot: str,
    reason: str,
    message: str,
    *,
    secret: bytes,
    only_if_expired: bool = False,
    commands: bool = False,
) -> Lost:
    """Free ``slot`` and end the attempt it runs (if any) with ``reason``; ``secret`` seals the
    error and a retry's grant.

    Returns the LOST script's reply: code ``OK`` (with the job, attempt and machine the slot
    held) when the slot was freed, ``NONE`` when there was nothing to do (already freed, or
    its lease was renewed). With ``commands`` (a backend whose command jobs run on machines
    of their own), a command job's exit code is judged as the job asked
    (:func:`balloons.control.commands.command_exit`).
    """
    lost = replies.Lost(Code.NONE, "", 0, "", Code.NONE)
    now: float | None = None
    for _ in range(5):
        raw = execute("HGET", pk.slot, slot)
        try:
            info = json.loads(raw) if raw else {}
            job, raw_attempt = info.get("job") or "", info.get("attempt") or 0
        except (ValueError, AttributeError, RecursionError):
            info, job, raw_attempt = {}, "", 0
        # An entry altered in Redis names no job here; LOST reads the slot's name instead.
        ulid = job if isinstance(job, str) else ""
        number = _number(raw_attempt)  # None for NaN or infinity, which JSON decodes too
        attempt = int(number) if ulid and number is not None else 0
        why, text, retry = reason, message, None
        if ulid:
            rec = execute("HMGET", pk.job(ulid), "payload", "args", "sig", "grant")
            payload = rec[0] if isinstance(rec, list) and len(rec) == 4 else None
            try:
                spec = json.loads(payload) if payload else {}
            except (ValueError, RecursionError):
                spec = {}
            spec = spec if isinstance(spec, dict) else {}
            if now is None:
                now = server_time(eval_, pk)
            why, text = deadline_reason(info, spec, reason, message, now)
            retry = decide(spec, attempt, why)
            # A retry is granted (signed) only for an attempt its record lets run now: never
            # for a forged record, nor for a finished one put back in Redis past its TTL.
            if retry is not None and not _may_run(secret, f"{pk.pool}.{ulid}", attempt, spec, rec):
                retry = None
            if commands and isinstance(rec, list) and len(rec) == 4:
                from .commands import command_exit

                retry = command_exit(secret, eval_, pk, ulid, attempt, rec, why, retry)
        args = lost_args(secret, pk, slot, ulid, attempt, why, text, retry, only_if_expired)
        lost = replies.lost(eval_(lua.LOST, pk, *args, jobs=(ulid, slot_job(slot))))
        if lost.code is not Code.MOVED:
            return lost
    return lost


def _may_run(
    secret: bytes, job_id: str, attempt: int, spec: dict[str, Any], rec: list[Any]
) -> bool:
    """Whether ``rec`` (payload, args, sig, grant) is a record attempt ``attempt`` may run now:
    signed with the secret, for this job, and no older than its TTL (see the worker)."""
    payload, args, sig, grant = rec
    if not payload or not verify(secret, payload, args or b"", sig or b""):
        return False
    try:
        until = run_by(secret, job_id, attempt, spec, grant) if spec.get("id") == job_id else None
    except (ValueError, KeyError, TypeError):
        return False
    return until is not None and time.time() <= until + lua.FRESH_SLACK


def lost_args(
    secret: bytes,
    pk: PoolKeys,
    slot: str,
    ulid: str,
    attempt: int,
    reason: str,
    message: str,
    retry: RetryPlan | None,
    only_if_expired: bool,
) -> tuple[Any, ...]:
    """The arguments of :data:`lua.LOST` after the pool's, for the attempt it ends: with the
    error sealed, its tag and the retry's grant (``""``: none). With no job named (an altered
    slot entry), the attempt is the one the slot's name gives, which LOST ends when it is
    still its job's."""
    named, _, n = slot.rpartition("-")
    whose = (ulid, attempt) if ulid else (named, int(n) if n.isdigit() else 0)
    job_id = f"{pk.pool}.{whose[0]}"
    error, tag = seal_error(
        secret,
        job_id,
        whose[1],
        {"type": "", "message": message, "traceback": "", "reason": reason},
    )
    argv = retry_argv(retry)
    grant = sign_grant(secret, job_id, attempt + 1, time.time()) if ulid and argv[0] else ""
    expired = "1" if only_if_expired else "0"
    return (slot, ulid, attempt, error, reason, *argv, expired, tag, grant)


def server_time(eval_: Eval, pk: PoolKeys) -> float:
    """The clock of the Redis server (on a cluster, of the node serving ``pk``) through either
    client: deadlines in slots are written in it, so only it may say whether one has passed."""
    return replies.clock(eval_(lua.CLOCK, pk))


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


#: How a machine ended without a word, when its job was past its deadline: what that says.
_PAST_DEADLINE = {
    # Stopped on request, and the job was not cancelled: a supervisor's overdue stop.
    Reason.CANCELLED.value: "its machine was stopped",
    # Still running but silent: a task holding the interpreter keeps the heartbeat out too.
    Reason.LOST.value: (
        "its machine stopped heartbeating (a task holding the interpreter, as C code that "
        "never releases the GIL does, keeps the timeout signal and the heartbeat out); the "
        "machine was destroyed"
    ),
    # The worker's last-resort stop (faulthandler's watchdog, exit code 1).
    exit_reason(1): (
        "the timeout signal never got in (a task holding the interpreter), so the worker "
        "ended its machine; the stacks of its threads are in the machine's log"
    ),
}


def deadline_reason(
    info: Mapping[str, Any], spec: Mapping[str, Any], reason: str, message: str, now: float
) -> tuple[str, str]:
    """``(reason, message)`` for a slot whose machine ended with ``reason``: ``timeout`` (or
    ``cost_cap``) when it ended without a word while its job, not cancelled, ran past its
    deadline (the slot's, as its heartbeat wrote it, else its start plus the job's timeout);
    otherwise ``reason`` and ``message`` unchanged."""
    what = _PAST_DEADLINE.get(reason)
    if what is None or info.get("cancel"):
        return reason, message
    deadline = _number(info.get("deadline"))
    capped = deadline is not None and bool(info.get("capped"))
    if deadline is None:
        since, timeout = _number(info.get("since")), _number(spec.get("timeout"))
        if since is None or not timeout:
            return reason, message
        deadline = since + timeout
    if now <= deadline:
        return reason, message
    limit = "its max_cost" if capped else "its run timeout"
    machine = info.get("machine")
    where = f"machine {machine}: " if isinstance(machine, str) and machine else ""
    return (
        (Reason.COST_CAP if capped else Reason.TIMEOUT).value,
        f"{where}the job ran past {limit} and {what}",
    )


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)
