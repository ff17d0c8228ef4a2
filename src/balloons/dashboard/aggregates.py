"""The running aggregates the scripts keep in each pool's ``stats`` hash, read for ``/metrics``
and the charts.

Every change that ends an attempt or a job adds to them in the same script (fields in
:mod:`balloons.store.keys`), so a reader reads one hash per pool, whatever the number of jobs.
What it reads is hostile: a field it does not understand is counted as invalid and skipped, a
count is a whole number in range, and the labels are bounded: a pool's name as balloons names
pools (at most :data:`MAX_POOLS`), at most :data:`MAX_TASKS` tasks per pool (the registered
tasks first, then the busiest; the rest are summed as :data:`OTHER`), statuses and failure
reasons only those balloons defines. A hash larger than :data:`MAX_FIELDS` is not read at all.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import registry
from ..states import Reason
from ..store import lua
from ..store.keys import POOL_RE, SPEND_HOURS, STAT_BUCKETS, PoolKeys
from ..untrusted import MAX_CPUS, MAX_MEMORY_MB, integer

if TYPE_CHECKING:
    from ..store.writes import Store

#: Pools a read covers (the first, by name).
MAX_POOLS = 100
#: Task labels per pool; the others are summed under :data:`OTHER`.
MAX_TASKS = 50
#: Fields of one pool's stats hash a reader accepts; a larger hash was not written by balloons
#: (each task adds at most about 80) and is skipped as invalid.
MAX_FIELDS = 20_000
#: The label of tasks beyond the cap, and of names no task can have.
OTHER = "(other)"
#: The histograms: field prefix -> what it measures.
KINDS = {
    "queue": "queue wait (submit to first start)",
    "boot": "machine boot (launch to claim)",
    "run": "run time of an attempt (start to end)",
    "e2e": "end to end (submit to the job's end)",
}
_TASK_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_REASONS = frozenset(r.value for r in Reason)
_LARGEST = 1e15  # any count or sum (ms) beyond this was not added up by the scripts


@dataclass
class Histogram:
    """Counts per bucket (:data:`STAT_BUCKETS`, then +Inf; not cumulative) and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(STAT_BUCKETS) + 1))
    total: float = 0.0

    @property
    def count(self) -> int:
        """Observations in every bucket."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound, observations at or below it)."""
        out, running = [], 0
        for le, n in zip((*map(str, STAT_BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((le, float(running)))
        return out

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (None without observations;
        ``inf`` past the last bound)."""
        n = self.count
        if n == 0:
            return None
        rank, running = q * n, 0
        for i, c in enumerate(self.counts):
            running += c
            if running >= rank and c:
                return STAT_BUCKETS[i] if i < len(STAT_BUCKETS) else math.inf
        return math.inf

    def add(self, other: Histogram) -> None:
        """Add ``other``'s counts and sum to these."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total


@dataclass
class PoolStats:
    """One pool's aggregates, labels bounded."""

    #: (kind, task) -> histogram
    histograms: dict[tuple[str, str], Histogram] = field(
        default_factory=lambda: defaultdict(Histogram)
    )
    #: (status, reason, task) -> jobs ended
    ended: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: (reason, task) -> attempts failed with a retry scheduled
    retried: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: (cpus, memory_mb, task) -> billed machine-seconds
    machine_seconds: dict[tuple[int, int, str], float] = field(
        default_factory=lambda: defaultdict(float)
    )

    @property
    def task_seconds(self) -> dict[str, float]:
        """task -> seconds its attempts ran (the run histogram's sum)."""
        return {t: h.total for (k, t), h in self.histograms.items() if k == "run"}

    #: fields that could not be read (or the whole hash, counted once, when too large)
    invalid: int = 0


def read(store: Store, pools: Sequence[str]) -> dict[str, PoolStats]:
    """The aggregates of ``pools`` (names as balloons names pools; at most :data:`MAX_POOLS`):
    one script per pool (``READ_STATS``: the hash as one JSON text)."""
    out = {}
    for p in [p for p in pools if POOL_RE.match(p)][:MAX_POOLS]:
        raw = store.eval(lua.READ_STATS, PoolKeys(store.namespace, p), MAX_FIELDS)
        out[p] = parse(_pairs(raw))
    return out


def _pairs(raw: object) -> dict[str, str] | None:
    """The hash from ``READ_STATS``' reply; None when it was not read (too large, not a hash)
    or the reply is not a JSON array of strings."""
    if not isinstance(raw, bytes | str) or not raw:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        flat = json.loads(text)
    except ValueError:
        return None
    if not isinstance(flat, list) or len(flat) % 2 or not all(isinstance(x, str) for x in flat):
        return None
    return dict(zip(flat[::2], flat[1::2], strict=True))


def parse(raw: Mapping[str, str] | Mapping[bytes, bytes] | None) -> PoolStats:
    """One pool's stats hash, as read (hostile), into bounded records; None: a hash that
    could not be read, counted once as invalid."""
    if raw is None:
        return PoolStats(invalid=1)
    fields: list[tuple[tuple[str, ...], str, float]] = []  # (parts before the task, task, value)
    busy: dict[str, float] = defaultdict(float)
    bad = 0
    for k, v in raw.items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
        value = _number(v)
        head, task = _split(key)
        if value is None or head is None:
            bad += 1
            continue
        fields.append((head, task, value))
        busy[task] += value if head[0] == "n" else 0.0  # the busiest: most jobs ended
    keep = _labels(busy)
    out = PoolStats(invalid=bad)
    for head, task, value in fields:
        label = task if task in keep else OTHER
        if not _add(out, head, label, value):
            out.invalid += 1
    return out


def _labels(busy: dict[str, float]) -> set[str]:
    """The task names kept as labels: names a task can have, registered ones first, then the
    busiest, at most :data:`MAX_TASKS`."""
    known = registry.TASKS
    ranked = sorted(
        (t for t in busy if _TASK_RE.match(t)), key=lambda t: (t not in known, -busy[t], t)
    )
    return set(ranked[:MAX_TASKS])


#: How many parts come before the task in a field of each kind.
_ARITY = {"n": 3, "retry": 2, "ms": 3, **dict.fromkeys(KINDS, 2)}
#: Bucket numbers as the scripts write them.
_BUCKET = {str(i): i for i in range(1, len(STAT_BUCKETS) + 2)}


#: Fields already split (the same few thousand names at every scrape), up to MAX_FIELDS.
_SPLIT: dict[str, tuple[tuple[str, ...] | None, str]] = {}


def _split(key: str) -> tuple[tuple[str, ...] | None, str]:
    """A field's parts before the task (by its kind's arity) and the task's name (which may
    hold ``:``)."""
    found = _SPLIT.get(key)
    if found is not None:
        return found
    arity = _ARITY.get(key.partition(":")[0], 0)
    parts = key.split(":", arity)
    found = (
        (None, "")
        if arity == 0 or len(parts) != arity + 1
        else (tuple(parts[:arity]), parts[arity])
    )
    if len(_SPLIT) >= MAX_FIELDS:
        _SPLIT.clear()  # names no scripts write (an altered hash): start again
    _SPLIT[key] = found
    return found


def _add(out: PoolStats, head: tuple[str, ...], task: str, value: float) -> bool:
    """Adds one field's value; False when the field is not one the scripts write."""
    kind = head[0]
    if kind in KINDS:
        h = out.histograms[(kind, task)]
        if head[1] == "s":
            h.total += value / 1000  # whole milliseconds
            return True
        i = _BUCKET.get(head[1])
        if i is None or not value.is_integer():
            return False
        h.counts[i - 1] += int(value)
        return True
    if kind == "n":
        status, reason = head[1], head[2]
        if status not in _STATUSES or (reason and reason not in _REASONS):
            return False
        out.ended[(status, reason, task)] += int(value)
        return True
    if kind == "retry":
        if head[1] not in _REASONS:
            return False
        out.retried[(head[1], task)] += int(value)
        return True
    cpus, mem = integer(head[1], 1, MAX_CPUS), integer(head[2], 1, MAX_MEMORY_MB)  # "ms"
    if cpus is None or mem is None:
        return False
    out.machine_seconds[(cpus, mem, task)] += value / 1000  # whole milliseconds
    return True


def _number(v: str | bytes) -> float | None:
    """A count or a sum of seconds as the scripts write them, else None."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and 0 <= x <= _LARGEST else None


#: Fields of a pool's ``spend`` hash a reader accepts: two per size and hour (a larger hash was
#: not written by balloons and is skipped as invalid).
MAX_SPEND_FIELDS = 20_000


@dataclass
class Spend:
    """Billed machine-seconds by hour and size, over the pools read."""

    #: (hour's start, as a Unix time; cpus; memory_mb) -> machine-seconds
    seconds: dict[tuple[int, int, int], float] = field(default_factory=lambda: defaultdict(float))
    #: fields that could not be read (or a whole hash, counted once, when too large)
    invalid: int = 0


def read_spend(store: Store, pools: Sequence[str], first: int, last: int) -> Spend:
    """The billed machine-seconds of the attempts of ``pools`` that ended in the hours from
    ``first`` to ``last`` (hour numbers: ``floor(time / 3600)``), from each pool's ``spend``
    hash: its length, then the hash when it is one balloons could have written."""
    pools = [p for p in pools if POOL_RE.match(p)][:MAX_POOLS]
    keys = [PoolKeys(store.namespace, p).spend for p in pools]
    out = Spend()
    with store.errors():
        pipe = store.redis.pipeline(transaction=False)
        for k in keys:
            pipe.hlen(k)
        sizes = pipe.execute(raise_on_error=False)
        pipe = store.redis.pipeline(transaction=False)
        read = [k for k, n in zip(keys, sizes, strict=True) if _fits(n) and n]
        for k in read:
            pipe.hgetall(k)
        hashes = pipe.execute(raise_on_error=False) if read else []
    out.invalid = sum(not _fits(n) for n in sizes)  # not a hash, or too large: not read
    for raw in hashes:
        if isinstance(raw, dict):
            parse_spend(raw, first, last, out)
        else:
            out.invalid += 1
    return out


def _fits(n: object) -> bool:
    """Whether ``HLEN``'s reply is the length of a hash balloons could have written."""
    return isinstance(n, int) and 0 <= n <= MAX_SPEND_FIELDS


def parse_spend(raw: Mapping[bytes, bytes], first: int, last: int, out: Spend) -> None:
    """Adds one pool's ``spend`` hash, as read (hostile), to ``out``: each place of the ring
    whose hour it names is from ``first`` to ``last``; a field no script writes is counted as
    invalid, a place holding an older hour is left out."""
    values: dict[tuple[int, int, int], float] = {}
    hours: dict[tuple[int, int, int], int] = {}
    for k, v in raw.items():
        parts = k.decode("utf-8", "replace").split(":")
        place = _place(parts[:3]) if len(parts) in (3, 4) else None
        if place is None or (len(parts) == 4 and parts[3] != "h"):
            out.invalid += 1
            continue
        if len(parts) == 4:
            hour = integer(v, 0, 10**8)
            if hour is None or hour % SPEND_HOURS != place[2]:
                out.invalid += 1
            else:
                hours[place] = hour
            continue
        ms = _number(v)
        if ms is None:
            out.invalid += 1
        else:
            values[place] = ms
    for place, ms in values.items():
        hour = hours.get(place)
        if hour is not None and first <= hour <= last:
            out.seconds[(hour * 3600, place[0], place[1])] += ms / 1000


def _place(parts: list[str]) -> tuple[int, int, int] | None:
    """``(cpus, memory_mb, place in the ring)`` from a field's first three parts, else None."""
    cpus, mem = integer(parts[0], 1, MAX_CPUS), integer(parts[1], 1, MAX_MEMORY_MB)
    i = integer(parts[2], 0, SPEND_HOURS - 1)
    return None if cpus is None or mem is None or i is None else (cpus, mem, i)
