"""Proving that a pid named in a machine record is the process the fork server launched.

A machine record in Redis names its process (``pid``), and any Redis writer can change it. The
fork server signals only children in its own table; when it does not know a machine (it was
killed, or belongs to another version of balloons), :class:`LocalBackend` signals a process only
if the record proves it is the machine's:

* ``start`` and ``sid``: the process's start time (``/proc/PID/stat`` field 22, clock ticks
  since boot) and session (field 6), recorded at launch. A machine leads a session of its own,
  so ``sid`` is its pid. A pid reused by another process has another start time.
* ``proof``: an HMAC-SHA256, with the app's secret, over the machine id, host, pid, session and
  start time. ``/proc`` is readable by every local user, so without it anyone able to write a
  record and read ``/proc`` could name another process with its true start time.

Without ``/proc`` (macOS) no pid can be proved, so none is signalled: only the fork server's
own children are.
"""

from __future__ import annotations

import hmac
import os

_DOMAIN = b"balloons/machine/v1\n"
#: Linux's PID_MAX_LIMIT: no pid is larger (``/proc/sys/kernel/pid_max`` is at most this).
PID_MAX = 4_194_304


def proof(secret: str, machine: str, host: str, pid: int, sid: int, start: int) -> str:
    """The record's ``proof`` field: binds the machine id to one process on one host."""
    message = _DOMAIN + f"{machine}\n{host}\n{pid}\n{sid}\n{start}".encode()
    return hmac.digest(secret.encode(), message, "sha256").hex()


def stat(pid: int) -> tuple[int, int] | None:
    """``(session, start time)`` of process ``pid`` from ``/proc`` (a zombie's too: it still
    holds its pid); ``None`` when there is no such process or no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # Field 2, the command name in parentheses, may hold spaces and parentheses itself.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


def fields(secret: str, machine: str, host: str, pid: int) -> dict[str, object]:
    """What proves a forked machine's process is the machine's to a backend whose fork server
    is gone (a machine record's fields): its session (its own: the child's first act is
    ``setsid``), its start time and their proof. Read by the fork server before it can reap
    the child, so its stat is there (a zombie's at worst); none without ``/proc`` (the pid is
    then never signalled but by that server)."""
    found = stat(pid)
    if found is None:
        return {}
    start = found[1]
    return {"sid": pid, "start": start, "proof": proof(secret, machine, host, pid, pid, start)}


def has_proc() -> bool:
    """Whether ``/proc`` can be read here (a process's start time and session prove it)."""
    return os.path.exists("/proc/self/stat")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _number(value: str) -> int | None:
    """A decimal number of at most 20 digits (no sign, no spaces), else ``None``."""
    if 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        return int(value)
    return None


def verify(record: dict[str, str], machine: str, host: str, secret: str) -> int | str:
    """The pid to signal for ``machine``'s record, or why it must not be signalled.

    The record is hostile input: every field may be missing, malformed or forged."""
    raw_pid = record.get("pid", "")
    pid = _number(raw_pid)
    if pid is None:
        return f"its record's pid {_shown(raw_pid)} is not a process id"
    if not 2 <= pid <= PID_MAX:
        return f"its record's pid {pid} is out of range (expected 2 to {PID_MAX})"
    if not has_proc():
        return f"process {pid} cannot be proved the machine's on a system without /proc"
    sid, start = _number(record.get("sid", "")), _number(record.get("start", ""))
    if sid is None or start is None:
        return f"its record has no valid session and start time for process {pid}"
    if sid != pid:
        return f"its record's session {sid} is not its own (pid {pid})"
    given = record.get("proof", "").encode("utf-8", "replace")
    if not hmac.compare_digest(proof(secret, machine, host, pid, sid, start).encode(), given):
        return f"its record for process {pid} is not signed with the app's secret"
    found = stat(pid)
    if found is None:
        return f"its process {pid} has exited"
    got_sid, got_start = found
    if got_start != start:
        return (
            f"process {pid} is not the machine's: it started at tick {got_start}, the machine "
            f"at tick {start} (the pid was reused)"
        )
    if got_sid != sid:
        return f"process {pid} is not the machine's: it is in session {got_sid}, not {sid}"
    return pid
