"""Read-side queries over the job index: filtered job listings and per-pool summaries.

Used by ``balloons jobs``, ``balloons pools``, the dashboard and its ``/metrics``. Everything
here is plain reads (``ZREVRANGE`` of each pool's index, then pipelined ``HMGET`` of a few
fields), never the arguments or results, so a listing stays cheap however large jobs are.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigError
from .info import JobInfo, JobStatus
from .store.keys import POOL_RE, JobKeys
from .store.writes import Store, job_info
from .untrusted import json_object

if TYPE_CHECKING:
    from .store.queries import Query

#: How many of the newest jobs of each pool a listing looks through.
SCAN_LIMIT = 5000
#: Records read per pipelined round trip, at most, and in the first one.
CHUNK = 1000
FIRST_CHUNK = 64
#: Largest page number and page size of a listing.
MAX_PAGE = 1_000_000
MAX_PER_PAGE = 10_000
#: The fields a listing reads of each record (``status`` first: a gone record has none).
ROW_FIELDS = ("status", "payload", "attempt", "machine", "created", "started", "finished", "reason")


#: The most characters and terms of a search.
MAX_QUERY = 200
MAX_TERMS = 8
#: What a search term may name: ``KEY:VALUE``.
SEARCH_KEYS = ("id", "task", "status", "pool", "reason", "error", "label")
#: Labels of a job a search reads (its service record's first ones), and their sizes.
MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 32, 63, 256


@dataclass(frozen=True)
class Term:
    """One term of a search: ``key`` one of :data:`SEARCH_KEYS`, or ``""`` for a bare word,
    which matches an id prefix, a task, a reason or the error's text."""

    key: str
    value: str

    def matches(self, info: JobInfo, labels: Mapping[str, str] | None = None) -> bool:
        """Whether job ``info`` (with ``labels``, its labels) matches the term: its key's field
        (``id`` a prefix, ``task`` and ``error`` a part, ``status``, ``pool`` and ``reason`` the
        whole, case aside; ``label`` ``NAME`` a label the job has, ``NAME=VALUE`` one with that
        value, exactly), or any of the first five for a bare word."""
        if self.key == "label":
            name, eq, value = self.value.partition("=")
            return name in (labels or {}) and (not eq or (labels or {})[name] == value)
        v = self.value.lower()
        ulid = info.id.rpartition(".")[2]
        if self.key == "id":
            return info.id.startswith(self.value) or ulid.startswith(v)
        if self.key == "task":
            return v in info.task.lower()
        if self.key == "status":
            return info.status.value.lower() == v
        if self.key == "pool":
            return info.pool == v
        if self.key == "reason":
            return (info.reason or "").lower() == v
        error = f"{info.error_type or ''}: {info.error_message or ''}".lower()
        if self.key == "error":
            return v in error
        return (
            info.id.startswith(self.value)
            or ulid.startswith(v)
            or v in info.task.lower()
            or v == (info.reason or "").lower()
            or v in error
        )


def parse_query(raw: str) -> tuple[Term, ...]:
    """A search box's text: words, each ``KEY:VALUE`` (``id``, ``task``, ``status``, ``pool``,
    ``reason``, ``error``, ``label``: ``label:NAME`` or ``label:NAME=VALUE``) or bare; every
    one must match. ``ValueError`` naming what is wrong."""
    if len(raw) > MAX_QUERY:
        raise ValueError(f"a search has at most {MAX_QUERY} characters, got {len(raw)}")
    words = raw.split()
    if len(words) > MAX_TERMS:
        raise ValueError(f"a search has at most {MAX_TERMS} words, got {len(words)}")
    terms = []
    for word in words:
        key, sep, value = word.partition(":")
        if sep and key.lower() in SEARCH_KEYS:
            if not value:
                raise ValueError(f"search term {word!r} names nothing after {key}:")
            if key.lower() == "pool" and not POOL_RE.match(value):
                raise ValueError(
                    f"{value!r} is not a pool name: expected lowercase letters, digits, '-' or '_'"
                )
            if key.lower() == "label" and not value.partition("=")[0]:
                raise ValueError(f"search term {word!r} names no label: expected label:NAME=VALUE")
            terms.append(Term(key.lower(), value))
        else:
            terms.append(Term("", word))  # a task name holds ':' too
    return tuple(terms)


@dataclass(frozen=True)
class Filters:
    """What a listing keeps. ``None`` keeps everything; ``task`` matches a full task name
    (``module:function``) or its function part; ``search``: terms that must all match
    (:func:`parse_query`)."""

    status: JobStatus | None = None
    task: str | None = None
    pool: str | None = None
    search: tuple[Term, ...] = ()

    @classmethod
    def parse(
        cls, status: str | None, task: str | None, pool: str | None, q: str | None = None
    ) -> Filters:
        """Filters from user input; ``ValueError`` naming the bad value and what was expected."""
        st = None
        if status:
            try:
                st = JobStatus(status.upper())
            except ValueError:
                raise ValueError(
                    f"unknown status {status!r}: expected one of "
                    f"{', '.join(s.value for s in JobStatus)}"
                ) from None
        if pool and not POOL_RE.match(pool):
            raise ValueError(
                f"{pool!r} is not a pool name: expected lowercase letters, digits, '-' or '_'"
            )
        return cls(st, task or None, pool or None, parse_query(q or ""))

    @property
    def query(self) -> str:
        """The search as typed back (terms joined by spaces)."""
        return " ".join(f"{t.key}:{t.value}" if t.key else t.value for t in self.search)

    @property
    def reads_errors(self) -> bool:
        """Whether the search looks at the error's text (a listing then reads the error)."""
        return any(t.key in ("", "error") for t in self.search)

    @property
    def reads_labels(self) -> bool:
        """Whether the search looks at labels (a listing then reads the jobs' service
        records)."""
        return any(t.key == "label" for t in self.search)

    def pools_of(self, store: Store) -> list[str]:
        """The pools a listing reads: the one named (by the filter or a ``pool:`` term), else
        every pool."""
        named = {t.value for t in self.search if t.key == "pool"}
        if self.pool:
            named.add(self.pool)
        if len(named) > 1:
            return []  # two pools named: no job is in both
        return list(named) if named else store.pools()

    def keeps(self, info: JobInfo, labels: Mapping[str, str] | None = None) -> bool:
        """Whether job ``info`` (with ``labels``, its labels) passes the filter (status, and
        task as ``module:function`` or just ``function``, and the search)."""
        if self.status is not None and info.status is not self.status:
            return False
        if self.task is not None and self.task not in (info.task, info.task.rpartition(":")[2]):
            return False
        return all(t.matches(info, labels) for t in self.search)


@dataclass(frozen=True)
class JobPage:
    """One page of a filtered listing, newest first."""

    rows: list[JobInfo]
    page: int
    per_page: int
    has_next: bool
    scanned: int  # records looked through
    truncated: bool  # the scan stopped at SCAN_LIMIT jobs of some pool
    tasks: list[str] = field(default_factory=list)  # task names seen while scanning


def scan(
    store: Store,
    pools: Sequence[str],
    limit: int = SCAN_LIMIT,
    first: int = FIRST_CHUNK,
    fields: Sequence[str] = ROW_FIELDS,
    secret: bytes | None = None,
    labels: dict[str, dict[str, str]] | None = None,
) -> Iterator[JobInfo]:
    """Job summaries (no attempts, arguments or results), newest first across ``pools``,
    from the newest ``limit`` jobs of each, built from ``fields`` (``status`` first).

    The index and the records are read in windows that start at ``first`` and double up to
    :data:`CHUNK`, so a caller that stops early (a first page) reads little more than it
    shows. ``secret`` verifies the errors when ``fields`` read them. Given ``labels``, each
    window's labels are read too (:func:`read_labels`) and put there by job id before its
    jobs are yielded."""
    ranked = heapq.merge(
        *(_pool_index(store, p, limit, first) for p in pools), key=lambda row: row[0], reverse=True
    )
    size = max(1, first)
    while ids := [jid for _, jid in itertools.islice(ranked, size)]:
        size = min(size * 2, CHUNK)
        if labels is not None:
            labels.clear()
            labels.update(zip(ids, read_labels(store, ids), strict=True))
        for jid, rec in zip(ids, store.fields(ids, fields), strict=True):
            if rec:
                yield job_info(jid, rec, {}, secret)


def read_labels(store: Store, job_ids: Sequence[str]) -> list[dict[str, str]]:
    """Each job's labels, from its service record (``NS:{POOL}:meta:ULID``, JSON with a
    ``labels`` object), as read (hostile): the first :data:`MAX_LABELS` string entries of
    bounded size; none for a job the library submitted (it has no such record) or a record
    that cannot be read."""
    with store.errors():
        pipe = store.redis.pipeline(transaction=False)
        for jid in job_ids:
            pipe.get(JobKeys.of(store.namespace, jid).meta)
        raws = pipe.execute(raise_on_error=False)
    return [_labels_of(raw) for raw in raws]


def _labels_of(raw: object) -> dict[str, str]:
    record = json_object(raw) if isinstance(raw, bytes) else None
    found = record.get("labels") if record is not None else None
    if not isinstance(found, dict):
        return {}
    return {
        k: v
        for k, v in list(found.items())[:MAX_LABELS]
        if isinstance(v, str) and 0 < len(k) <= MAX_LABEL_KEY and len(v) <= MAX_LABEL_VALUE
    }


def _pool_index(store: Store, pool: str, limit: int, first: int) -> Iterator[tuple[float, str]]:
    offset, size = 0, max(1, first)
    while offset < limit:
        rows = store.index([pool], min(size, limit - offset), offset)
        yield from rows
        if len(rows) < size:
            return
        offset, size = offset + len(rows), min(size * 2, CHUNK)


def find_jobs(store: Store, filters: Filters, page: int = 1, per_page: int = 50) -> JobPage:
    """Page ``page`` (from 1) of the jobs that pass ``filters``, newest first."""
    if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(
            f"page must be from 1 to {MAX_PAGE} and per_page from 1 to {MAX_PER_PAGE}, "
            f"got {page} and {per_page}"
        )
    pools = filters.pools_of(store)
    skip, scanned, more = (page - 1) * per_page, 0, False
    rows: list[JobInfo] = []
    tasks: set[str] = set()
    counts = store.index_sizes(pools)
    labels: dict[str, dict[str, str]] = {}
    for info in _scan_for(store, filters, pools, page * per_page + 1, labels):
        scanned += 1
        tasks.add(info.task)
        if not filters.keeps(info, labels.get(info.id)):
            continue
        if skip:
            skip -= 1
        elif len(rows) < per_page:
            rows.append(info)
        else:
            more = True
            break
    return JobPage(
        rows=rows,
        page=page,
        per_page=per_page,
        has_next=more,
        scanned=scanned,
        truncated=any(n > SCAN_LIMIT for n in counts),
        tasks=sorted(tasks),
    )


def _scan_for(
    store: Store,
    filters: Filters,
    pools: Sequence[str],
    first: int,
    labels: dict[str, dict[str, str]],
) -> Iterator[JobInfo]:
    """:func:`scan` reading what ``filters`` look at (the error too, verified, for a search
    of its text; the labels into ``labels`` for a search by label)."""
    wanted = labels if filters.reads_labels else None
    if filters.reads_errors:
        fields, secret = (*ROW_FIELDS, "error", "esig"), store.signing_key()
        return scan(store, pools, first=first, fields=fields, secret=secret, labels=wanted)
    return scan(store, pools, first=first, labels=wanted)


#: The most jobs one bulk action changes.
BULK_LIMIT = 500


def select_jobs(
    store: Store, filters: Filters, eligible: Callable[[JobInfo], bool], limit: int = BULK_LIMIT
) -> list[JobInfo]:
    """The newest jobs (up to ``limit``) that pass ``filters`` and ``eligible``, from the same
    bounded scan as a listing: what a bulk action acts on."""
    pools = filters.pools_of(store)
    out: list[JobInfo] = []
    labels: dict[str, dict[str, str]] = {}
    for info in _scan_for(store, filters, pools, FIRST_CHUNK, labels):
        if filters.keeps(info, labels.get(info.id)) and eligible(info):
            out.append(info)
            if len(out) >= limit:
                break
    return out


@dataclass(frozen=True)
class PoolSummary:
    """What is known of one pool now: its jobs by status and its machines by state."""

    name: str
    jobs: dict[JobStatus, int]
    machines: dict[str, int]

    @property
    def by_status(self) -> list[tuple[str, int]]:
        """Jobs per status, in the statuses' order, with zeros."""
        return [(s.value, self.jobs.get(s, 0)) for s in JobStatus]

    @property
    def queued(self) -> int:
        """Jobs waiting for a machine."""
        return self.jobs.get(JobStatus.QUEUED, 0)

    @property
    def total(self) -> int:
        """Jobs of the pool, of every status."""
        return sum(self.jobs.values())

    @property
    def machines_running(self) -> int:
        """Machines of the pool that still run (created, starting or started)."""
        return sum(n for state, n in self.machines.items() if state in RUNNING_MACHINE_STATES)


#: Machine states (Fly's vocabulary) of a machine that still runs.
RUNNING_MACHINE_STATES = frozenset({"created", "starting", "started"})


def pool_summaries(store: Store, limit: int = SCAN_LIMIT) -> list[PoolSummary]:
    """Every pool the app has submitted to, with job counts by status and machine counts."""
    pools = store.pools()
    jobs: dict[str, Counter[JobStatus]] = {p: Counter() for p in pools}
    for info in scan(store, pools, limit):
        jobs[info.pool][info.status] += 1
    machines: dict[str, Counter[str]] = {p: Counter() for p in pools}
    for m in store.machine_records():
        pool = m.get("pool", "")
        if pool and not POOL_RE.match(pool):
            continue  # not a record balloons wrote: no pool to show it under
        machines.setdefault(pool, Counter())[m.get("state") or "unknown"] += 1
    return [
        PoolSummary(p, dict(jobs.get(p, {})), dict(machines.get(p, {})))
        for p in sorted(set(pools) | {p for p in machines if p})
    ]


def newest(ns: str, limit: int, pool: str | None, key: bytes | None) -> Query[list[JobInfo]]:
    """The newest ``limit`` jobs (1 to :data:`MAX_PER_PAGE`), of every pool or of ``pool``,
    newest first (``App.jobs``), as a query for the sync or the asyncio client; ``key``: the
    signing key their outcomes are checked with."""
    from .store import queries

    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PER_PAGE:
        raise ConfigError(f"limit must be an integer from 1 to {MAX_PER_PAGE}, got {limit!r}")
    if pool is not None and (not isinstance(pool, str) or not POOL_RE.match(pool)):
        raise ConfigError(f"{pool!r} is not a pool name")
    return (yield from queries.recent(ns, limit, pool, key))
