"""The replies of the Lua scripts, decoded: one function per script, one record per reply.

Every caller of a script (the worker, the store, the supervisor, the fork server) reads its
reply through this package, so the positions of a script's reply are known here only. A
reply is read as hostile input, like anything else from Redis: one of the wrong shape (length,
types, a code the script never returns) raises :class:`~balloons.errors.StoreError` naming the
script and what was expected, never an ``IndexError`` or a ``ValueError``.

One module per family of scripts: this one holds the codes, the readers every decoder uses and
the machine's scripts (``CLAIM``, ``TAKE``, ``HEARTBEAT``, ``FINISH``, ``CLOCK``);
:mod:`.launch` the submit and launch path's, :mod:`.control` the control plane's. Their names
are this package's as well, each module imported with the first use of one of its names: a
machine imports this module only. Standard library and :mod:`balloons.errors` only.
"""

from __future__ import annotations

from enum import IntEnum
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Self

from ...errors import StoreError


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


# The members by plain names: reading ``Code.OK`` calls a descriptor of the enum, and a
# decoder runs for every job.
_BAD_SLOT, _EXISTING, _GONE, _MOVED = Code.BAD_SLOT, Code.EXISTING, Code.GONE, Code.MOVED
_NEW_POOL, _NONE, _OK, _OTHER_MACHINE = Code.NEW_POOL, Code.NONE, Code.OK, Code.OTHER_MACHINE
_REFUSED, _RELEASED, _REPLAYED = Code.REFUSED, Code.RELEASED, Code.REPLAYED
_RETRY, _STANDBY = Code.RETRY, Code.STANDBY


# ------------------------------------------------------------------ decoders
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


# ------------------------------------------------------------- the families
#: Each name of a family's module -> the module, imported with the first use of one of them.
_FAMILIES = {
    **dict.fromkeys(
        (
            "Grant",
            "Submitted",
            "Picked",
            "submit",
            "_submit",
            "submit_many",
            "scale_up",
            "pick_machine",
            "flag",
        ),
        "launch",
    ),
    **dict.fromkeys(
        (
            "Lost",
            "Cancelled",
            "Wanted",
            "Stranded",
            "lost",
            "cancel",
            "names",
            "machine_wanted",
            "stranded",
            "stranded_done",
        ),
        "control",
    ),
}


if TYPE_CHECKING:
    from .control import Cancelled as Cancelled
    from .control import Lost as Lost
    from .control import Stranded as Stranded
    from .control import Wanted as Wanted
    from .control import cancel as cancel
    from .control import lost as lost
    from .control import machine_wanted as machine_wanted
    from .control import names as names
    from .control import stranded as stranded
    from .control import stranded_done as stranded_done
    from .launch import Grant as Grant
    from .launch import Picked as Picked
    from .launch import Submitted as Submitted
    from .launch import _submit as _submit
    from .launch import flag as flag
    from .launch import pick_machine as pick_machine
    from .launch import scale_up as scale_up
    from .launch import submit as submit
    from .launch import submit_many as submit_many
else:  # at run time each from its module, imported with the first use of one of its names

    def __getattr__(name: str) -> Any:
        family = _FAMILIES.get(name)
        if family is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module

        module = import_module(f"{__name__}.{family}")
        # Each name of the family becomes this module's own: read as fast as the others after.
        members = [n for n, f in _FAMILIES.items() if f == family]
        globals().update({n: getattr(module, n) for n in members})
        return globals()[name]
