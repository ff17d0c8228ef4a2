"""``Job``: a handle on one submitted job, rebuildable in any process from its id."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .errors import JobFailed, JobNotFound, ResultTimeout
from .states import JobStatus, Reason
from .store.keys import JobKeys
from .untrusted import number, text

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

    from .config import Settings
    from .cost import JobCost, PriceTable
    from .info import JobInfo
    from .logs import LogLine
    from .serialize import Serializer
    from .store.queries import Query
    from .store.writes import Store

R = TypeVar("R")

# Each blocking wait is capped so that a lost wake-up (a Redis restart, say) costs at most
# this long before the record is read again; it is not a polling interval.
_MAX_BLOCK = 5.0
#: Longest ``timeout`` of a wait on a result (``None`` waits for ever).
MAX_WAIT = 1e9


class Client(Protocol):
    """What a job handle needs of its app (:class:`~balloons.App`)."""

    @property
    def settings(self) -> Settings:
        """The app's settings (namespace, record TTL, ...)."""

    @property
    def store(self) -> Store:
        """The app's Redis store."""

    @property
    def prices(self) -> PriceTable:
        """The price table of cost estimates."""

    def check_lapsed(self, jk: JobKeys) -> bool:
        """Reclaim the job's slot if its machine stopped heartbeating (a waiter's check)."""

    def cancel(self, job_id: str, grace: float = ..., wait: bool = ...) -> bool:
        """Cancel job ``job_id`` (see :meth:`balloons.App.cancel`)."""

    async def cancel_async(self, job_id: str, grace: float = ..., wait: bool = ...) -> bool:
        """:meth:`cancel` for asyncio."""

    def decode_result(self, job_id: str, rec: Mapping[str, bytes]) -> Any:
        """The result in a job's record, once its tag verifies (see
        :meth:`balloons.App.decode_result`)."""


class Job(Generic[R]):
    """A submitted job. ``app.job(id)`` rebuilds the same handle in any other process."""

    def __init__(self, app: Client, job_id: str, keys: JobKeys | None = None) -> None:
        self.app = app
        self.id = job_id
        self._keys = job_keys(app.settings.namespace, job_id) if keys is None else keys

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    # Each read and control call is one query (:mod:`balloons.store.queries`), run by the sync
    # client in ``name()`` and by the asyncio client in ``await name_async()``.
    def status(self) -> JobStatus:
        """The job's status now: ``JobNotFound`` when there is no such job (never was, or
        expired)."""
        return self.app.store.run(self._status())

    async def status_async(self) -> JobStatus:
        """:meth:`status` for asyncio."""
        return await self.app.store.run_async(self._status())

    def _status(self) -> Query[JobStatus]:
        from .store import queries  # the store's side: not on a machine's start-up path

        st = yield from queries.status(self._keys)
        if st is None:
            raise JobNotFound(self.id)
        return st

    def info(self) -> JobInfo:
        """Status, attempts (machine, start, end, outcome, reason), timestamps and error."""
        return self.app.store.run(self._info())

    async def info_async(self) -> JobInfo:
        """:meth:`info` for asyncio."""
        return await self.app.store.run_async(self._info())

    def _info(self) -> Query[JobInfo]:
        from .store import queries

        info = yield from queries.info(self._keys, self.app.store.signing_key())
        if info is None:
            raise JobNotFound(self.id)
        return info

    def result(self, timeout: float | None = None) -> R:
        """Block (without polling) until the job ends; return its result.

        Raises :class:`~balloons.JobFailed` if it failed or was cancelled, carrying the remote
        exception's type, message and traceback, and :class:`~balloons.ResultTimeout` (a
        ``TimeoutError``) if ``timeout`` seconds pass first.
        """
        store = self.app.store
        left = self._wait_left(timeout)
        rec = store.record(self._keys)
        while (block := left(rec)) is not None:
            woken = store.wait_record(self._keys, block)
            if woken is None:
                # Nothing for a while: make sure the job's machine is not dead without a word.
                self.app.check_lapsed(self._keys)
            rec = store.record(self._keys) if woken is None else woken
        return self._unwrap(rec)

    async def result_async(self, timeout: float | None = None) -> R:
        """:meth:`result` for asyncio."""
        import asyncio

        store = self.app.store
        left = self._wait_left(timeout)
        rec = await store.record_async(self._keys)
        while (block := left(rec)) is not None:
            if not await store.wait_done_async(self._keys, block):
                await asyncio.to_thread(self.app.check_lapsed, self._keys)
            rec = await store.record_async(self._keys)
        return self._unwrap(rec)

    def _wait_left(self, timeout: float | None) -> Callable[[dict[str, bytes]], float | None]:
        """A wait on the job's end for ``timeout`` seconds (None: for ever), apart from its
        I/O: given the record just read, None once the job has ended, else how long to block
        on its done token; :class:`~balloons.ResultTimeout` once the time is up."""
        deadline = None if timeout is None else time.monotonic() + _timeout(timeout)

        def left(rec: dict[str, bytes]) -> float | None:
            if self._outcome(rec) is not None:
                return None
            now = time.monotonic()
            more = _MAX_BLOCK if deadline is None else min(_MAX_BLOCK, deadline - now)
            if more <= 0:
                raise ResultTimeout(f"job {self.id} still {_status(rec).value} after {timeout}s")
            return _block(rec, more)

        return left

    def logs(self, after: str = "", tail: int | None = None) -> list[LogLine]:
        """What the task printed (stdout, stderr) and logged, oldest first: every line, the
        lines after entry id ``after``, or the last ``tail`` lines. Each line carries its time,
        attempt and source."""
        return self.app.store.run(self._logs(after, tail))

    async def logs_async(self, after: str = "", tail: int | None = None) -> list[LogLine]:
        """:meth:`logs` for asyncio."""
        return await self.app.store.run_async(self._logs(after, tail))

    def _logs(self, after: str, tail: int | None) -> Query[list[LogLine]]:
        from . import logs

        if tail is not None:
            return (yield from logs.tail_query(self._keys, tail))
        return (yield from logs.read_query(self._keys, after))

    def stream_logs(self, after: str = "") -> Iterator[LogLine]:
        """The job's lines as they are written (blocking on the stream, no polling), ending once
        the job has ended and its last line is read."""
        from . import logs

        return logs.follow(
            self.app.store, self._keys, after, lambda: self.app.check_lapsed(self._keys)
        )

    def stream_logs_async(self, after: str = "") -> AsyncIterator[LogLine]:
        """:meth:`stream_logs` for asyncio: ``async for line in job.stream_logs_async()``."""
        from . import logs

        async def check() -> None:
            import asyncio

            await asyncio.to_thread(self.app.check_lapsed, self._keys)

        return logs.follow_async(self.app.store, self._keys, after, check)

    def progress(self) -> tuple[float, str] | None:
        """The task's last ``balloons.progress(fraction, note)``, or None if it reported none;
        ``(0.0, note saying so)`` when what is stored does not verify with the app's secret."""
        return self.app.store.run(self._progress())

    async def progress_async(self) -> tuple[float, str] | None:
        """:meth:`progress` for asyncio."""
        return await self.app.store.run_async(self._progress())

    def _progress(self) -> Query[tuple[float, str] | None]:
        from .store import queries

        return queries.progress(self._keys, self.app.store.signing_key())

    def cost(self) -> JobCost:
        """Machine-seconds, task-seconds and estimated US dollars of each attempt (a running
        attempt counts up to now), priced with ``app.prices``."""
        return self.app.store.run(self._cost())

    async def cost_async(self) -> JobCost:
        """:meth:`cost` for asyncio."""
        return await self.app.store.run_async(self._cost())

    def _cost(self) -> Query[JobCost]:
        from .cost import job_cost

        info = yield from self._info()
        return job_cost(info, self.app.prices, (1, 256), time.time())

    def cancel(self, grace: float = 10.0, wait: bool = False) -> bool:
        """Cancel the job. A queued or delayed one never starts; a running one is told to stop
        and its machine is stopped after ``grace`` seconds if it is still on the job. The
        status becomes CANCELLED at once. False if the job had already ended."""
        return self.app.cancel(self.id, grace=grace, wait=wait)

    async def cancel_async(self, grace: float = 10.0, wait: bool = False) -> bool:
        """:meth:`cancel` for asyncio."""
        return await self.app.cancel_async(self.id, grace=grace, wait=wait)

    def queue_position(self) -> int | None:
        """1 for the next job of its pool to get a machine; None when not queued."""
        return self.app.store.run(self._queue_position())

    async def queue_position_async(self) -> int | None:
        """:meth:`queue_position` for asyncio."""
        return await self.app.store.run_async(self._queue_position())

    def _queue_position(self) -> Query[int | None]:
        from .store import queries

        return queries.queue_position(self._keys)

    def forget(self) -> None:
        """Delete the job's record and result now instead of at the end of their TTL (the
        marker of the attempts that ran stays until it expires: the record put back is not run
        again)."""
        self.app.store.run(self._forget())

    async def forget_async(self) -> None:
        """:meth:`forget` for asyncio."""
        await self.app.store.run_async(self._forget())

    def _forget(self) -> Query[None]:
        from .store import queries

        return queries.forget(self._keys)

    def _outcome(self, rec: dict[str, bytes]) -> JobStatus | None:
        if not rec:
            raise JobNotFound(self.id)
        st = _status(rec)
        return st if st.terminal else None

    def _unwrap(self, rec: dict[str, bytes]) -> R:
        """The result of a record whose status is terminal (see :meth:`_outcome`)."""
        st = _status(rec)
        _observed(self.id, st, rec)
        if st is JobStatus.INVALID:
            raise _record_invalid(self.id, rec)
        if st is JobStatus.SUCCEEDED:
            value: R = self.app.decode_result(self.id, rec)
            return value
        from .store.writes import record_error

        # The error is shown only once it verifies with the app's secret (never decoded else).
        reason, err = record_error(self.id, rec, self.app.store.signing_key())
        raise JobFailed(
            self.id,
            st.value,
            reason or "",
            str(err.get("type", "")),
            str(err.get("message", "")),
            str(err.get("traceback", "")),
        )


def _timeout(timeout: object) -> float:
    if timeout.__class__ in (int, float) and 0 <= timeout <= MAX_WAIT:
        return float(timeout)  # NaN fails the comparison
    from .config import check_seconds

    return check_seconds("timeout", timeout, 0, MAX_WAIT)


def _block(rec: dict[str, bytes], left: float) -> float:
    """How long to block on the done token: ``left``, but a delayed job is looked at again
    just after it falls due (the waiter then launches it if its pool has no machine)."""
    due = number(rec.get("due"))
    if due is not None:
        left = min(left, max(0.0, due - time.time()) + 0.05)
    return max(left, 0.01)


def job_keys(ns: str, job_id: str) -> JobKeys:
    """The keys of job ``job_id``; :class:`~balloons.JobNotFound` when it is no job id."""
    try:
        return JobKeys.of(ns, job_id)
    except ValueError as exc:
        raise JobNotFound(job_id, str(exc)) from None


#: The statuses a job goes through, as stored: what nearly every record holds.
_STATUSES = {s.value.encode(): s for s in JobStatus if s is not JobStatus.INVALID}


def _status(rec: dict[str, bytes]) -> JobStatus:
    st = _STATUSES.get(rec.get("status"))  # type: ignore[arg-type]
    if st is not None:
        return st
    from .store.writes import read_status  # the store is not on a machine's start-up path

    return read_status(rec.get("status"))[0]


def _record_invalid(job_id: str, rec: dict[str, bytes]) -> JobFailed:
    from .store.writes import read_status

    why = read_status(rec.get("status"))[1]
    return JobFailed(
        job_id,
        JobStatus.INVALID.value,
        Reason.RECORD_INVALID.value,
        error_message=f"its record cannot be read ({why}): was it altered in Redis?",
    )


def _observed(job_id: str, st: JobStatus, rec: dict[str, bytes]) -> None:
    from . import lifecycle

    if not lifecycle.enabled():
        return  # nothing would be logged: the line is not built

    def num(name: str) -> float:
        return number(rec.get(name), 0, 1e12) or 0.0

    created, started, finished = num("created"), num("started"), num("finished")
    fields: dict[str, Any] = {"job": job_id, "attempt": int(num("attempt"))}
    if st is not JobStatus.SUCCEEDED:
        fields["reason"] = text(rec.get("reason")) or "-"
    if created and finished:
        fields["total_s"] = finished - created
    if started and finished:
        fields["run_s"] = finished - started
    lifecycle.emit(st.value.lower(), **fields)


def decode_result(job_id: str, rec: Mapping[str, bytes], ser: Serializer, key: bytes) -> Any:
    """The result in a job's record (``result``, ``rsig``, ``attempt``), decoded with ``ser``
    once its tag verifies with ``key`` for that job and attempt (JSON, the safe default, is
    read too). Nothing in the record chooses the decoder. See :meth:`App.decode_result`."""
    from .errors import SerializationError
    from .serialize import JSONSerializer
    from .signing import result_serializer

    names = dict.fromkeys((ser.name, "json", "pickle"))
    found = result_serializer(key, job_id, rec, names)
    if found is None:
        raise JobFailed(
            job_id,
            "FAILED",
            Reason.RESULT_INVALID.value,
            "",
            f"the result stored for job {job_id} does not verify with this app's secret "
            "(altered in Redis, copied from another job or attempt, or written with another "
            "secret): it was not decoded",
        )
    if found != ser.name and found != "json":
        raise SerializationError(
            f"the result of job {job_id} was encoded with the {found} serializer, but this "
            f"app decodes with {ser.name}: read it with App(serializer={found!r})"
        )
    decoder = ser if found == ser.name else JSONSerializer()
    try:
        return decoder.loads(rec.get("result") or b"")
    except Exception as exc:
        raise SerializationError(f"cannot decode the result of job {job_id}: {exc}") from exc
