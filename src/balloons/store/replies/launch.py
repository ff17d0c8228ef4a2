"""The replies of the scripts of the submit and launch path, decoded: ``SUBMIT``,
``SUBMIT_MANY``, ``SCALE_UP``, ``PICK_MACHINE`` and the launch flags (``REQUEUE``,
``CONFIRM_LAUNCH``, ``START_FAILED``, ``LAUNCHED``). Read as :mod:`balloons.store.replies`
explains; the client and the supervisor import this module, a machine never does.
"""

from __future__ import annotations

from typing import Any

from . import (
    _EXISTING,
    _NEW_POOL,
    _NONE,
    _OK,
    Code,
    _code,
    _int,
    _item,
    _items,
    _length,
    _malformed,
    _Reply,
    _text,
)


class Grant(_Reply):
    """A new slot, whose machine the caller launches (``SUBMIT``, ``SCALE_UP``): attempt 0 (and a
    fresh id for ``ulid``) for a machine with no job of its own."""

    __slots__ = ()
    slot: str = _item(0)
    ulid: str = _item(1)
    attempt: int = _item(2)
    cpus: int = _item(3)
    memory_mb: int = _item(4)


class Submitted(_Reply):
    """``SUBMIT``: where the job went (``placed``: ``launch``, ``warm``, ``queued``,
    ``delayed``; ``existing`` for code ``EXISTING``, whose job is ``existing``), the slot to
    launch (``grant``: possibly for an older job of the queue), its place in the queue, and
    whether the pool's keys were new (``new_pool``; the code is then ``OK``)."""

    __slots__ = ()
    code: Code = _item(0)
    placed: str = _item(1)
    grant: Grant | None = _item(2)
    position: int | None = _item(3)
    existing: str = _item(4)
    new_pool: bool = _item(5)


class Picked(_Reply):
    """``PICK_MACHINE``: start the stopped ``machine`` (``start``), or create one (``machine``
    ``''``), for the slot ``own``-0."""

    __slots__ = ()
    start: bool = _item(0)
    machine: str = _item(1)
    own: str = _item(2)
    cpus: int = _item(3)
    memory_mb: int = _item(4)


def submit(raw: Any) -> Submitted:
    """``SUBMIT``'s reply: what became of the job (placed, queued, an existing job of its key)
    and the launch to make, if any."""
    # Every submit decodes one: the two common, well-formed replies (numbers as the script sends
    # them: strings) are checked here at a fraction of the general path's cost.
    n = len(raw) if raw.__class__ is list else 0
    ok = n and raw[0].__class__ is int and raw[0] in (1, 3)  # OK, NEW_POOL
    if ok and n == 7 and raw[1] == b"launch":
        _, _, slot, ulid, *nums = raw
        if slot.__class__ is ulid.__class__ is bytes and _digits(*nums):
            text = slot.decode("utf-8", "replace"), ulid.decode("utf-8", "replace")
            grant = _new(Grant, (*text, *map(int, nums)))
            return _new(Submitted, (_OK, "launch", grant, None, "", raw[0] == 3))
    elif ok and n == 3 and raw[1] == b"queued" and _digits(raw[2]):
        return _new(Submitted, (_OK, "queued", None, int(raw[2]), "", raw[0] == 3))
    return _submit(raw)


def _digits(*raws: Any) -> bool:
    """Whether each of ``raws`` is a whole number :func:`_int` reads, written without a sign."""
    for x in raws:
        if x.__class__ is not int and not (x.__class__ is bytes and 0 < len(x) <= 18):
            return False
        if x.__class__ is bytes and not x.isdigit():
            return False
    return True


_new = tuple.__new__  # a record made from its items at once, without _Reply.__new__'s call


def _submit(raw: Any) -> Submitted:
    items = _items("SUBMIT", raw, (1, 2, 3, 7))
    code = _code("SUBMIT", items, (_NONE, _OK, _EXISTING, _NEW_POOL))
    if code is _NONE or code is _EXISTING:
        _length("SUBMIT", raw, 1 if code is _NONE else 2)
        existing = _text("SUBMIT", items[1]) if code is _EXISTING else ""
        placed = "existing" if existing else ""
        return Submitted(code, placed, None, None, existing, False)
    placed = _text("SUBMIT", items[1]) if len(items) > 1 else ""
    grant, position = None, None
    if placed == "launch":
        _length("SUBMIT", raw, 7)
        grant = _grant("SUBMIT", items[2:7])
    elif placed in ("warm", "queued", "delayed"):
        _length("SUBMIT", raw, 3)
        if placed == "queued":
            position = _int("SUBMIT", items[2])
    else:
        raise _malformed("SUBMIT", raw, "a placement (launch, warm, queued or delayed)")
    return Submitted(_OK, placed, grant, position, "", code is _NEW_POOL)


def submit_many(raw: Any, n: int) -> list[Submitted]:
    """``SUBMIT_MANY``'s reply for ``n`` jobs: one ``SUBMIT`` reply each, in order."""
    return [submit(x) for x in _items("SUBMIT_MANY", raw, (n,))]


def scale_up(raw: Any) -> list[Grant]:
    """``SCALE_UP``: the slots taken, whose machines the caller launches."""
    items = _items("SCALE_UP", raw, None)
    if len(items) % 5:
        raise _malformed("SCALE_UP", raw, "five items per slot taken")
    return [_grant("SCALE_UP", items[i : i + 5]) for i in range(0, len(items), 5)]


def pick_machine(raw: Any) -> Picked | None:
    """``PICK_MACHINE``: the machine to start or create for the slot; None: nothing to launch."""
    name = "PICK_MACHINE"
    items = _items(name, raw, (1, 5, 6))
    if _code(name, items, (_OK, _NONE)) is _NONE:
        _length(name, raw, 1)
        return None
    action = _text(name, items[1]) if len(items) > 1 else ""
    if action not in ("start", "create"):
        raise _malformed(name, raw, "'start' or 'create'")
    _length(name, raw, 6 if action == "start" else 5)
    machine = _text(name, items[2]) if action == "start" else ""
    own, cpus, mem = items[-3:]
    return Picked(action == "start", machine, _text(name, own), _int(name, cpus), _int(name, mem))


def flag(script: str, raw: Any) -> bool:
    """The reply of a script that answers 1 (done) or 0 (not done: the slot or job moved on):
    ``REQUEUE``, ``CONFIRM_LAUNCH``, ``START_FAILED``, ``LAUNCHED``."""
    return _code(script, [raw], (_OK, _NONE)) is _OK


def _grant(script: str, items: list[Any]) -> Grant:
    slot, ulid = _text(script, items[0]), _text(script, items[1])
    numbers = [_int(script, x) for x in items[2:5]]
    return Grant(slot, ulid, numbers[0], numbers[1], numbers[2])
