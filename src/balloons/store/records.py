"""Job records read from Redis, decoded as hostile input: a job's status, its error (shown only
once its tag verifies with the app's secret), its attempts, a slot's entry. Pure functions: the
readers (:class:`balloons.store.writes.Store`, listings, the dashboard) fetch, this module decodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compat import read_key_id, read_tag
from ..info import AttemptInfo, JobInfo, JobStatus, Reason
from ..signing import verify_outcome
from ..untrusted import (
    MAX_ATTEMPT,
    MAX_CPUS,
    MAX_MEMORY_MB,
    describe,
    integer,
    json_object,
    json_value,
    text,
    timestamp,
)


def decode_hash(raw: dict[bytes, bytes]) -> dict[str, bytes]:
    """A job hash as read by redis-py, its field names decoded."""
    return {k.decode(): v for k, v in raw.items()}


# What readers show in place of what a machine wrote when it cannot be trusted: its tag does
# not verify with the app's secret, or the reader has no secret to verify it with.
INVALID_ERROR = (
    "the error stored for this job does not verify with this app's secret (altered in Redis, "
    "copied from another job or attempt, or written with another secret): not shown"
)
UNVERIFIED_ERROR = (
    "the error stored for this job is not shown: this app has no signing key to verify it "
    "with (BALLOONS_SECRET)"
)
INVALID_MESSAGE = "[message not shown: it does not verify with this app's secret]"
UNVERIFIED_MESSAGE = "[message not shown: no signing key to verify it with]"
INVALID_PROGRESS = "[progress not shown: it does not verify with this app's secret]"
UNVERIFIED_PROGRESS = "[progress not shown: no signing key to verify it with]"
#: The message of a cancelled job (which stores no error).
CANCELLED_MESSAGE = "cancelled on request"


def record_error(
    job_id: str, rec: Mapping[str, bytes], secret: bytes | None
) -> tuple[str | None, dict[str, object]]:
    """The reason and the error (``type``, ``message``, ``traceback``) of a job's record. The
    error is decoded only once its tag verifies, for an attempt it can be (the job's, when the
    job failed; an earlier one's, after a retry); otherwise the message says why it is not
    shown, and the reason is ``result_invalid`` when it did not verify."""
    reason = text(rec.get("reason")) or None
    raw = rec.get("error")
    if not raw:
        if rec.get("status") == b"CANCELLED":
            return reason or Reason.CANCELLED.value, {"message": CANCELLED_MESSAGE}
        return reason, {}
    if secret is None:
        return reason, {"message": UNVERIFIED_ERROR}
    n = verify_outcome(secret, "error", job_id, raw, rec.get("esig"))
    attempt = integer(rec.get("attempt") or 0, 0, MAX_ATTEMPT)
    # The job's own attempt's error when it failed; an earlier attempt's after a retry.
    failed = rec.get("status") == b"FAILED"
    if n is not None and attempt is not None and (n == attempt if failed else n <= attempt):
        err = json_object(raw)
        if err is not None:
            signed = err.get("reason")
            return (signed if isinstance(signed, str) and signed else reason), err
    claim = f" (it claims reason {describe(reason)})" if reason else ""
    return Reason.RESULT_INVALID.value, {"message": INVALID_ERROR + claim}


def _checked_message(job_id: str, n: int, d: object, secret: bytes | None) -> object:
    """Attempt ``n``'s record with its message kept only when its tag verifies for it."""
    if not isinstance(d, dict) or not d.get("message"):
        return d
    if secret is None:
        return {**d, "message": UNVERIFIED_MESSAGE}
    msg = d["message"]
    data = msg.encode("utf-8", "replace") if isinstance(msg, str) else b""
    if verify_outcome(secret, "message", job_id, data, d.get("msig")) != n:
        return {**d, "message": INVALID_MESSAGE}
    return d


def attempts_from(
    job_id: str,
    rec: dict[str, bytes],
    attempts: dict[bytes, bytes],
    secret: bytes | None = None,
) -> tuple[AttemptInfo, ...]:
    """A job's attempts, in order, from its attempts hash; and its first attempt while the
    machine that submit launched for it has not yet reported (the record is written on the
    attempt's first change: until then the job's record holds what it says). ``rec`` needs
    ``attempt``, ``slot``, ``created`` and ``need`` for the latter. Whatever the hashes hold:
    an attempt record that cannot be read is kept, with its :attr:`~AttemptInfo.problems`.
    An attempt's message is shown only when it verifies with ``secret``."""

    def attempt(k: bytes, v: bytes) -> AttemptInfo:
        n = integer(k, 0, MAX_ATTEMPT) or 0
        return AttemptInfo.from_dict(_checked_message(job_id, n, json_value(v), secret), n)

    tries = sorted((attempt(k, v) for k, v in attempts.items()), key=lambda a: a.number)
    slot = text(rec.get("slot")) or ""
    if not tries and rec.get("attempt") == b"1" and slot == job_id.rpartition(".")[2] + "-1":
        cpus, _, mem = (text(rec.get("need")) or "").partition(":")
        tries = [
            AttemptInfo(
                number=1,
                launched_at=timestamp(rec.get("created")),
                slot=slot,
                cpus=integer(cpus, 1, MAX_CPUS),
                memory_mb=integer(mem, 1, MAX_MEMORY_MB),
            )
        ]
    return tuple(tries)


def read_status(raw: object) -> tuple[JobStatus, str | None]:
    """A job's status from its record, and what is wrong with it: ``INVALID`` for anything
    but one of the statuses a job goes through."""
    value = text(raw)
    if value is None:
        return JobStatus.INVALID, "its record has no status"
    try:
        st = JobStatus(value)
    except ValueError:
        st = JobStatus.INVALID
    if st is JobStatus.INVALID:
        return st, f"status {describe(value)} is not a job status"
    return st, None


def job_info(
    job_id: str,
    rec: dict[str, bytes],
    attempts: dict[bytes, bytes],
    secret: bytes | None = None,
) -> JobInfo:
    """Build a :class:`JobInfo` from a raw job hash and its attempts hash, whatever they hold:
    a field that cannot be read is left unknown and named in :attr:`JobInfo.problems`. The
    error (and each attempt's message) is shown only when it verifies with ``secret`` (see
    :func:`record_error`)."""
    problems: list[str] = []

    def s(name: str) -> str | None:
        return text(rec.get(name)) or None

    def when(name: str) -> float | None:
        raw = rec.get(name)
        if not raw:
            return None
        value = timestamp(raw)
        if value is None:
            problems.append(f"{name} {describe(raw)} is not a time")
        return value

    status, wrong = read_status(rec.get("status"))
    if wrong:
        problems.append(wrong)
    task = "?"
    if "payload" in rec:
        payload = json_object(rec["payload"])
        if payload is None:
            problems.append("its payload is not a JSON object")
        elif isinstance(payload.get("task"), str):
            task = str(payload["task"])
    reason, error = record_error(job_id, rec, secret)
    attempt = integer(rec.get("attempt") or 0, 0, MAX_ATTEMPT)
    if attempt is None:
        problems.append(f"attempt {describe(rec.get('attempt'))} is not an attempt number")

    def err(name: str) -> str | None:
        value = error.get(name)
        return value if isinstance(value, str) and value else None

    return JobInfo(
        id=job_id,
        task=task,
        pool=job_id.rpartition(".")[0],
        status=status,
        attempt=attempt or 0,
        machine_id=s("machine"),
        created_at=when("created") or 0.0,
        started_at=when("started"),
        finished_at=when("finished"),
        reason=reason or ("record_invalid" if status is JobStatus.INVALID else None),
        error_type=err("type"),
        error_message=err("message"),
        traceback=err("traceback"),
        attempts=attempts_from(job_id, rec, attempts, secret),
        problems=tuple(problems),
        compat=read_tag(rec.get("compat")) or None,
        passed_by=read_key_id(rec.get("passed")),
        rerouted_from=read_tag(rec.get("rerouted")) or None,
    )


def slot_entry(raw: bytes) -> dict[str, Any]:
    """A slot's JSON entry; ``{}`` for one that is not a JSON object (altered in Redis)."""
    return json_object(raw) or {}
