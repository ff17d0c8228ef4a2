"""Reads and control calls as data, run by a sync or an asyncio Redis client alike.

A *query* is a generator: it yields a step (a batch of redis-py calls, sent as one pipeline,
or one of :mod:`balloons.store.lua`'s scripts), is sent the step's replies, and returns the decoded
value. It does no I/O itself, so the one query behind ``job.status()`` also runs behind
``await job.status_async()``: :meth:`~balloons.store.reads.StoreReads.run` drives it on
redis-py's client, :meth:`~balloons.store.reads.StoreReads.run_async` on its asyncio client.
Queries compose with ``yield from``. Replies are hostile input: they are decoded by
:mod:`balloons.store.records` and :mod:`balloons.untrusted` as every reader's are.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from ..errors import JobNotFound
from ..info import JobInfo, JobStatus
from ..signing import verify_outcome
from ..untrusted import number, text
from . import lua, replies
from .keys import POOL_RE, ULID_RE, JobKeys, PoolKeys, pools_key
from .records import INVALID_PROGRESS, UNVERIFIED_PROGRESS, decode_hash, job_info, read_status
from .replies import Cancelled, Code

T = TypeVar("T")


class Call(NamedTuple):
    """One redis-py call: a client method's name and its arguments (the same on a pipeline
    of the sync and of the asyncio client, and so are the replies)."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Script(NamedTuple):
    """One script of :mod:`balloons.lua` run against pool ``pk`` (see
    :meth:`StoreReads.eval <balloons.store.reads.StoreReads.eval>`); its reply is raw."""

    script: str
    pk: PoolKeys
    args: tuple[Any, ...]
    jobs: tuple[str, ...] = ()


class Tolerant(list[Call]):
    """A step whose commands fail one by one: a command refused (a key of another kind than
    balloons writes: ``WRONGTYPE``) gets its error as its reply, where it fails any other
    step's query whole."""


#: What a query yields: calls sent as one pipeline (sent a list of their replies), or a script
#: (sent its reply).
Step = list[Call] | Script
Query = Generator[Step, Any, T]


def call(method: str, *args: Any, **kwargs: Any) -> Call:
    """One command of a query's step: ``method`` of the Redis client with these arguments."""
    return Call(method, args, kwargs)


# ---------------------------------------------------------------------- one job
def record(jk: JobKeys) -> Query[dict[str, bytes]]:
    """The job's record (``{}`` when there is none)."""
    (raw,) = yield [call("hgetall", jk.job)]
    return decode_hash(raw)


def status(jk: JobKeys) -> Query[JobStatus | None]:
    """The job's status (``INVALID`` for a record that has none it could have); None when
    there is no record."""
    (raw,) = yield [call("hget", jk.job, "status")]
    if raw is None:  # no status: no record, or one that has none it could have
        (exists,) = yield [call("exists", jk.job)]
        if not exists:
            return None
    return read_status(raw)[0]


def info(jk: JobKeys, key: bytes | None) -> Query[JobInfo | None]:
    """The job's record and attempts, decoded (outcomes verified with ``key``); None when
    there is no record."""
    rec, attempts = yield [call("hgetall", jk.job), call("hgetall", jk.attempts)]
    return job_info(jk.job_id, decode_hash(rec), attempts, key) if rec else None


def progress(jk: JobKeys, key: bytes | None) -> Query[tuple[float, str] | None]:
    """The job's last reported progress and note, if its task reported any. Progress whose
    tag does not verify with ``key`` reads as 0 with a note saying so."""
    ((raw, note, tag),) = yield [call("hmget", jk.job, ["progress", "note", "psig"])]
    if raw is None:
        return None
    if key is None:
        return 0.0, UNVERIFIED_PROGRESS
    data = raw + b"\n" + (note or b"")
    fraction = number(raw, 0.0, 1.0)
    if fraction is None or verify_outcome(key, "progress", jk.job_id, data, tag) is None:
        return 0.0, INVALID_PROGRESS
    return fraction, text(note) or ""


def queue_position(jk: JobKeys) -> Query[int | None]:
    """The job's place in its pool's queue (1 for the next); ``None`` when it is not queued."""
    (rank,) = yield [call("zrank", jk.pool.queue, jk.ulid)]
    return None if rank is None else int(rank) + 1


def forget(jk: JobKeys) -> Query[None]:
    """Delete the job's record, attempts, done token and logs, and drop it from the pool's index."""
    yield [
        call("delete", jk.job, jk.attempts, jk.done, jk.logs),
        call("zrem", jk.pool.jobs, jk.ulid),
    ]


def cancel(jk: JobKeys) -> Query[Cancelled]:
    """Mark a job cancelled (``CANCEL``): its status before (code ``OK``), or code
    ``REFUSED`` when it had ended; the slot and machine it held."""
    reply = replies.cancel((yield Script(lua.CANCEL, jk.pool, (jk.ulid,), (jk.ulid,))))
    if reply.code is Code.GONE:
        raise JobNotFound(jk.job_id)
    return reply


# ------------------------------------------------------------------ listings
def pools(namespace: str) -> Query[list[str]]:
    """The namespace's pool names, sorted; members that are no pool name (not written by
    balloons) are left out. An index of another kind than a set (altered in Redis) reads as
    no pool, with a warning naming it (once per process)."""
    names, problem = yield from pool_index(namespace)
    if problem and problem not in _TOLD:
        _TOLD.add(problem)
        logging.getLogger("balloons.store").warning("%s", problem)
    return names


def pool_index(namespace: str) -> Query[tuple[list[str], str]]:
    """The namespace's pool names, sorted, and ``''``; or no name and why the index cannot be
    read (a key of another kind than a set: altered in Redis)."""
    key = pools_key(namespace)
    (found,) = yield Tolerant([call("smembers", key)])
    if isinstance(found, Exception):  # another kind of key (WRONGTYPE), say
        return [], f"the pools index {key} cannot be read (altered in Redis?): {found}"
    # Only names a pool can have: anything else in the set was not written by balloons.
    return sorted(n for n in (p.decode("utf-8", "replace") for p in found) if POOL_RE.match(n)), ""


#: The unreadable pools indexes already warned about.
_TOLD: set[str] = set()


def recent(namespace: str, limit: int, pool: str | None, key: bytes | None) -> Query[list[JobInfo]]:
    """The newest jobs, across pools unless one is named."""
    names = [pool] if pool else (yield from pools(namespace))
    rows = yield [
        call("zrevrange", PoolKeys(namespace, p).jobs, 0, limit - 1, withscores=True) for p in names
    ]
    ranked = sorted(job_ids(names, rows), reverse=True)[:limit]
    keys = [JobKeys.of(namespace, jid) for _, jid in ranked]
    raw = yield Tolerant(call("hgetall", k) for jk in keys for k in (jk.job, jk.attempts))
    return [
        job_info(
            jk.job_id,
            UNREADABLE if isinstance(rec, Exception) else decode_hash(rec),
            {} if isinstance(attempts, Exception) else attempts,
            key,
        )
        for jk, rec, attempts in zip(keys, raw[::2], raw[1::2], strict=True)
        if rec
    ]


def job_ids(pools: Sequence[str], rows: list[Any]) -> Iterator[tuple[float, str]]:
    """``(created, job id)`` of each pool's index rows; a member that is not a job's ULID (not
    written by balloons) is left out."""
    for p, found in zip(pools, rows, strict=True):
        for member, score in found:
            ulid = member.decode("utf-8", "replace")
            if ULID_RE.match(ulid):
                yield score, f"{p}.{ulid}"


def index(
    namespace: str, pools: Sequence[str], limit: int, offset: int = 0
) -> Query[list[tuple[float, str]]]:
    """``(created, job id)`` of each pool's jobs from the ``offset``-th newest, ``limit`` of
    them per pool, newest first across pools."""
    rows = yield [
        call("zrevrange", PoolKeys(namespace, p).jobs, offset, offset + limit - 1, withscores=True)
        for p in pools
    ]
    return sorted(job_ids(pools, rows), reverse=True)


#: Records read per round trip by :func:`fields` and :func:`attempts_of`.
BATCH = 1000


#: The fields of a job's record that is no hash, as :func:`fields` reads them: an ``INVALID``
#: job, where it failed every job's read.
UNREADABLE: dict[str, bytes] = {"status": b"(not a hash)"}


def fields(
    namespace: str, job_ids_: Sequence[str], names: Sequence[str]
) -> Query[list[dict[str, bytes]]]:
    """The named fields of each job's record (``{}`` for a record that is gone)."""
    out: list[dict[str, bytes]] = []
    for i in range(0, len(job_ids_), BATCH):
        batch = job_ids_[i : i + BATCH]
        rows = yield Tolerant(call("hmget", JobKeys.of(namespace, j).job, names) for j in batch)
        out += [
            UNREADABLE
            if isinstance(row, Exception)  # no hash: read as a record with no valid status
            else {n: v for n, v in zip(names, row, strict=True) if v is not None}
            if row[0] is not None
            else {}
            for row in rows
        ]
    return out


def attempts_of(namespace: str, job_ids_: Sequence[str]) -> Query[list[dict[bytes, bytes]]]:
    """Each job's raw attempts hash (attempt number -> JSON)."""
    out: list[dict[bytes, bytes]] = []
    for i in range(0, len(job_ids_), BATCH):
        batch = job_ids_[i : i + BATCH]
        rows = yield Tolerant(call("hgetall", JobKeys.of(namespace, j).attempts) for j in batch)
        out += [{} if isinstance(row, Exception) else row for row in rows]  # no hash: none
    return out


#: Largest number of seconds a usage entry may hold (a century): beyond it, it was altered.
MAX_SECONDS = 100 * 365 * 24 * 3600.0


def usage(namespace: str, pools: Sequence[str]) -> Query[dict[str, dict[str, float | None]]]:
    """Each pool's ``usage`` hash (``idle:CPUS:MB`` -> seconds); None for seconds that are
    not a number of seconds (altered in Redis)."""
    rows = yield [call("hgetall", PoolKeys(namespace, p).usage) for p in pools]
    return {
        p: {k.decode("utf-8", "replace"): number(v, 0, MAX_SECONDS) for k, v in row.items()}
        for p, row in zip(pools, rows, strict=True)
    }
