"""The records of chains and groups (:mod:`balloons.flows`) as read from Redis, as hostile
input: a spec only when it verifies with the app's secret, member ids only when they are job
ids, an end only when it can be read."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import JobNotFound
from .signing import verify
from .states import JobStatus
from .store.keys import JobKeys, flow_key
from .untrusted import json_object, number, text

#: What a flow's spec is signed with, beside the app's secret.
LABEL = b"balloons/flow/v1"
_ID = re.compile(r"\A(chain|group)-[0-9a-z]{26}\Z")
_ENDED = {s.value: s for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)}


def is_flow_id(value: str) -> bool:
    """Whether ``value`` is a chain's or a group's id (``chain-ULID``, ``group-ULID``)."""
    return bool(_ID.match(value))


# ----------------------------------------------------------------- records
@dataclass(frozen=True)
class FlowMember:
    """One member of a chain or group: its place (``None`` for a group's callback), its
    task, and its job's id and status once it is submitted."""

    index: int | None
    task: str
    job_id: str | None = None
    status: JobStatus | None = None


@dataclass(frozen=True)
class FlowInfo:
    """What a chain or group is: ``status`` is ``RUNNING`` until it ends (``SUCCEEDED``,
    ``FAILED``, ``CANCELLED``), or ``INVALID`` when its record does not verify. ``member`` is
    the job whose end ended it (empty for a cancel); ``reason``, ``error_type`` and
    ``error_message`` that job's."""

    id: str
    kind: str
    status: JobStatus
    created_at: float | None
    members: tuple[FlowMember, ...]
    callback: FlowMember | None = None
    reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    member: str | None = None
    ended_at: float | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlowRecord:
    """A flow's record as read from Redis, checked: ``spec`` only when it verifies."""

    id: str
    spec: dict[str, Any] | None
    jobs: dict[str, str]
    end: dict[str, Any] | None
    problems: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.id.partition("-")[0]

    def links(self) -> list[dict[str, Any]]:
        return list(self.spec["links"]) if self.spec else []


def read_record(app: Any, flow_id: str) -> FlowRecord | None:
    """Flow ``flow_id``'s record, checked; None when Redis holds none."""
    if not is_flow_id(flow_id):
        raise JobNotFound(flow_id, "not a chain or group id (chain-ULID, group-ULID)")
    with app.store.errors():
        raw = app.store.redis.hgetall(flow_key(app.settings.namespace, flow_id))
    if not raw:
        return None
    return parse_record(app.secret.encode(), flow_id, raw)


def parse_record(secret: bytes, flow_id: str, raw: dict[Any, Any]) -> FlowRecord:
    """A flow's hash, read as hostile input."""
    got = {text(k) or "": v for k, v in raw.items()}
    problems: list[str] = []
    spec = None
    body, sig = got.get("spec"), got.get("sig")
    if isinstance(body, bytes) and isinstance(sig, bytes) and verify(secret, body, LABEL, sig):
        spec = _spec_of(flow_id, body)
    if spec is None:
        problems.append("its spec does not verify with the app's secret (altered in Redis?)")
    jobs: dict[str, str] = {}
    for name, value in got.items():
        if name.startswith("job:"):
            job_id = text(value) or ""
            try:
                JobKeys.of("ns", job_id)
            except ValueError:
                problems.append(f"member {name[4:]!r} names no job")
                continue
            jobs[name[4:]] = job_id
    end = None
    if "end" in got:
        end = _end_of(got["end"])
        if end is None:
            problems.append("its end cannot be read (altered in Redis?)")
    return FlowRecord(flow_id, spec, jobs, end, tuple(problems))


def _spec_of(flow_id: str, body: bytes) -> dict[str, Any] | None:
    spec = json_object(body)
    if spec is None or spec.get("id") != flow_id or not isinstance(spec.get("links"), list):
        return None
    return spec


def _end_of(raw: object) -> dict[str, Any] | None:
    end = json_object(raw)
    if end is None or end.get("status") not in _ENDED:
        return None
    return {
        "status": _ENDED[str(end["status"])],
        "reason": _short(end.get("reason")),
        "error_type": _short(end.get("error_type")),
        "error_message": _short(end.get("error_message"), 4000),
        "member": _short(end.get("member")),
        "at": number(end.get("at"), 0, 1e11),
    }


def _short(value: object, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def info_of(app: Any, rec: FlowRecord) -> FlowInfo:
    """A flow's :class:`FlowInfo`, its members' statuses read (one pipelined read)."""
    links = rec.links()
    cb = rec.spec.get("callback") if rec.spec else None
    named = [(str(i), link) for i, link in enumerate(links)]
    if isinstance(cb, dict):
        named.append(("cb", cb))
    statuses = member_statuses(app, [rec.jobs.get(k) for k, _ in named])
    members = []
    for (k, link), status in zip(named, statuses, strict=True):
        task = str(link.get("task", "")) if isinstance(link, dict) else ""
        members.append(FlowMember(None if k == "cb" else int(k), task, rec.jobs.get(k), status))
    if rec.spec is None:
        members = [FlowMember(int(k), "", j) for k, j in rec.jobs.items() if k.isdigit()]
    end = rec.end or {}
    status = JobStatus.INVALID if rec.spec is None else end.get("status", JobStatus.RUNNING)
    callback = members.pop() if isinstance(cb, dict) else None
    created = number(rec.spec.get("created"), 0, 1e11) if rec.spec else None
    return FlowInfo(
        rec.id,
        rec.kind,
        status,
        created,
        tuple(members),
        callback,
        end.get("reason"),
        end.get("error_type"),
        end.get("error_message"),
        end.get("member"),
        end.get("at"),
        rec.problems,
    )


def member_statuses(app: Any, job_ids: Sequence[str | None]) -> list[JobStatus | None]:
    """The status of each job named (None where none is), in one round trip."""
    from .job import _status

    ns = app.settings.namespace
    named = [j for j in job_ids if j]
    if not named:
        return [None] * len(job_ids)
    with app.store.errors():
        pipe = app.store.redis.pipeline(transaction=False)
        for one in named:
            pipe.hget(JobKeys.of(ns, one).job, "status")
        got = iter(pipe.execute())
    out: list[JobStatus | None] = []
    for job_id in job_ids:
        if not job_id:
            out.append(None)
            continue
        raw = next(got)
        out.append(None if raw is None else _status({"status": raw}))
    return out
