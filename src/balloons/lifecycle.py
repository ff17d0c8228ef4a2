"""One structured log line per job lifecycle event, on the ``balloons`` logger.

Lines are ``event=NAME key=value ...`` (logfmt), with elapsed times in seconds; the fields are
also on the record as ``record.balloons`` (a dict) for structured handlers. Only ids, names,
reasons and numbers are logged: never arguments, results, URLs or secrets. The client logs
``submitted``, ``launched``, ``launch_failed`` and the end it observes (``succeeded``,
``failed``, ``cancelled``); the supervisor logs ``launched`` and ``machine_gone``; a worker
writes ``started``, ``succeeded`` and ``failed`` lines to its machine's stderr.
"""

from __future__ import annotations

import logging
from typing import Any

from .untrusted import shown

log = logging.getLogger("balloons")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    s = shown(v)  # a reason read from a record: no terminal escapes, one line
    if not s or any(c.isspace() or c in '"=' for c in s):
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{s}"'
    return s


def line(event: str, fields: dict[str, Any]) -> str:
    """One log line: ``event=NAME key=value ...``."""
    return " ".join([f"event={event}", *(f"{k}={_value(v)}" for k, v in fields.items())])


def enabled(level: int = logging.INFO) -> bool:
    """Whether an event at ``level`` would be logged: hot paths check before building one."""
    return log.isEnabledFor(level)


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event (cheap when the ``balloons`` logger is not enabled for ``level``)."""
    if log.isEnabledFor(level):
        log.log(level, "%s", line(event, fields), extra={"balloons": {"event": event, **fields}})
