"""Chains and groups: jobs that follow one another, or run side by side and end in a callback.

``balloons.chain(a.s(1), b.s(), c.s()).submit()`` runs ``a(1)``, then ``b`` with ``a``'s
result appended to its positional arguments, then ``c`` with ``b``'s; its handle's
``result()`` is ``c``'s. ``balloons.group(a.s(1), a.s(2), callback=c.s())`` runs the members
at once and, when every one has succeeded, ``c`` with the list of their results in order.

Both are records in Redis (``NS:flow:ID``), not state held by the submitting process: the
``spec`` (every call's task, options and serialized arguments) signed with the app's secret,
the id of each member's job as it is submitted (``job:I``, ``job:cb``), and how it ended
(``end``). Each member is an ordinary job whose signed payload names its flow (``link``), so
the machine that records a member's outcome advances the flow at once (submitting the next
link, or ending it), and the supervisor advances every flow not ended at each step, which
covers a machine that died between the two. Every member is submitted with the idempotency
key ``KIND:ULID:I``, and its id and the flow's end are written with ``HSETNX``: advancers
racing each other submit one job per link and end the flow once.

What ends a flow:

* a chain succeeds when its last link does; a link that fails (or is cancelled) stops it: the
  links after it are never submitted, and the chain fails with that link's reason and error;
* a group succeeds when its callback does (without one: when every member has), and fails
  when a member fails, with that member's reason, unless ``return_exceptions=True``: then the
  callback gets a dict in the failed member's place (``job``, ``status``, ``reason``,
  ``error_type``, ``error_message``). The callback does not run after a failure, and the other
  members are left to end on their own (their results stay readable through ``jobs()``);
* ``cancel()`` ends the flow as ``CANCELLED`` first (so nothing more is submitted), then
  cancels its members that have not ended, the running one included.

The records are read as hostile: a spec that does not verify with the app's secret makes the
flow ``INVALID`` (nothing of it is submitted again), member ids that are no job ids are left
out, an ``end`` that cannot be read counts as not ended.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .errors import ConfigError, FlowFailed, JobFailed, JobNotFound, ResultTimeout
from .fanout import Call
from .flowrecords import (
    LABEL,
    FlowInfo,
    FlowMember,
    FlowRecord,
    info_of,
    is_flow_id,
    member_statuses,
    read_record,
)
from .ids import ulid
from .signing import sign
from .states import JobStatus
from .store.keys import flow_index_key, flow_key, flows_key
from .task import Task

if TYPE_CHECKING:
    from .job import Job

R = TypeVar("R")
T = TypeVar("T")

#: Members a chain or group may have.
MAX_MEMBERS = 1000
#: The task options a member keeps (``retry_on`` is the task's own: exception types are code).
OPTIONS = (
    "cpus",
    "memory_mb",
    "timeout",
    "pool",
    "retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_memory_factor",
    "retry_memory_max",
    "priority",
    "max_cost",
)


#: Re-exported: the records are read in :mod:`balloons.flowrecords`.
__all__ = [
    "Chain",
    "ChainJob",
    "FlowInfo",
    "FlowJob",
    "FlowMember",
    "FlowRecord",
    "Group",
    "GroupJob",
    "chain",
    "group",
    "info_of",
    "is_flow_id",
    "member_statuses",
    "read_record",
]


# ----------------------------------------------------------------- building
def encode_call(app: Any, call: Call[Any, Any], where: str) -> dict[str, Any]:
    """A member's entry of the spec: its task, its options, its arguments serialized."""
    from .serialize import dumps_call

    if not isinstance(call, Call):
        raise TypeError(f"{where} is {type(call).__name__} {call!r}: expected task.s(...)")
    if call.task.call_options:
        raise ConfigError(
            f"{where} ({call!r}) has per-call options {sorted(call.task.call_options)}: a "
            "chain or group sets each member's own (give the task's options only)"
        )
    if id(call.task.app) != id(app):  # (``is`` would narrow ``app``'s type)
        raise ConfigError(f"{where} ({call!r}) is a task of another app")
    opts = {name: getattr(call.task.opts, name) for name in OPTIONS}
    data = dumps_call(app.serializer, call.args, call.kwargs)
    return {"task": call.task.name, "opts": opts, "args": base64.b64encode(data).decode()}


def store_flow(app: Any, kind: str, spec: dict[str, Any]) -> str:
    """Store a new flow's record and list it; its id. Then submit what it starts with."""
    from .control.flows import advance

    now = time.time()
    flow_id = f"{kind}-{ulid(now)}"
    body = json.dumps({**spec, "id": flow_id, "created": now}, separators=(",", ":")).encode()
    ns = app.settings.namespace
    key = flow_key(ns, flow_id)
    with app.store.errors():
        pipe = app.store.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"spec": body, "sig": sign(app.secret.encode(), body, LABEL)})
        pipe.expire(key, int(app.settings.record_ttl))
        pipe.zadd(flows_key(ns), {flow_id: now})
        pipe.zadd(flow_index_key(ns), {flow_id: now})
        pipe.execute()
    advance(app, flow_id)
    return flow_id


def _app_of(calls: tuple[Any, ...], what: str) -> Any:
    if not calls:
        raise TypeError(f"{what} needs at least one task.s(...) call")
    if len(calls) > MAX_MEMBERS:
        raise ConfigError(f"{what} has {len(calls)} calls: at most {MAX_MEMBERS}")
    first = calls[0]
    if not isinstance(first, Call):
        raise TypeError(f"call 0 of {what} is {type(first).__name__} {first!r}: expected task.s()")
    return first.task.app


class Chain(Generic[R]):
    """Calls run one after another, each given the result of the one before as its last
    positional argument: ``balloons.chain(a.s(1), b.s(), c.s())``. Nothing is stored until
    :meth:`submit`."""

    def __init__(self, calls: tuple[Call[Any, Any], ...]) -> None:
        from .calls import check_call

        self.app = _app_of(calls, "chain")
        self.spec = {"links": [encode_call(self.app, c, f"link {i}") for i, c in enumerate(calls)]}
        check_call(calls[0].task, calls[0].args, calls[0].kwargs)
        for i, call in enumerate(calls[1:], 1):
            try:
                check_call(call.task, (*call.args, None), call.kwargs)
            except TypeError as exc:
                raise TypeError(f"link {i} cannot take the result before it: {exc}") from None

    def submit(self) -> ChainJob[R]:
        """Store the chain and submit its first link; its handle."""
        return ChainJob(self.app, store_flow(self.app, "chain", self.spec))

    async def submit_async(self) -> ChainJob[R]:
        """:meth:`submit` for asyncio (in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.submit)


class Group(Generic[R]):
    """Calls run at once, then an optional callback given the list of their results:
    ``balloons.group(a.s(1), a.s(2), callback=c.s())``. Nothing is stored until
    :meth:`submit`."""

    def __init__(
        self,
        calls: tuple[Call[Any, Any], ...],
        callback: Call[Any, Any] | None,
        return_exceptions: bool,
    ) -> None:
        from .calls import check_call

        self.app = _app_of(calls, "group")
        links = [encode_call(self.app, c, f"member {i}") for i, c in enumerate(calls)]
        for call in calls:
            check_call(call.task, call.args, call.kwargs)
        cb = None
        if callback is not None:
            cb = encode_call(self.app, callback, "the callback")
            try:
                check_call(callback.task, (*callback.args, []), callback.kwargs)
            except TypeError as exc:
                raise TypeError(f"the callback cannot take the list of results: {exc}") from None
        self.spec = {"links": links, "callback": cb, "return_exceptions": bool(return_exceptions)}

    def submit(self) -> GroupJob[R]:
        """Store the group and submit its members; its handle."""
        return GroupJob(self.app, store_flow(self.app, "group", self.spec))

    async def submit_async(self) -> GroupJob[R]:
        """:meth:`submit` for asyncio (in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.submit)


#: A chain's link or a group's callback: a call, or a task called with the result alone.
Link = Call[Any, R] | Task[Any, R]


def _as_call(link: Any) -> Any:
    """``link`` as a call: a task alone is a call with no arguments of its own."""
    return Call(link, (), {}) if isinstance(link, Task) else link


# fmt: off
@overload
def chain(c1: Link[R], /) -> Chain[R]: ...
@overload
def chain(c1: Link[Any], c2: Link[R], /) -> Chain[R]: ...
@overload
def chain(c1: Link[Any], c2: Link[Any], c3: Link[R], /) -> Chain[R]: ...
@overload
def chain(c1: Link[Any], c2: Link[Any], c3: Link[Any], c4: Link[R], /) -> Chain[R]: ...
@overload
def chain(
    c1: Link[Any], c2: Link[Any], c3: Link[Any], c4: Link[Any], c5: Link[R], /
) -> Chain[R]: ...
@overload
def chain(*calls: Link[Any]) -> Chain[Any]: ...
# fmt: on
def chain(*calls: Link[Any]) -> Chain[Any]:
    """Calls run one after another, each given the previous one's result as its last
    positional argument (see :mod:`balloons.flows`); ``.submit()`` stores and starts it. A
    link may be a task alone (``b`` for ``b.s()``): mypy checks ``b.s()`` against all of
    ``b``'s parameters, so a typed link that takes only the result is written that way."""
    return Chain(tuple(_as_call(c) for c in calls))


@overload
def group(
    *calls: Call[Any, R], callback: None = None, return_exceptions: bool = False
) -> Group[list[R]]: ...
@overload
def group(
    *calls: Call[Any, Any], callback: Link[T], return_exceptions: bool = False
) -> Group[T]: ...
def group(
    *calls: Call[Any, Any], callback: Link[Any] | None = None, return_exceptions: bool = False
) -> Group[Any]:
    """Calls run at once; with a ``callback`` (a call, or a task alone), it runs once they have
    all succeeded, given the list of their results in order (see :mod:`balloons.flows` for
    failures); ``.submit()`` stores and starts it."""
    return Group(calls, None if callback is None else _as_call(callback), return_exceptions)


# ----------------------------------------------------------------- handles
class FlowJob(Generic[R]):
    """The handle of a submitted chain or group (see :class:`ChainJob`, :class:`GroupJob`)."""

    def __init__(self, app: Any, flow_id: str) -> None:
        if not is_flow_id(flow_id):
            raise JobNotFound(flow_id, "not a chain or group id (chain-ULID, group-ULID)")
        self.app = app
        self.id = flow_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"

    def _record(self) -> FlowRecord:
        rec = read_record(self.app, self.id)
        if rec is None:
            raise JobNotFound(self.id)
        return rec

    def info(self) -> FlowInfo:
        """Its status and its members (their jobs' ids and statuses)."""
        return info_of(self.app, self._record())

    def status(self) -> JobStatus:
        """``RUNNING`` until it ends; then ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``."""
        rec = self._record()
        if rec.spec is None:
            return JobStatus.INVALID
        return rec.end["status"] if rec.end else JobStatus.RUNNING

    def jobs(self) -> list[Job[Any]]:
        """The handles of its members' jobs submitted so far, in order (a group's callback
        last)."""
        rec = self._record()
        keys = sorted((k for k in rec.jobs if k.isdigit()), key=int)
        keys += ["cb"] if "cb" in rec.jobs else []
        return [self.app.job(rec.jobs[k]) for k in keys]

    def cancel(self) -> bool:
        """End it as ``CANCELLED`` and cancel its members that have not ended; False when it
        had ended already."""
        from .control.flows import cancel

        return cancel(self.app, self.id)

    async def cancel_async(self) -> bool:
        """:meth:`cancel` for asyncio (in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.cancel)

    def result(self, timeout: float | None = None) -> R:
        """Block until it ends; its result. Raises :class:`~balloons.FlowFailed` (a
        :class:`~balloons.JobFailed`) when it failed or was cancelled, and
        :class:`~balloons.ResultTimeout` when ``timeout`` seconds pass first."""
        rec = self._wait(timeout)
        end = rec.end or {}
        if rec.spec is None:
            raise FlowFailed(self.id, "INVALID", "record_invalid", "", rec.problems[0])
        if end.get("status") is not JobStatus.SUCCEEDED:
            raise FlowFailed(
                self.id,
                str(end.get("status", JobStatus.INVALID)),
                end.get("reason") or "cancelled",
                end.get("error_type") or "",
                end.get("error_message") or "",
                member=end.get("member") or "",
            )
        try:
            return self._value(rec)
        except KeyError:  # a member's id altered after the flow ended
            what = "a member's job id cannot be read (altered in Redis?)"
            raise FlowFailed(self.id, "INVALID", "record_invalid", "", what) from None

    async def result_async(self, timeout: float | None = None) -> R:
        """:meth:`result` for asyncio (in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.result, timeout)

    def _value(self, rec: FlowRecord) -> R:
        """The ended flow's value: each kind (:class:`ChainJob`, :class:`GroupJob`) says."""
        raise NotImplementedError

    def _wait(self, timeout: float | None) -> FlowRecord:
        """Its record once it has ended: waits on the member running, then on its advance."""
        until = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while True:
            rec = self._record()
            if rec.end is not None or rec.spec is None:
                return rec
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                states = info_of(self.app, rec).members
                said = ", ".join(f"{m.job_id or '-'} {m.status or 'not submitted'}" for m in states)
                raise ResultTimeout(f"{self.id} did not end within {timeout} s (members: {said})")
            current = _running(self.app, rec)
            if current is not None:
                try:
                    self.app.job(current).result(timeout=min(left or 2.0, 2.0))
                except (JobFailed, ResultTimeout, JobNotFound):
                    pass
            time.sleep(min(pause, left) if left is not None else pause)
            pause = min(pause * 2, 0.25)


def _running(app: Any, rec: FlowRecord) -> str | None:
    """The member job to wait on: one submitted and not ended, if any."""
    named = list(rec.jobs.values())
    for job_id, status in zip(named, member_statuses(app, list(named)), strict=True):
        if status is not None and not status.terminal:
            return job_id
    return None


class ChainJob(FlowJob[R]):
    """The handle of a submitted chain: ``result()`` is its last link's result."""

    def _value(self, rec: FlowRecord) -> R:
        last = str(len(rec.links()) - 1)
        value: R = self.app.job(rec.jobs[last]).result(timeout=0)
        return value


class GroupJob(FlowJob[R]):
    """The handle of a submitted group: ``result()`` is its callback's result, or without one
    the list of its members' results in order (a failed member's
    :class:`~balloons.JobFailed` in its place with ``return_exceptions=True``)."""

    def _value(self, rec: FlowRecord) -> R:
        if "cb" in rec.jobs:
            value: R = self.app.job(rec.jobs["cb"]).result(timeout=0)
            return value
        out: list[Any] = []
        for i in range(len(rec.links())):
            try:
                out.append(self.app.job(rec.jobs[str(i)]).result(timeout=0))
            except JobFailed as exc:
                out.append(exc)
        return out  # type: ignore[return-value]
