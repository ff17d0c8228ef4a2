"""One round of a job's log stream for ``GET /v1/jobs/{id}/logs``: its status, then the
lines after the last one sent, blocking while it runs; every entry read as hostile input."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..logs import READ_COUNT
from ..store.queries import Query, call
from ..store.records import read_status
from ..untrusted import MAX_ATTEMPT, integer, text, timestamp
from . import resources

if TYPE_CHECKING:
    from ..store.keys import JobKeys

#: Longest block on a job's log stream before its status is read again.
LOG_BLOCK = 1.0
#: A stream entry id as Redis takes it: two numbers below 2**64 (up to 19 digits each, as
#: every id Redis makes is; 20 digits let through ids Redis refuses, ending a stream in error).
STREAM_ID_RE = re.compile(r"\A[0-9]{1,19}-[0-9]{1,19}\Z")


def log_round(jk: JobKeys, last: str) -> Query[tuple[bool, str, list[tuple[str, dict[str, Any]]]]]:
    """The job's status (read first: every line is written before the outcome), then the
    lines after ``last``, blocking up to :data:`LOG_BLOCK` while it runs."""
    (raw,) = yield [call("hget", jk.job, "status")]
    status = read_status(raw)[0] if raw is not None else None
    ended = status is None or status.terminal
    block = None if ended else int(LOG_BLOCK * 1000)
    (got,) = yield [call("xread", {jk.logs: last}, count=READ_COUNT, block=block)]
    rows = []
    for entry in got[0][1] if got else ():
        entry_id, fields = entry
        eid = text(entry_id) or ""
        if not STREAM_ID_RE.match(eid):
            continue
        f = fields if isinstance(fields, dict) else {}
        source = text(f.get(b"s")) or "out"
        rows.append(
            (
                eid,
                {
                    "time": timestamp(f.get(b"t")),
                    "attempt": integer(f.get(b"a"), 0, MAX_ATTEMPT),
                    "source": source if source in ("out", "err", "log") else "?",
                    "text": text(f.get(b"m")) or "",
                },
            )
        )
    state = "gone" if status is None else resources.state_of(status, {})
    return ended, state, rows
