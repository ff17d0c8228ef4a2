"""Time-ordered ids: ULIDs (48-bit ms time, 80 random bits) in lowercase Crockford base32."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Two base32 digits per lookup: 13 lookups instead of 26 shifts (ids are made on every submit).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))


def ulid(now: float | None = None) -> str:
    """A new ULID: 26 lowercase Crockford base32 digits, its first ten the time in ms (``now``,
    else the clock), then 80 random bits."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_PAIRS[(value >> s) & 1023] for s in _SHIFTS])
