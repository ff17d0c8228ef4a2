"""The replies of the Lua scripts, decoded: one function per script, one record per reply.

Every caller of a script (the worker, the store, the supervisor, the fork server) reads its
reply through here, so the positions of a script's reply are known in this module only. A
reply is read as hostile input, like anything else from Redis: one of the wrong shape (length,
types, a code the script never returns) raises :class:`~balloons.errors.StoreError` naming the
script and what was expected, never an ``IndexError`` or a ``ValueError``.

Standard library and :mod:`balloons.errors` only: every machine imports this module.
"""

from __future__ import annotations

from enum import IntEnum
from operator import itemgetter
from typing import Any, Self

from ..errors import StoreError


class Code(IntEnum):
    """A script's status code: positive when it made its change, 0 when there was nothing to
    do, negative when a guard refused. Some codes mean something more precise to one script:
    those are aliases (``Code.BAD_SLOT is Code.OTHER_MACHINE``)."""

    GONE = -1  #: the job's record (or the slot) is gone
    MOVED = -2  #: the job has moved on to another attempt (``LOST``: the slot, to another job)
    REFUSED = -3  #: the job is not in a state that allows the change, or its attempt ended
    OTHER_MACHINE = -4  #: another machine holds the attempt
    BAD_SLOT = -4  #: ``CLAIM``: the slot's entry was altered: slot freed, attempt failed
    REPLAYED = -5  #: ``CLAIM``: the attempt was claimed or ended before (a record put back)
    RELEASED = -5  #: ``TAKE``: the slot was given back (idle timeout): exit
    STANDBY = -6  #: ``TAKE``: the slot was given back and the machine kept on standby
    NONE = 0  #: nothing to do (``TAKE``: wait for a wake; ``SUBMIT``: the job id is taken)
    OK = 1  #: done (an attempt ended for good, a job placed, claimed or taken)
    RETRY = 2  #: an attempt ended with a retry scheduled
    EXISTING = 2  #: ``SUBMIT``: the idempotency key names an existing job
    NEW_POOL = 3  #: ``SUBMIT``: placed, and the pool's keys were new (list the pool again)


class _Reply(tuple[Any, ...]):
    """A decoded reply: a tuple whose items are named as well, like a ``NamedTuple`` (which
    costs a machine some 100 µs to define per class as it imports this module; this, 10)."""

    __slots__ = ()

    def __new__(cls, *values: Any) -> Self:
        return tuple.__new__(cls, values)

    def __repr__(self) -> str:
        names = [n for n, v in vars(type(self)).items() if isinstance(v, property)]
        fields = ", ".join(f"{n}={v!r}" for n, v in zip(names, self, strict=True))
        return f"{type(self).__name__}({fields})"


def _item(i: int) -> Any:
    """Field ``i`` of a reply record, by its name."""
    return property(itemgetter(i))


#: CLAIM's word for a refusal because the machine's slot is gone (its code is ``GONE``).
NO_SLOT = "no slot"


class Work(_Reply):
    """A job handed to a machine (``CLAIM``, ``TAKE``): what it needs to run it."""

    __slots__ = ()
    ulid: str = _item(0)
    attempt: int = _item(1)
    payload: bytes = _item(2)
    args: bytes = _item(3)
    sig: bytes = _item(4)
    grant: bytes = _item(5)  #: the attempt's permission to run (b"" for a first attempt)
    #: The pool's isolation (:data:`balloons.pools.ISOLATIONS`): how the machine runs it.
    isolation: str = _item(6)


class Claim(_Reply):
    """``CLAIM``: the machine's first job (``work``, with the pool's pace), or a refusal, with
    the job's status (or :data:`NO_SLOT`, ``bad slot``, ``replayed``)."""

    __slots__ = ()
    code: Code = _item(0)
    work: Work | None = _item(1)
    heartbeat: float = _item(2)
    idle: float = _item(3)
    status: str = _item(4)


class Take(_Reply):
    """``TAKE``: the next job (``OK``), a wait for a wake of at most ``idle`` seconds
    (``NONE``), or the end of the machine (``GONE``, ``RELEASED``, ``STANDBY``). ``more``:
    other jobs were still queued when this one was taken (unknown counts as more)."""

    __slots__ = ()
    code: Code = _item(0)
    work: Work | None = _item(1)
    idle: float = _item(2)
    more: bool = _item(3)


class Beat(_Reply):
    """``HEARTBEAT``: the job's status (``GONE``, ``MOVED``, ``''`` with no job) and the
    pool's pace; code ``GONE`` when the slot is gone."""

    __slots__ = ()
    code: Code = _item(0)
    status: str = _item(1)
    heartbeat: float | None = _item(2)
    idle: float | None = _item(3)


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


class Wanted(_Reply):
    """``MACHINE_WANTED``: whether the machine is in its pool's standby set; its slot's
    lease."""

    __slots__ = ()
    standby: bool = _item(0)
    lease: float | None = _item(1)


# The members by plain names: reading ``Code.OK`` calls a descriptor of the enum, and a
# decoder runs for every job.
_BAD_SLOT, _EXISTING, _GONE, _MOVED = Code.BAD_SLOT, Code.EXISTING, Code.GONE, Code.MOVED
_NEW_POOL, _NONE, _OK, _OTHER_MACHINE = Code.NEW_POOL, Code.NONE, Code.OK, Code.OTHER_MACHINE
_REFUSED, _RELEASED, _REPLAYED = Code.REFUSED, Code.RELEASED, Code.REPLAYED
_RETRY, _STANDBY = Code.RETRY, Code.STANDBY


# ------------------------------------------------------------------ decoders
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


def claim(raw: Any, ulid: str, attempt: int) -> Claim:
    """``CLAIM`` of ``ulid``'s ``attempt``."""
    items = _items("CLAIM", raw, (2, 6, 7, 8))
    code = _code("CLAIM", items, (_OK, _GONE, _MOVED, _REFUSED, _BAD_SLOT, _REPLAYED))
    if code is not _OK:
        _length("CLAIM", raw, 2)
        return Claim(code, None, 0.0, 0.0, _text("CLAIM", items[1]))
    if len(items) < 6:
        raise _malformed("CLAIM", raw, "6 or 7 items for a claim")
    work = Work(
        ulid,
        attempt,
        _bytes("CLAIM", items[1]),
        _bytes("CLAIM", items[2]),
        _bytes("CLAIM", items[3]),
        _bytes("CLAIM", items[6]) if len(items) > 6 else b"",
        _isolation("CLAIM", items[7] if len(items) > 7 else b""),
    )
    return Claim(code, work, _seconds("CLAIM", items[4]), _seconds("CLAIM", items[5]), "")


def take(raw: Any) -> Take:
    """``TAKE``'s reply: the job handed to a warm machine, or why there is none (nothing queued,
    slot gone, released, kept on standby)."""
    items = _items("TAKE", raw, (1, 2, 6, 7, 8, 9))
    allowed = (_OK, _NONE, _GONE, _RELEASED, _STANDBY)
    code = _code("TAKE", items, allowed)
    if code is _OK:
        if len(items) < 6:
            raise _malformed("TAKE", raw, "6 or 7 items for a job taken")
        work = Work(
            _text("TAKE", items[1]),
            _int("TAKE", items[2]),
            _bytes("TAKE", items[3]),
            _bytes("TAKE", items[4]),
            _bytes("TAKE", items[5]),
            _bytes("TAKE", items[6]) if len(items) > 6 else b"",
            _isolation("TAKE", items[8] if len(items) > 8 else b""),
        )
        return Take(code, work, 0.0, len(items) < 8 or items[7] != 0)
    if code is _NONE:
        _length("TAKE", raw, 2)
        return Take(code, None, _seconds("TAKE", items[1]), False)
    _length("TAKE", raw, 1)
    return Take(code, None, 0.0, False)


def heartbeat(raw: Any) -> Beat:
    """``HEARTBEAT``'s reply: the lease renewed, or the slot gone."""
    items = _items("HEARTBEAT", raw, (1, 2, 4))
    code = _code("HEARTBEAT", items, (_OK, _GONE))
    if code is _GONE:
        _length("HEARTBEAT", raw, 1)
        return Beat(code, "", None, None)
    if len(items) < 2:
        raise _malformed("HEARTBEAT", raw, "the job's status")
    status = _text("HEARTBEAT", items[1])
    if len(items) == 2:
        return Beat(code, status, None, None)
    return Beat(code, status, _seconds("HEARTBEAT", items[2]), _seconds("HEARTBEAT", items[3]))


def ended(raw: Any, script: str = "FINISH") -> Code:
    """What became of an attempt an end script (``FINISH``) ended: ``OK``, ``RETRY`` or the
    guard that refused (``GONE``, ``MOVED``, ``REFUSED``, ``OTHER_MACHINE``)."""
    allowed = (_OK, _RETRY, _GONE, _MOVED, _REFUSED, _OTHER_MACHINE)
    return _code(script, [raw], allowed)


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


def clock(raw: Any) -> float:
    """``CLOCK`` (or ``TIME``): the server's time in seconds."""
    sec, usec = (_int("CLOCK", x) for x in _items("CLOCK", raw, (2,)))
    return sec + usec / 1e6


# ------------------------------------------------------------------- helpers
def _show(raw: object) -> str:
    shown = repr(raw)
    return shown if len(shown) <= 200 else shown[:200] + "..."


def _malformed(script: str, raw: object, expected: str) -> StoreError:
    return StoreError(
        f"the {script} script's reply {_show(raw)} is malformed: expected {expected} "
        "(a script of another version of balloons, or a Redis that does not run them as sent)"
    )


def _items(script: str, raw: Any, lengths: tuple[int, ...] | None) -> list[Any]:
    if not isinstance(raw, (list, tuple)):
        raise _malformed(script, raw, "a list")
    if lengths is not None and len(raw) not in lengths:
        shown = " or ".join(str(n) for n in lengths)
        raise _malformed(script, raw, f"{shown} items, not {len(raw)}")
    return list(raw)


def _length(script: str, raw: Any, n: int) -> None:
    if len(raw) != n:
        raise _malformed(script, raw, f"{n} items for code {raw[0]!r}, not {len(raw)}")


#: Each code's value -> its member (the first name of an aliased value).
_CODES = {int(c): c for c in Code}


def _code(script: str, items: list[Any], allowed: tuple[Code, ...]) -> Code:
    raw = items[0] if items else None
    code = _CODES.get(raw) if type(raw) is int else None
    if code is None or code not in allowed:
        shown = ", ".join(str(int(c)) for c in allowed)
        raise _malformed(script, items, f"a status code in {shown} first")
    return code


def _bytes(script: str, raw: Any) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode()
    raise _malformed(script, raw, "a string")


#: How a machine runs a job of each isolation a pool may name; anything else stored in Redis
#: (a pool whose settings predate it, a value written by hand) runs as the default, "process":
#: never shared state on a word Redis holds.
_ISOLATIONS = {b"process": "process", b"machine": "machine", b"none": "none"}


def _isolation(script: str, raw: Any) -> str:
    return _ISOLATIONS.get(_bytes(script, raw), "process")


def isolation(raw: bytes) -> str:
    """A pool's isolation as stored in its settings (``iso``): one balloons knows, else the
    default, ``"process"``."""
    return _ISOLATIONS.get(raw, "process") if isinstance(raw, bytes) else "process"


def _text(script: str, raw: Any) -> str:
    if type(raw) is bytes:
        return raw.decode("utf-8", "replace")
    return _bytes(script, raw).decode("utf-8", "replace")


def _int(script: str, raw: Any) -> int:
    if type(raw) is int:
        return raw
    if isinstance(raw, (bytes, str)):
        digits = raw[1:] if raw[:1] in (b"-", "-") else raw
        if 0 < len(digits) <= 18 and digits.isascii() and digits.isdigit():
            return int(raw)
    raise _malformed(script, raw, "an integer")


def _seconds(script: str, raw: Any, negative: bool = False) -> float:
    if isinstance(raw, (bytes, str, int, float)) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if (-1e12 if negative else 0.0) <= value <= 1e12:  # not nan, not infinite
            return value
    raise _malformed(script, raw, "a number of seconds")


def _grant(script: str, items: list[Any]) -> Grant:
    slot, ulid = _text(script, items[0]), _text(script, items[1])
    numbers = [_int(script, x) for x in items[2:5]]
    return Grant(slot, ulid, numbers[0], numbers[1], numbers[2])
