"""The replies of the control plane's scripts, decoded: ``LOST``, ``CANCEL``,
``MACHINE_WANTED``, ``TRIM_STANDBY`` and ``STRANDED``. Read as
:mod:`balloons.store.replies` explains; a machine never imports this module.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ...untrusted import MAX_ATTEMPT, integer
from . import (
    _GONE,
    _MOVED,
    _NONE,
    _OK,
    _REFUSED,
    Code,
    _code,
    _int,
    _item,
    _items,
    _length,
    _Reply,
    _seconds,
    _text,
    ended,
)


class Lost(_Reply):
    """``LOST``: the slot freed (``OK``) with the job and attempt it held and what became of
    that attempt (``ended``: ``OK``, ``RETRY``, a guard, ``NONE`` with no job); ``NONE``
    when there was nothing to do; ``MOVED`` when the slot moved on to another job."""

    __slots__ = ()
    code: Code = _item(0)
    ulid: str = _item(1)
    attempt: int = _item(2)
    machine: str = _item(3)
    ended: Code = _item(4)


class Cancelled(_Reply):
    """``CANCEL``: the job's status before (``OK``), or the guard (``GONE``, ``REFUSED`` with
    the status it had ended in); the slot and machine it held."""

    __slots__ = ()
    code: Code = _item(0)
    status: str = _item(1)
    slot: str = _item(2)
    machine: str = _item(3)


class Wanted(_Reply):
    """``MACHINE_WANTED``: whether the machine is in its pool's standby set; its slot's
    lease."""

    __slots__ = ()
    standby: bool = _item(0)
    lease: float | None = _item(1)


class Stranded(_Reply):
    """``STRANDED``'s scan: a job queued by a code version no machine runs any more (its
    ``ulid``) and the ``attempt`` it waits to start."""

    __slots__ = ()
    ulid: str = _item(0)
    attempt: int = _item(1)


def lost(raw: Any) -> Lost:
    """``LOST``'s reply: the attempt ended, or why not (no such slot, or the job moved on)."""
    items = _items("LOST", raw, (1, 5))
    code = _code("LOST", items, (_OK, _NONE, _MOVED))
    if code is not _OK:
        _length("LOST", raw, 1)
        return Lost(code, "", 0, "", _NONE)
    _length("LOST", raw, 5)
    return Lost(
        code,
        _text("LOST", items[1]),
        _int("LOST", items[2]),
        _text("LOST", items[3]),
        ended(items[4], "LOST") if items[4] != 0 else _NONE,
    )


def cancel(raw: Any) -> Cancelled:
    """``CANCEL``'s reply: the job's status before, or code ``REFUSED`` (it had ended) or
    ``GONE`` (no such job)."""
    items = _items("CANCEL", raw, (2, 4))
    code = _code("CANCEL", items, (_OK, _GONE, _REFUSED))
    if code is not _OK:
        _length("CANCEL", raw, 2)
        return Cancelled(code, _text("CANCEL", items[1]), "", "")
    _length("CANCEL", raw, 4)
    status, slot, machine = (_text("CANCEL", x) for x in items[1:4])
    return Cancelled(code, status, slot, machine)


def names(script: str, raw: Any) -> list[str]:
    """A reply that is a list of names (``TRIM_STANDBY``: the machines dropped)."""
    return [_text(script, x) for x in _items(script, raw, None)]


def machine_wanted(raw: Any) -> Wanted:
    """``MACHINE_WANTED``'s reply: whether the machine is to be kept (its slot holds it), and its
    lease."""
    items = _items("MACHINE_WANTED", raw, (1, 2))
    kept = _code("MACHINE_WANTED", items, (_OK, _NONE)) is _OK
    lease = items[1] if len(items) > 1 else None
    return Wanted(kept, None if lease is None else _seconds("MACHINE_WANTED", lease, negative=True))


def stranded(raw: Any) -> list[Stranded]:
    """``STRANDED``'s ``scan`` reply: the jobs stranded, from (ulid, attempt) pairs; a pair
    that is not one (an id that is not alphanumeric, an attempt out of range) is skipped, and a
    reply that is not a list is none."""
    out: list[Stranded] = []
    if not isinstance(raw, list):
        return out
    for ulid, attempt in zip(raw[::2], raw[1::2], strict=False):
        with contextlib.suppress(AttributeError, UnicodeDecodeError):
            u = ulid.decode("ascii") if isinstance(ulid, bytes) else str(ulid)
            n = integer(attempt, 1, MAX_ATTEMPT)
            if n is not None and u.isalnum():
                out.append(Stranded(u, n))
    return out


def stranded_done(raw: Any) -> bool:
    """``STRANDED``'s reply to ``retag`` and ``fail``: whether the change was made (``[1]``);
    anything else is not."""
    return isinstance(raw, list) and len(raw) == 1 and raw[0] == 1
