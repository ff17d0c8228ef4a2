"""The job resource of the HTTP API, built from what Redis holds, whatever it holds.

``{id, kind, state, attempt, max_attempts, result, error: {type, message, traceback},
exit_code, machine_id, labels, created_at, started_at, ended_at}``, and ``pool``, ``task``,
``reason``, ``scheduled_at`` and ``callback`` (:func:`balloons.service.webhooks.view`).
Times are RFC 3339 (UTC); a field that cannot be read is
null. A result or error is shown only once it verifies with the app's secret
(:mod:`balloons.signing`), as for every reader.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Any

from ..errors import BalloonsError, JobFailed
from ..info import JobStatus
from ..store.queries import Query, call
from ..store.records import decode_hash, job_info
from ..untrusted import MAX_ATTEMPT, integer, json_object, number, timestamp
from . import webhooks
from .submission import LABEL_KEY_RE, MAX_LABEL_VALUE, MAX_LABELS, encode_value

if TYPE_CHECKING:
    from ..app import App
    from ..store.keys import JobKeys

STATES = ("scheduled", "queued", "starting", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
_EXIT_RE = re.compile(r"\Aexit_code=(-?[0-9]{1,4})\Z")


class Raw:
    """A job's keys as read in one round trip: its hash, attempts, service record and
    callback record."""

    __slots__ = ("attempts", "hook", "meta", "rec")

    def __init__(
        self, rec: dict[str, bytes], attempts: dict[bytes, bytes], meta: object, hook: object = None
    ) -> None:
        self.rec = rec
        self.attempts = attempts
        self.meta = meta
        self.hook = hook


def read(jk: JobKeys) -> Query[Raw | None]:
    """The job's keys (None when it has no record)."""
    rec, attempts, meta, hook = yield [
        call("hgetall", jk.job),
        call("hgetall", jk.attempts),
        call("get", jk.meta),
        call("hgetall", jk.hook),
    ]
    if not rec:
        return None
    return Raw(decode_hash(rec), attempts if isinstance(attempts, dict) else {}, meta, hook)


def read_commands(jk: JobKeys) -> list[list[Any]]:
    """:func:`read`'s commands, for the RESP client that answers a submit
    (:func:`balloons.dispatch_async.submit_read`)."""
    return [["HGETALL", jk.job], ["HGETALL", jk.attempts], ["GET", jk.meta], ["HGETALL", jk.hook]]


def raw_of(replies: list[Any]) -> Raw | bool | None:
    """What :func:`read` makes of the same keys, from the replies of :func:`read_commands`
    (each hash a flat list, as RESP sends it); False when a reply is not of the shape those
    commands have (an error, such as a key of another type), for the caller to read again
    with :func:`read` (and answer its error as any read's)."""
    if len(replies) != 4:
        return False
    rec, attempts, meta, hook = replies
    if meta is not None and meta.__class__ is not bytes:
        return False
    hashes = []
    for flat in (rec, attempts, hook):
        if flat.__class__ is not list or len(flat) % 2:
            return False
        it = iter(flat)
        pairs = dict(zip(it, it, strict=True))
        if not all(k.__class__ is bytes and v.__class__ is bytes for k, v in pairs.items()):
            return False
        hashes.append(pairs)
    if not hashes[0]:
        return None
    return Raw(decode_hash(hashes[0]), hashes[1], meta, hashes[2])


def meta_of(raw: object) -> tuple[str, dict[str, str]]:
    """A job's kind and labels from its service record (``task`` and none when unreadable)."""
    d = json_object(raw) if isinstance(raw, bytes | str) else None
    if d is None:
        return "task", {}
    kind = d.get("kind")
    labels = d.get("labels")
    good: dict[str, str] = {}
    if isinstance(labels, dict):
        for k, v in list(labels.items())[:MAX_LABELS]:
            if LABEL_KEY_RE.match(k) and isinstance(v, str) and len(v) <= MAX_LABEL_VALUE:
                good[k] = v
    return (kind if kind in ("task", "command") else "task"), good


def meta_record(kind: str, labels: dict[str, str]) -> str:
    """The service record of a job: its kind and labels, as JSON."""
    return json.dumps({"kind": kind, "labels": labels}, separators=(",", ":"))


def state_of(status: JobStatus, rec: dict[str, bytes]) -> str:
    """The API state of a job status (``scheduled`` for a queued job with a due time)."""
    if status is JobStatus.QUEUED:
        return "scheduled" if rec.get("due") else "queued"
    if status is JobStatus.INVALID:
        return "failed"
    return status.value.lower()


def rfc3339(t: float | None) -> str | None:
    """A time as RFC 3339 in UTC, or None."""
    if t is None or not t:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def resource(app: App, job_id: str, raw: Raw) -> dict[str, Any]:
    """The job resource (see the module)."""
    rec = raw.rec
    info = job_info(job_id, rec, raw.attempts, app.store.signing_key())
    kind, labels = meta_of(raw.meta)
    state = state_of(info.status, rec)
    result: Any = None
    error: dict[str, Any] | None = None
    reason = info.reason
    if info.status is JobStatus.SUCCEEDED:
        try:
            result = encode_value(app.decode_result(job_id, rec))
        except JobFailed as exc:
            state, reason = "failed", exc.reason
            error = {"type": exc.reason, "message": exc.error_message, "traceback": None}
        except BalloonsError as exc:  # another serializer's result, or one that does not decode
            state, reason = "failed", "serialization"
            error = {"type": "serialization", "message": str(exc), "traceback": None}
    elif info.status in (JobStatus.FAILED, JobStatus.INVALID):
        message = info.error_message
        if info.status is JobStatus.INVALID:
            message = "the job's record cannot be read: " + "; ".join(info.problems)
        error = {
            "type": info.error_type or reason or "unknown",
            "message": message,
            "traceback": info.traceback,
        }
    exit_match = _EXIT_RE.match(reason or "")
    payload = json_object(rec.get("payload")) or {}
    retries = integer(payload.get("retries"), 0, MAX_ATTEMPT)
    due = number(rec.get("due"), 0, 1e11) if state == "scheduled" else None
    return {
        "id": job_id,
        "kind": kind,
        "state": state,
        "pool": info.pool,
        "task": info.task if kind == "task" and info.task != "?" else None,
        "attempt": info.attempt,
        "max_attempts": retries + 1 if retries is not None else None,
        "result": result,
        "error": error,
        "reason": reason,
        "exit_code": int(exit_match.group(1)) if exit_match else None,
        "machine_id": info.machine_id,
        "labels": labels,
        "created_at": rfc3339(info.created_at),
        "scheduled_at": rfc3339(due),
        "started_at": rfc3339(info.started_at),
        "ended_at": rfc3339(info.finished_at),
        "callback": webhooks.view(app.store.signing_key(), job_id, raw.hook),
    }


def summary(job_id: str, rec: dict[str, bytes], meta: object) -> dict[str, Any]:
    """A listing's row: the resource without result, error and attempts (cheap to read)."""
    info = job_info(job_id, rec, {}, None)
    kind, labels = meta_of(meta)
    state = state_of(info.status, rec)
    due = timestamp(rec.get("due")) if state == "scheduled" else None
    exit_match = _EXIT_RE.match(info.reason or "")
    return {
        "id": job_id,
        "kind": kind,
        "state": state,
        "pool": info.pool,
        "task": info.task if kind == "task" and info.task != "?" else None,
        "attempt": info.attempt,
        "reason": info.reason,
        "exit_code": int(exit_match.group(1)) if exit_match else None,
        "machine_id": info.machine_id,
        "labels": labels,
        "created_at": rfc3339(info.created_at),
        "scheduled_at": rfc3339(due),
        "started_at": rfc3339(info.started_at),
        "ended_at": rfc3339(info.finished_at),
    }
