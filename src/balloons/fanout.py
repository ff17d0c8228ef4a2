"""Fan-out: many jobs of one task at once, and waiting for many jobs as they end.

``task.submit_many(calls)`` checks every call first (nothing is stored when one cannot
bind or serialize), then stores the jobs in pipelined batches: one round trip per batch
of ``SUBMIT_MANY`` scripts (each job placed as ``SUBMIT`` places one), in call order.
``task.map(inputs)`` and ``task.starmap(tuples)`` submit that way and yield the results in
input order, or as the jobs end
(``ordered=False``); :func:`as_completed` waits on the jobs' done tokens, which the script
that ends a job pushes, with no polling while they run.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .errors import JobFailed, PartiallySubmitted, ResultTimeout

if TYPE_CHECKING:
    from .job import Job
    from .store.keys import JobKeys
    from .store.writes import SubmitRequest
    from .task import Task, TaskOptions

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Jobs per round trip of ``submit_many``.
DEFAULT_BATCH = 500
MAX_BATCH = 10_000
#: Done tokens one ``BLPOP`` waits on at most (its arguments are sent with every wait).
_WAIT_KEYS = 512
#: How long a wait on done tokens blocks before the records are read again: a job whose
#: token is gone (forgotten, or its token taken) or whose machine died is noticed then.
_RECHECK_S = 5.0


class Call(Generic[P, R]):
    """One call of a task, not submitted yet: ``task.s(*args, **kwargs)``. Its arguments are
    checked against the task's signature when it is made; one positional argument may be
    missing (``partial``), for a chain's link or a group's callback, given it when it runs:
    submitting such a call on its own raises ``TypeError``."""

    __slots__ = ("args", "kwargs", "partial", "task")

    def __init__(self, task: Task[P, R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        from .calls import check_call

        self.partial = False
        try:
            check_call(task, args, kwargs)
        except TypeError as exc:
            try:  # a link of a chain, given the result before it as its last argument
                check_call(task, (*args, None), kwargs)
            except TypeError:
                raise exc from None
            self.partial = True
        self.task = task
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task.name}.s({', '.join(parts)})"

    def submit(self) -> Job[R]:
        """Submit this call as one job (``task.submit(*args, **kwargs)``)."""
        return self.task.app.dispatcher.submit(self.task, self.task.opts, self.args, self.kwargs)


def submit_many(
    task: Task[Any, R], calls: Iterable[Call[Any, R] | tuple[Any, ...]], batch_size: int
) -> list[Job[R]]:
    """See :meth:`balloons.task.Task.submit_many`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an integer, got {batch_size!r}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be from 1 to {MAX_BATCH}, got {batch_size!r}")
    prepared = _prepare(task, calls)
    dispatcher = task.app.dispatcher
    store = dispatcher.app.store
    jobs: list[Job[R]] = []
    stored: tuple[list[Any], list[Any]] | None = None  # a batch stored, its handles not made
    for start in range(0, len(prepared), batch_size):
        batch = prepared[start : start + batch_size]
        try:
            read = store.submit_batch_start([(jk, req) for jk, req, _, _ in batch])
            if stored is not None:  # while Redis runs this batch
                done, stored = stored, None
                jobs += _placed(dispatcher, *done)
            stored = (batch, read())
        except BaseException as exc:
            if stored is not None:
                done, stored = stored, None
                jobs += _placed(dispatcher, *done)
            unsent = len(prepared) - start - len(batch)
            unsure = [jk.job_id for jk, _, _, _ in batch]
            raise PartiallySubmitted(jobs, unsure, unsent, str(exc)) from exc
    if stored is not None:
        jobs += _placed(dispatcher, *stored)
    return jobs


def _prepare(
    task: Task[Any, Any], calls: Iterable[Call[Any, Any] | tuple[Any, ...]]
) -> list[tuple[JobKeys, SubmitRequest, TaskOptions, str]]:
    """Every call's keys and ``SUBMIT`` request, checked, before any is stored."""
    dispatcher = task.app.dispatcher
    out = []
    for i, call in enumerate(calls):
        if isinstance(call, Call):
            if call.task.name != task.name:
                raise TypeError(
                    f"call {i} of {task.name}.submit_many is a call of {call.task.name}: "
                    f"expected {task.name}.s(...) or a tuple of arguments"
                )
            t, args, kwargs = call.task, call.args, dict(call.kwargs)
        elif isinstance(call, tuple):
            t, args, kwargs = task, call, {}
        else:
            raise TypeError(
                f"call {i} of {task.name}.submit_many is {type(call).__name__} {call!r}: "
                f"expected {task.name}.s(...) or a tuple of arguments"
            )
        try:
            jk, req = dispatcher.submit_args(t, t.opts, args, kwargs)
        except Exception as exc:
            exc.add_note(f"in call {i} of {task.name}.submit_many (nothing was stored)")
            raise
        out.append((jk, req, t.opts, t.name))
    return out


def _placed(
    dispatcher: Any, batch: list[tuple[JobKeys, SubmitRequest, TaskOptions, str]], got: list[Any]
) -> list[Job[Any]]:
    """The handles of a stored batch, its granted slots' machines launched."""
    from .dispatch import _submitted

    jobs = []
    launches = []
    for (jk, req, opts, name), reply in zip(batch, got, strict=True):
        job, launch = dispatcher.after_submit(jk, opts, reply)
        _submitted(job, name, reply.placed, req.created)
        jobs.append(job)
        if launch is not None:
            launches.append(launch)
    for launch in launches:
        dispatcher.slots.launch(launch)
    return jobs


class Mapped(Generic[T]):
    """The results of ``task.map`` or ``task.starmap``: iterate for them (in input order, or
    as the jobs end with ``ordered=False``). The jobs were submitted when it was made;
    ``jobs`` holds their handles, in input order. A failed job raises its
    :class:`~balloons.JobFailed` where its result would come (or is given as the value with
    ``return_exceptions=True``); ``timeout`` counts from the call, for all results."""

    def __init__(
        self,
        jobs: list[Job[Any]],
        *,
        ordered: bool,
        return_exceptions: bool,
        timeout: float | None,
    ) -> None:
        self.jobs = jobs
        self.ordered = ordered
        self.return_exceptions = return_exceptions
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[T]:
        order = range(len(self.jobs)) if self.ordered else as_completed(self.jobs, self._left())
        for i in order:
            yield self._result(self.jobs[i])

    async def __aiter__(self) -> AsyncIterator[T]:
        if self.ordered:
            for job in self.jobs:
                try:
                    value: T = await job.result_async(timeout=self._left())
                except JobFailed as exc:
                    if not self.return_exceptions:
                        raise
                    value = exc  # type: ignore[assignment]  # T includes JobFailed then
                yield value
            return
        import asyncio

        ended = as_completed(self.jobs, self._left())
        while (i := await asyncio.to_thread(next, ended, None)) is not None:
            yield self._result(self.jobs[i])

    def _left(self) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ResultTimeout(f"map results still missing after {self._timeout}s")
        return left

    def _result(self, job: Job[Any]) -> T:
        try:
            value: T = job.result(timeout=self._left())
        except JobFailed as exc:
            if not self.return_exceptions:
                raise
            return exc  # type: ignore[return-value]  # T includes JobFailed then
        return value


def as_completed(jobs: Sequence[Job[Any]], timeout: float | None = None) -> Iterator[int]:
    """The indexes of ``jobs`` in the order they end (already ended ones first), each once.

    Waits with ``BLPOP`` on the done tokens of up to :data:`_WAIT_KEYS` jobs at a time (one
    hash slot at a time on a cluster), and pushes each token it takes back at once (with the
    key's expiry), so other waiters of that job still see it. Every :data:`_RECHECK_S`
    seconds the records of the jobs waited on are read: a job whose token is gone
    (forgotten, expired) is given then, and a job whose machine died is reclaimed as
    ``job.result()`` does. ``ResultTimeout`` once ``timeout`` seconds pass."""
    if not jobs:
        return iter(())
    return _Ends(jobs, timeout).run()


class _Ends:
    """The state of one :func:`as_completed`: the jobs not given yet, by hash-slot tag."""

    def __init__(self, jobs: Sequence[Job[Any]], timeout: float | None) -> None:
        self.app = jobs[0].app
        self.redis = self.app.store.redis
        self.ttl = self.app.settings.record_ttl
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.keys = [job._keys for job in jobs]
        self.pending: dict[str, dict[str, int]] = {}  # tag -> done key -> index
        for i, jk in enumerate(self.keys):
            self.pending.setdefault(jk.pool.tag, {})[jk.done] = i

    def run(self) -> Iterator[int]:
        for tag in list(self.pending):
            yield from self._recheck(tag, check_lapsed=False)
        checked = time.monotonic()
        while tags := [t for t, by_key in self.pending.items() if by_key]:
            one = len(tags) == 1 and len(self.pending[tags[0]]) <= _WAIT_KEYS
            for tag in tags:
                yield from self._wait(tag, 1.0 if one else 0.1)
            if time.monotonic() - checked >= _RECHECK_S:
                checked = time.monotonic()
                for tag in tags:
                    yield from self._recheck(tag, check_lapsed=True)

    def _left(self, block: float) -> float:
        if self.deadline is None:
            return block
        left = self.deadline - time.monotonic()
        if left <= 0:
            missing = sum(map(len, self.pending.values()))
            raise ResultTimeout(f"{missing} job(s) still not ended after {self.timeout}s")
        return max(0.01, min(block, left))

    def _wait(self, tag: str, block: float) -> Iterator[int]:
        """Block on the done tokens of the first jobs of ``tag``; give the one that wakes."""
        by_key = self.pending[tag]
        if not by_key:
            return
        got = self.redis.blpop(list(by_key)[:_WAIT_KEYS], timeout=self._left(block))
        if got is None:
            return
        key, token = got
        key = key.decode() if isinstance(key, bytes) else key
        pipe = self.redis.pipeline(transaction=False)  # sent in one write, run back to back
        pipe.lpush(key, token)
        pipe.expire(key, self.ttl)
        pipe.execute()
        i = by_key.pop(key, None)
        if i is not None:
            yield i

    def _recheck(self, tag: str, *, check_lapsed: bool) -> Iterator[int]:
        """Give the jobs of ``tag`` whose record is terminal or gone (one round trip); with
        ``check_lapsed``, reclaim the others whose machine stopped heartbeating."""
        from .states import JobStatus

        indexes = list(self.pending[tag].values())
        if check_lapsed:
            indexes = indexes[:_WAIT_KEYS]
        pipe = self.redis.pipeline(transaction=False)
        for i in indexes:
            pipe.hget(self.keys[i].job, "status")
        for i, raw in zip(indexes, pipe.execute(), strict=True):
            try:
                status = JobStatus(raw.decode()) if raw is not None else None
            except (UnicodeDecodeError, ValueError):
                status = JobStatus.INVALID
            if status is None or status.terminal:
                del self.pending[tag][self.keys[i].done]
                yield i
            elif check_lapsed:
                self.app.check_lapsed(self.keys[i])
