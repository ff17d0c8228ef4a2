"""Values balloons did not write itself: what it reads from Redis, and text that tasks wrote.

Everything read from Redis is hostile input (a record may have been altered by anyone who can
write to it): each reader below returns the value in its expected range, or ``None`` for
anything else (a wrong type, NaN, infinity, a huge number, bytes that are not UTF-8), so that a
caller shows the field as unknown instead of failing. :func:`shown` makes text from a task (its
output, its error messages, its progress notes) safe to print to a terminal or a page.
"""

from __future__ import annotations

import json
import math
import re

#: Largest machine size accepted anywhere (a setting, an option, a record).
MAX_CPUS = 256
MAX_MEMORY_MB = 4 * 1024 * 1024
#: Timestamps after this (year 5138) are not times balloons wrote.
MAX_TIME = 1e11
#: Attempt numbers beyond this are not ones balloons wrote.
MAX_ATTEMPT = 1_000_000


def text(raw: object) -> str | None:
    """A string from Redis bytes (undecodable bytes replaced), or None for no value."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return raw
    return None


def number(raw: object, low: float = -math.inf, high: float = math.inf) -> float | None:
    """A finite number in ``low..high`` (from bytes, a string or a JSON number), else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, bytes | str):
        if len(raw) > 64:  # no number balloons writes is that long; int() of it is slow
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
    elif isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:
            return None
    else:
        return None
    if not math.isfinite(value) or not low <= value <= high:
        return None
    return value


def integer(raw: object, low: int, high: int) -> int | None:
    """A whole number in ``low..high``, else None (``"3"`` and ``3.0`` are 3; ``3.5`` is None)."""
    value = number(raw, low, high)
    if value is None or not value.is_integer():
        return None
    return int(value)


def describe(raw: object) -> str:
    """A short description of a value read from Redis, for a message (never all of it)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return repr(raw if len(raw) <= 40 else raw[:37] + "...")
    if isinstance(raw, bool | float) or (isinstance(raw, int) and abs(raw) < 10**40):
        return repr(raw)
    return f"(a {type(raw).__name__})"


def timestamp(raw: object) -> float | None:
    """A Unix time balloons could have written (from 1970 to :data:`MAX_TIME`), else None."""
    return number(raw, 0.0, MAX_TIME)


# C0 controls but tab and newline, DEL, C1 controls; and the format characters that reorder or
# hide text (bidirectional overrides and isolates, zero-width joiners), line and paragraph
# separators, and lone surrogates (undecodable bytes, escaped).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    c = ord(match.group())
    if c < 0x20:
        return chr(0x2400 + c)  # the Unicode control pictures: ESC shows as U+241B
    if c == 0x7F:
        return "\u2421"
    return f"\\u{c:04x}" if c > 0xFF else f"\\x{c:02x}"


def shown(value: object) -> str:
    """``value`` as text that is safe to show: control characters other than newline and tab
    (terminal escape sequences, carriage returns, bells) and characters that reorder or hide
    text are replaced by visible stand-ins, so that nothing a task wrote can move the cursor,
    clear a screen, set a clipboard or disguise itself. Markup (HTML, rich) is escaped by the
    caller on top of this."""
    s = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, s)


def json_value(raw: object) -> object:
    """What JSON bytes from Redis hold, or None when they are not JSON (or nest too deep)."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def json_object(raw: object) -> dict[str, object] | None:
    """A JSON object from Redis, or None for anything else."""
    value = json_value(raw)
    return value if isinstance(value, dict) else None
