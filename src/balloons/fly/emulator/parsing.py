"""Parsers for the loosely typed values Fly clients send.

Fly's spec and its own clients disagree on several wire forms (NOTES §9/§10); the emulator
accepts every form seen in the wild: Go duration strings (``"10s"``, ``"1m30s"``) or integer
nanoseconds or plain seconds; signal names (``"SIGKILL"``) or numbers (``9``); booleans as
``true``/``1``.
"""

from __future__ import annotations

import re
import signal as _signal
from typing import Any

from .errors import bad_request

_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip

#: An integer this large is nanoseconds (Go's ``time.Duration`` marshalled as a number);
#: smaller integers are seconds. A one-second duration is 1e9 ns, so no real timeout sits
#: between the two readings.
_NANOSECONDS_FLOOR = 1_000_000


def parse_duration(value: Any, what: str) -> float:
    """Seconds from a Go duration string, integer nanoseconds or a number of seconds."""
    if isinstance(value, bool):
        raise bad_request(f"invalid {what}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) / 1e9 if value >= _NANOSECONDS_FLOOR else float(value)
        if seconds < 0:
            raise bad_request(f"invalid {what}: negative duration {value!r}")
        return seconds
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return parse_duration(float(text) if "." in text else int(text), what)
        if text and _GO_DURATION.sub("", text) == "":
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_DURATION.findall(text))
    raise bad_request(f"invalid {what}: expected a duration like '10s', got {value!r}")


def parse_signal(value: Any, what: str = "signal") -> int:
    """A signal number from a name (``"SIGTERM"``, ``"TERM"``) or a number (``15``)."""
    if isinstance(value, bool):
        raise bad_request(f"invalid {what}: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(_signal.Signals[name])
        except KeyError:
            raise bad_request(f"invalid {what}: unknown signal {value!r}") from None
    else:
        raise bad_request(f"invalid {what}: expected a signal name or number, got {value!r}")
    try:
        return int(_signal.Signals(number))
    except ValueError:
        raise bad_request(f"invalid {what}: unknown signal number {number}") from None


def parse_bool(value: str | None) -> bool:
    """A query-string flag: ``true``/``1``/``yes`` (any case) is true; absent is false."""
    return value is not None and value.strip().lower() in {"true", "1", "yes", "t"}


def parse_int(value: Any, what: str, default: int) -> int:
    """An integer from a query string or JSON value, ``default`` when absent or empty."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise bad_request(f"invalid {what}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise bad_request(f"invalid {what}: expected an integer, got {value!r}") from None
