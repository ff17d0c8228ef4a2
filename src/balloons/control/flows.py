"""Advancing chains and groups (:mod:`balloons.flows`): submit what is due, end what is done.

:func:`advance` reads a flow's record (its spec verified with the app's secret), submits the
members due (each with the idempotency key ``KIND:ULID:I``, its job id then recorded with
``HSETNX``) and ends the flow (``HSETNX end``) when its members say so. It is called by the
submitter (the first link, or every member of a group), by the machine that recorded a
member's outcome (:mod:`balloons.machine.links`) and by each supervisor step for every flow
not ended (:func:`plans`), so an advance missed by a machine that died is made a step later.
Any number of advancers may run at once: each submit of a member returns the same job, and a
flow ends once.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import registry
from ..flows import MAX_MEMBERS, OPTIONS, FlowRecord, member_statuses, read_record
from ..serialize import loads_call
from ..states import JobStatus
from ..store.keys import flow_index_key, flow_key, flows_key

if TYPE_CHECKING:
    from .supervisor import Control, StepReport

log = logging.getLogger("balloons.control.flows")

#: The delay of a member a machine submits for itself to take, or may launch no machine for:
#: due at once, but through the delayed set, which never takes a slot.
DUE_NOW = 0.001
#: A machine's test of the members it takes itself (see :func:`advance`).
Here = Callable[[Any], bool] | None
#: Flows a supervisor step advances at most (the oldest first).
STEP_FLOWS = 500


def advance(app: Any, flow_id: str, *, launch: bool = True, here: Here = None) -> bool:
    """Submit the members of flow ``flow_id`` that are due and end it when its members say
    so; whether it changed anything. A flow gone from Redis, invalid or ended is dropped from
    the list of those to advance.

    It reads the record again after each change until nothing changes: a member may end
    before its job's id is recorded, and its own machine's advance then finds nothing to do;
    the advancer that recorded the id sees it ended (whichever reads last sees both).

    With ``launch`` false (a machine that may launch nothing) a member is submitted due now
    (through the delayed set, so it never takes a new slot), for the idle machines of its pool
    or the supervisor's next launch to take; so is a member for which ``here`` (a machine's
    advance: the members it takes itself) is true."""
    changed = False
    for _ in range(MAX_MEMBERS + 3):
        if not _advance_once(app, flow_id, launch, here):
            break
        changed = True
    return changed


def _advance_once(app: Any, flow_id: str, launch: bool, here: Here) -> bool:
    rec = read_record(app, flow_id)
    if rec is None or rec.spec is None or rec.end is not None:
        _untrack(app, flow_id)
        if rec is not None and rec.spec is None:
            log.warning("flow %s: its record does not verify; it is no longer advanced", flow_id)
        return False
    if rec.kind == "chain":
        return _advance_chain(app, rec, launch, here)
    return _advance_group(app, rec, launch, here)


def _advance_chain(app: Any, rec: FlowRecord, launch: bool, here: Here) -> bool:
    links = rec.links()
    done = 0
    while str(done) in rec.jobs:
        done += 1
    if done == 0:
        _submit(app, rec, "0", links[0], (), launch, here)
        return True
    last = rec.jobs[str(done - 1)]
    status = member_statuses(app, [last])[0]
    if status is None or not status.terminal:
        return False
    if status is not JobStatus.SUCCEEDED:
        return _end_failed(app, rec, last)
    if done == len(links):
        return end(app, rec.id, JobStatus.SUCCEEDED, member=last)
    from ..errors import JobFailed

    try:
        value = app.job(last).result(timeout=0)
    except JobFailed:  # its result does not verify (altered in Redis): the chain stops there
        return _end_failed(app, rec, last, "result_invalid")
    _submit(app, rec, str(done), links[done], (value,), launch, here)
    return True


def _advance_group(app: Any, rec: FlowRecord, launch: bool, here: Here) -> bool:
    assert rec.spec is not None
    links = rec.links()
    changed = False
    for i, link in enumerate(links):
        if str(i) not in rec.jobs:
            rec.jobs[str(i)] = _submit(app, rec, str(i), link, (), launch, here)
            changed = True
    ids = [rec.jobs[str(i)] for i in range(len(links))]
    statuses = member_statuses(app, list(ids))
    keep_errors = rec.spec.get("return_exceptions") is True
    for job_id, status in zip(ids, statuses, strict=True):
        failed = status is not None and status.terminal and status is not JobStatus.SUCCEEDED
        if failed and not keep_errors:
            return _end_failed(app, rec, job_id)
    if not all(s is not None and s.terminal for s in statuses):
        return changed
    callback = rec.spec.get("callback")
    if not isinstance(callback, dict):
        return end(app, rec.id, JobStatus.SUCCEEDED) or changed
    if "cb" not in rec.jobs:
        outcomes = ([_outcome(app, j) for j in ids],)
        _submit(app, rec, "cb", callback, outcomes, launch, here)
        return True
    cb = rec.jobs["cb"]
    status = member_statuses(app, [cb])[0]
    if status is None or not status.terminal:
        return changed
    if status is not JobStatus.SUCCEEDED:
        return _end_failed(app, rec, cb)
    return end(app, rec.id, JobStatus.SUCCEEDED, member=cb)


def _outcome(app: Any, job_id: str) -> Any:
    """A member's result for the callback, or (``return_exceptions``) what its failure was."""
    from ..errors import JobFailed

    try:
        return app.job(job_id).result(timeout=0)
    except JobFailed as exc:
        return {
            "job": job_id,
            "status": exc.status,
            "reason": exc.reason,
            "error_type": exc.error_type,
            "error_message": exc.error_message,
        }


def _submit(
    app: Any,
    rec: FlowRecord,
    index: str,
    link: dict[str, Any],
    extra: tuple[Any, ...],
    launch: bool,
    here: Here = None,
) -> str:
    """Submit one member (its spec's call, ``extra`` appended to its positional arguments);
    record its job's id (the first recorded stands) and return the id recorded."""
    task = registry.load(str(link["task"]))
    kind, _, flow_ulid = rec.id.partition("-")
    opts = {k: v for k, v in dict(link["opts"]).items() if k in OPTIONS}
    call: dict[str, Any] = {"key": f"{kind}:{flow_ulid}:{index}"}
    if not launch or (here is not None and here(link)):
        call["delay"] = DUE_NOW
    clone = task.options(**opts, **call)
    # Submitted by the advancing app (its store, secret and pools), whatever app registered
    # the task's name last in this process.
    args, kwargs = loads_call(app.serializer, base64.b64decode(link["args"]))
    job = app.dispatcher.submit(clone, clone.opts, (*args, *extra), kwargs, link=rec.id)
    key = flow_key(app.settings.namespace, rec.id)
    with app.store.errors():
        pipe = app.store.redis.pipeline(transaction=False)
        pipe.hsetnx(key, f"job:{index}", job.id)
        pipe.hget(key, f"job:{index}")
        pipe.hexists(key, "end")
        _, recorded, ended = pipe.execute()
    if ended:  # cancelled meanwhile: what was just submitted does not run
        job.cancel()
    got = recorded.decode() if isinstance(recorded, bytes) else job.id
    log.info("flow %s: member %s submitted as %s", rec.id, index, got)
    return got


def _end_failed(app: Any, rec: FlowRecord, job_id: str, reason: str = "") -> bool:
    info = app.job(job_id).info()
    status = JobStatus.CANCELLED if info.status is JobStatus.CANCELLED else JobStatus.FAILED
    return end(
        app,
        rec.id,
        status,
        reason=reason or info.reason or str(info.status).lower(),
        error_type=info.error_type or "",
        error_message=info.error_message or "",
        member=job_id,
    )


def end(
    app: Any,
    flow_id: str,
    status: JobStatus,
    *,
    reason: str = "",
    error_type: str = "",
    error_message: str = "",
    member: str = "",
) -> bool:
    """End flow ``flow_id`` (once: the first end written stands); whether this call did."""
    body = json.dumps(
        {
            "status": str(status),
            "reason": reason,
            "error_type": error_type,
            "error_message": error_message[:4000],
            "member": member,
            "at": time.time(),
        }
    )
    with app.store.errors():
        ended = app.store.redis.hsetnx(flow_key(app.settings.namespace, flow_id), "end", body)
    _untrack(app, flow_id)
    if ended:
        log.info("flow %s %s%s", flow_id, str(status).lower(), f" ({reason})" if reason else "")
    return bool(ended)


def cancel(app: Any, flow_id: str, grace: float | None = None) -> bool:
    """End flow ``flow_id`` as cancelled, then cancel its members that have not ended (a
    running one's machine stopped after ``grace`` seconds, by default its job's); whether it
    was not ended before."""
    rec = read_record(app, flow_id)
    if rec is None:
        from ..errors import JobNotFound

        raise JobNotFound(flow_id)
    ended = end(app, flow_id, JobStatus.CANCELLED, reason="cancelled")
    rec = read_record(app, flow_id) or rec
    ids = list(rec.jobs.values())
    for job_id, status in zip(ids, member_statuses(app, ids), strict=True):
        if status is not None and not status.terminal:
            if grace is None:
                app.job(job_id).cancel()
            else:
                app.job(job_id).cancel(grace=grace)
    return ended


def _untrack(app: Any, flow_id: str) -> None:
    with app.store.errors():
        app.store.redis.zrem(flows_key(app.settings.namespace), flow_id)


def plans(app: Control, synced: bool, report: StepReport) -> bool:
    """A supervisor step's planned work: the schedules' due runs (see :mod:`.cron`: an app that
    declares none leaves their state be), then every flow not ended advanced. Returns whether
    the schedules' forgetting is done."""
    if app.schedules:
        from .cron import step as schedules_step

        synced = schedules_step(app, synced, report)
    try:
        report.advanced += step(app)
    except Exception as exc:
        log.exception("supervisor: flows: %s", exc)
        report.errors.append(f"flows: {exc}")
    return synced


def step(app: Any) -> list[str]:
    """Advance every flow not ended (the oldest :data:`STEP_FLOWS`) and forget the listing of
    those past the record TTL; the ids of the flows that changed."""
    ns = app.settings.namespace
    with app.store.errors():
        ids = app.store.redis.zrange(flows_key(ns), 0, STEP_FLOWS - 1)
        app.store.redis.zremrangebyscore(
            flow_index_key(ns), "-inf", time.time() - app.settings.record_ttl
        )
    changed = []
    for raw in ids:
        flow_id = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            if advance(app, flow_id):
                changed.append(flow_id)
        except Exception as exc:  # one flow must not stop the others
            from ..errors import JobNotFound

            if isinstance(exc, JobNotFound):  # no flow id (written by someone else)
                _untrack(app, flow_id)
                continue
            log.exception("flow %s: %s", flow_id, exc)
    return changed
