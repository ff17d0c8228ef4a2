"""``GET /v1/jobs``: jobs newest first across pools, filtered, in pages joined by a cursor.

The cursor is the position of the last job a page looked at (its creation time and id), so a
page reads on from there whatever was submitted since. A page looks at no more than
:data:`SCAN_MAX` jobs: with a filter that keeps few, it may hold fewer than ``limit`` jobs (or
none) and still have a ``next`` cursor. The listing ends when ``next`` is null.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..store.keys import POOL_RE, ULID_RE, JobKeys, PoolKeys
from ..store.queries import Query, call, pools
from ..store.records import decode_hash
from . import resources
from .problems import Problem
from .submission import LABEL_KEY_RE

#: Most jobs one page looks at.
SCAN_MAX = 2000
MAX_LIMIT = 200
FIELDS = (
    "status", "payload", "attempt", "machine", "created", "started", "finished", "reason", "due",
)  # fmt: skip


@dataclass(frozen=True)
class Filters:
    """What a listing keeps: a state, a pool, labels (``NAME`` or ``NAME=VALUE``)."""

    state: str | None = None
    pool: str | None = None
    labels: tuple[tuple[str, str | None], ...] = ()

    def keeps(self, row: Mapping[str, Any]) -> bool:
        """Whether a listing row passes the filters."""
        if self.state is not None and row["state"] != self.state:
            return False
        have = row["labels"]
        return all(k in have and (v is None or have[k] == v) for k, v in self.labels)


def parse_filters(state: str | None, pool: str | None, labels: Sequence[str]) -> Filters:
    """The filters of a query; a 400 problem naming a bad one."""
    if state is not None and state not in resources.STATES:
        raise Problem(
            400, "invalid-request", f"state {state[:40]!r} is not one of {list(resources.STATES)}"
        )
    if pool is not None and not POOL_RE.match(pool):
        raise Problem(400, "invalid-request", f"pool {pool[:60]!r} is not a pool name")
    got: list[tuple[str, str | None]] = []
    for item in labels:
        k, sep, v = item.partition("=")
        if not LABEL_KEY_RE.match(k):
            raise Problem(
                400,
                "invalid-request",
                f"label filter {item[:80]!r} is not NAME or NAME=VALUE with a label name",
            )
        got.append((k, v if sep else None))
    return Filters(state, pool, tuple(got))


def encode_cursor(score: float, job_id: str) -> str:
    """The opaque cursor of a position (creation time, job id)."""
    return base64.urlsafe_b64encode(f"{score!r}|{job_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[float, str]:
    """The position of a cursor; a 400 problem for one this service did not give."""
    bad = Problem(400, "invalid-cursor", "cursor is not one this service gave: start over")
    if len(raw) > 200:
        raise bad
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    score_s, _, job_id = text.partition("|")
    try:
        score = float(score_s)
        JobKeys.of("x", job_id)
    except ValueError:
        raise bad from None
    if not math.isfinite(score):
        raise bad
    return score, job_id


def page(
    namespace: str, filters: Filters, cursor: tuple[float, str] | None, limit: int
) -> Query[tuple[list[dict[str, Any]], str | None]]:
    """Up to ``limit`` rows after ``cursor``, and the cursor of the next page (None: no more)."""
    names = [filters.pool] if filters.pool else (yield from pools(namespace))
    rows: list[dict[str, Any]] = []
    scanned = 0
    at = cursor
    while scanned < SCAN_MAX:
        batch = max(limit * 2, 50)
        top = "+inf" if at is None else repr(at[0])
        found = yield [
            call("zrevrangebyscore", PoolKeys(namespace, p).jobs, top, "-inf", 0, batch, True)
            for p in names
        ]
        merged = [
            r
            for r in heapq.merge(
                *(_rows(p, f) for p, f in zip(names, found, strict=True)), reverse=True
            )
            if at is None or r < at
        ]
        ranked = merged[:batch]
        last_batch = len(merged) <= batch and all(
            not isinstance(f, list) or len(f) < batch for f in found
        )
        if not ranked:
            return rows, None
        keys = [JobKeys.of(namespace, jid) for _, jid in ranked]
        replies = yield [
            c for jk in keys for c in (call("hmget", jk.job, list(FIELDS)), call("get", jk.meta))
        ]
        for (score, jid), values, meta in zip(ranked, replies[::2], replies[1::2], strict=True):
            at = (score, jid)
            scanned += 1
            if not isinstance(values, list) or values[0] is None:
                continue  # expired or forgotten since the index was read
            fields = {k.encode(): v for k, v in zip(FIELDS, values, strict=False) if v is not None}
            row = resources.summary(jid, decode_hash(fields), meta)
            if filters.keeps(row):
                rows.append(row)
                if len(rows) >= limit:
                    return rows, encode_cursor(*at)
        if last_batch:
            return rows, None
    return rows, (encode_cursor(*at) if at is not None else None)


def _rows(pool: str, found: Any) -> list[tuple[float, str]]:
    """``(created, job id)`` of index rows, newest first; members that are no ULID dropped,
    scores that are no time dropped."""
    out = []
    for member, score in found if isinstance(found, list) else ():
        u = member.decode("utf-8", "replace") if isinstance(member, bytes) else ""
        if ULID_RE.match(u) and isinstance(score, float) and math.isfinite(score):
            out.append((score, f"{pool}.{u}"))
    out.sort(reverse=True)
    return out
