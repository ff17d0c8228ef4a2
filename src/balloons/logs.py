"""Reading a job's captured output: :class:`LogLine` records, a snapshot, and a follow that
blocks on the stream (``XREAD BLOCK``) rather than polling. Written by
:mod:`balloons.machine.capture`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .store.keys import JobKeys
from .store.queries import Query, call
from .store.writes import Store, read_status
from .untrusted import MAX_ATTEMPT, integer, shown, text, timestamp

#: Longest single block on the stream before the job's status is read again.
FOLLOW_BLOCK = 1.0
#: Lines read per round trip.
READ_COUNT = 1000
#: Seconds without a new line after which a follower checks that the job's machine lives.
QUIET = 5.0


@dataclass(frozen=True)
class LogLine:
    """One line a task wrote: ``source`` is ``out`` (stdout), ``err`` (stderr) or ``log`` (a
    ``logging`` record); ``id`` is the stream entry id (``after=`` of a later read)."""

    id: str
    time: float
    attempt: int
    source: str
    text: str

    def __str__(self) -> str:
        """The line as shown (``balloons logs``): its text's control characters replaced."""
        stamp = datetime.fromtimestamp(self.time, UTC).strftime("%H:%M:%S.%f")[:-3]
        return f"{stamp} #{self.attempt} {self.source:<3} {shown(self.text)}"

    def as_dict(self) -> dict[str, Any]:
        """The line as JSON-ready fields (``--json``)."""
        return {
            "id": self.id,
            "time": self.time,
            "attempt": self.attempt,
            "source": self.source,
            "text": self.text,
        }


def _line(entry_id: bytes, fields: dict[bytes, bytes]) -> LogLine:
    # Whatever the entry holds (altered in Redis): fields that cannot be read are left empty.
    source = text(fields.get(b"s")) or "out"
    return LogLine(
        id=entry_id.decode("utf-8", "replace"),
        time=timestamp(fields.get(b"t")) or 0.0,
        attempt=integer(fields.get(b"a"), 0, MAX_ATTEMPT) or 0,
        source=source if source in ("out", "err", "log") else "?",
        text=text(fields.get(b"m")) or "",
    )


def read(store: Store, jk: JobKeys, after: str = "", limit: int | None = None) -> list[LogLine]:
    """The job's lines after entry ``after`` (all of them with ``""``), oldest first."""
    return store.run(read_query(jk, after, limit))


def read_query(jk: JobKeys, after: str = "", limit: int | None = None) -> Query[list[LogLine]]:
    """:func:`read` as a query (:mod:`balloons.store.queries`)."""
    start = f"({after}" if after else "-"
    (rows,) = yield [call("xrange", jk.logs, start, "+", count=limit)]
    return [_line(i, f) for i, f in rows]


def tail(store: Store, jk: JobKeys, n: int) -> list[LogLine]:
    """The job's last ``n`` lines, oldest first."""
    return store.run(tail_query(jk, n))


def tail_query(jk: JobKeys, n: int) -> Query[list[LogLine]]:
    """:func:`tail` as a query (:mod:`balloons.store.queries`)."""
    (rows,) = yield [call("xrevrange", jk.logs, "+", "-", count=n)]
    return [_line(i, f) for i, f in reversed(rows)]


class _Follower:
    """The state of a follow, apart from its I/O: the query of its next round (the job's
    status, then the lines after the last one, blocking while the job runs), what a round's
    reply yields, and whether it is done or quiet. :func:`follow` and :func:`follow_async`
    run it, each with its client."""

    def __init__(self, jk: JobKeys, after: str, block: float = FOLLOW_BLOCK) -> None:
        self.jk = jk
        self.block = block  # seconds an XREAD blocks: within the store's reply timeout
        self.last = after or "0-0"
        self.done = False
        self.quiet_since = time.monotonic()

    def round(self) -> Query[tuple[bool, list[Any]]]:
        (raw,) = yield [call("hget", self.jk.job, "status")]
        ended = _terminal(raw)
        block = None if ended else max(1, int(self.block * 1000))
        (got,) = yield [call("xread", {self.jk.logs: self.last}, count=READ_COUNT, block=block)]
        return ended, got[0][1] if got else []

    def took(self, reply: tuple[bool, list[Any]]) -> list[LogLine]:
        ended, rows = reply
        lines = [_line(i, f) for i, f in rows]
        if lines:
            self.last = lines[-1].id
            self.quiet_since = time.monotonic()
        self.done = ended and not lines
        return lines

    def quiet(self) -> bool:
        """Whether nothing came for :data:`QUIET` seconds (then the clock starts again)."""
        if self.done or time.monotonic() - self.quiet_since <= QUIET:
            return False
        self.quiet_since = time.monotonic()
        return True


def follow(
    store: Store,
    jk: JobKeys,
    after: str = "",
    on_quiet: Callable[[], object] | None = None,
) -> Iterator[LogLine]:
    """Every line, then new ones as they are written, until the job has ended and its last
    lines are read. The worker stores every line before it records the outcome, so once the
    status is terminal one more read finds them all. ``on_quiet`` is called when nothing came
    for :data:`QUIET` seconds (a waiter's check that the job's machine is not dead)."""
    f = _Follower(jk, after, store.block_cap(FOLLOW_BLOCK))
    while not f.done:
        yield from f.took(store.run(f.round()))
        if f.quiet() and on_quiet is not None:
            on_quiet()


async def follow_async(
    store: Store,
    jk: JobKeys,
    after: str = "",
    on_quiet: Callable[[], Awaitable[object]] | None = None,
) -> AsyncIterator[LogLine]:
    """:func:`follow` for asyncio."""
    f = _Follower(jk, after, store.block_cap(FOLLOW_BLOCK))
    while not f.done:
        for line in f.took(await store.run_async(f.round())):
            yield line
        if f.quiet() and on_quiet is not None:
            await on_quiet()


def _terminal(raw: bytes | None) -> bool:
    if raw is None:
        return True  # the record is gone: nothing more will be written
    return read_status(raw)[0].terminal
