"""Time-ordered ids: ULIDs (48-bit ms time, 80 random bits) in lowercase Crockford base32."""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Iterator

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Two base32 digits per lookup (ids are made on every submit): the time is the first five
# pairs, the random bits the last eight.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_TIME_SHIFTS = (40, 30, 20, 10, 0)
_RANDOM_SHIFTS = (70, 60, 50, 40, 30, 20, 10, 0)
#: Random values drawn from the system at once, then taken one per id.
_DRAW = 256
#: The last millisecond an id was made in, and its digits (one tuple: read whole by threads).
_last: tuple[int, str] = (-1, "")
#: The values drawn and not taken yet (a list's iterator: each is taken once, by one thread).
_random: Iterator[int] = iter(())


def ulid(now: float | None = None) -> str:
    """A new ULID: 26 lowercase Crockford base32 digits, its first ten the time in ms (``now``,
    else the clock), then 80 random bits."""
    global _last
    ms = int((time.time() if now is None else now) * 1000)
    last = _last
    if last[0] != ms:
        last = _last = (ms, "".join([_PAIRS[(ms >> s) & 1023] for s in _TIME_SHIFTS]))
    value = next(_random, None)
    if value is None:
        value = _draw()
    return last[1] + "".join([_PAIRS[(value >> s) & 1023] for s in _RANDOM_SHIFTS])


def _draw() -> int:
    """Draw the next random values from the system (one call for many ids), and return one."""
    global _random
    raw = os.urandom(10 * _DRAW)
    values = [int.from_bytes(raw[i : i + 10], "big") for i in range(0, len(raw), 10)]
    _random = iter(values[1:])
    return values[0]


def _forget() -> None:
    """In a forked child: the parent's values drawn are its own (the child draws afresh)."""
    global _random
    _random = iter(())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
