"""Command jobs whose machine runs the command itself (a backend that runs images: Fly).

Such a machine has no worker of balloons': it never claims its slot, and heartbeats only if
its command speaks the HTTP worker protocol. So the supervisor watches it, as a worker's
heartbeat would: while the backend says the slot's machine runs, it renews the slot's lease
(``HEARTBEAT``, with the job's deadline) and stops the machine once its job is cancelled or
past its deadline by more than the grace. Once the machine has ended, the slot lapses and is
reclaimed as any other, with the machine's exit as the reason; :func:`command_exit` then
judges the exit code as the job asked (:func:`balloons.control.reclaim.end_slot`).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from ..registry import COMMAND_TASK
from ..retry import RetryPlan
from ..signing import sign_outcome, verify
from ..store import lua
from ..store.keys import PoolKeys
from ..untrusted import MAX_ATTEMPT, integer, timestamp

if TYPE_CHECKING:
    from collections.abc import Callable

    from .slots import SlotChecks

#: Seconds before its lease ends when a command machine's slot is looked at.
WATCH_AHEAD = 5.0


def watch(
    sup: SlotChecks, pk: PoolKeys, slot: str, lease: float, info: dict[str, Any], now: float
) -> bool:
    """Renew the lease of a command job's slot while its machine runs (stopping the machine
    of a cancelled or overdue job). True when it did (the slot is not to be reclaimed);
    False for any other slot, or once the machine has ended."""
    backend = sup.app.backend
    ulid = info.get("job")
    if not getattr(backend, "runs_images", False) or not isinstance(ulid, str) or not ulid:
        return False
    if lease - now > WATCH_AHEAD:
        return False
    attempt = integer(info.get("attempt"), 1, MAX_ATTEMPT)
    head = _command_head(sup, pk, ulid)
    if head is None or attempt is None:
        return False
    machine = info.get("machine")
    found = []
    with contextlib.suppress(Exception):
        if isinstance(machine, str) and machine:
            m = backend.inspect(machine)
            found = [m] if m is not None else []
        else:
            found = backend.list(slot=slot)
    running = [m for m in found if m.running]
    if not running:
        return False
    timeout = float(head.get("timeout") or 0) or 86400.0
    since = timestamp(info.get("since")) or now
    written = timestamp(info.get("deadline"))
    deadline = written or since + sup.app.get_pool(pk.pool).boot_timeout + timeout
    cancelled = timestamp(info.get("cancel"))
    if (cancelled and now - cancelled > sup.cancel_grace) or now - deadline > sup.timeout_grace:
        for m in running:
            last = sup._stopped_machines.get(m.id, 0.0)
            if now - last > sup.cancel_grace:
                sup._stopped_machines[m.id] = now
                with contextlib.suppress(Exception):
                    backend.stop(m.id)
        return False  # its lease runs out; the stop's exit is then its reason
    # The deadline is written once (as a worker's heartbeat does), in the server's clock: a
    # step's own clock reading may be a few API calls old by now.
    until = ""
    if written is None:
        until = f"+{max(0.0, deadline - sup.app.store.server_time(pk))!r}"
    sup.app.store.eval(lua.HEARTBEAT, pk, slot, ulid, attempt, until, "", jobs=(ulid,))
    return True


def _command_head(sup: SlotChecks, pk: PoolKeys, ulid: str) -> dict[str, Any] | None:
    """The verified payload of a command job, else None."""
    from ..commands import read_command

    with contextlib.suppress(Exception):
        got = read_command(sup.app, pk.pool, ulid)
        return got[0] if got is not None else None
    return None


def command_exit(
    secret: bytes,
    eval_: Callable[..., Any],
    pk: PoolKeys,
    ulid: str,
    attempt: int,
    rec: list[Any],
    reason: str,
    retry: RetryPlan | None,
) -> RetryPlan | None:
    """Judge the exit of a command job's own machine (``reason`` ``exit_code=N``) as the job
    asked, for a record (payload, args, sig, grant) that verifies: 0 records its success
    (result ``null``, unless its command completed with one over the protocol: the first
    outcome wins, fenced by the attempt); N keeps the retry only when N is one of its
    ``retry_on_exit_codes``. Returns the retry to schedule with the failure."""
    payload, args, sig = rec[0], rec[1], rec[2]
    if not payload or not verify(secret, payload, args or b"", sig or b""):
        return retry
    try:
        head = json.loads(payload)
        spec = json.loads(args)["args"][0]
        codes = spec["retry_exit"]
    except (ValueError, KeyError, IndexError, TypeError):
        return retry
    if head.get("task") != COMMAND_TASK or not reason.startswith("exit_code="):
        return retry
    code = reason.removeprefix("exit_code=")
    if code == "0":
        job_id = f"{pk.pool}.{ulid}"
        tag = sign_outcome(secret, "result/json", job_id, attempt, b"null")
        eval_(
            lua.FINISH, pk, ulid, attempt, "", "SUCCEEDED", b"null", "", "", "", "", tag, "",
            jobs=(ulid,),
        )  # fmt: skip
        return None
    listed = isinstance(codes, list) and code.isdigit() and int(code) in codes
    return retry if listed else None
