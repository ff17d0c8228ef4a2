"""The charts page: throughput, queue wait, run time, failure rate and cost per pool, drawn on
the server as inline SVG (nothing is loaded from elsewhere).

Fed by reads whose cost does not grow with the number of jobs: the pools' running aggregates
(:mod:`.aggregates`: the histograms, the jobs ended by status, the billed machine-seconds) and,
for throughput over time, a count of each pool's job index per hour (``ZCOUNT``, a logarithmic
read), and for cost over time, the pools' billed machine-seconds by hour (their ``spend``
hashes). Every label is escaped; every figure was read as hostile (:mod:`.aggregates`).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

from ..store.keys import STAT_BUCKETS, PoolKeys
from .aggregates import Histogram, PoolStats, read_spend

if TYPE_CHECKING:
    from ..cost import PriceTable
    from ..store.writes import Store

#: Hours the throughput chart covers, up to now.
HOURS = 48
#: The chart's drawing box (SVG user units).
WIDTH, HEIGHT = 1200, 180


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its label, value, and the text of its tooltip."""

    label: str
    value: float
    text: str  # the value as shown in the bar's tooltip


def bars(
    title: str, items: Sequence[Bar], *, axis: tuple[str, str] = ("", ""), top: float = 0.0
) -> Markup:
    """A bar chart: one bar per item, scaled to ``top`` (else the largest), each with a
    tooltip."""
    top = top or max((b.value for b in items), default=0.0) or 1.0
    n = max(1, len(items))
    step = WIDTH / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 20}" role="img" '
        f'aria-label="{escape(title)}" data-chart="{escape(title)}">',
        f'<rect class="track-bg" x="0" y="0" width="{WIDTH}" height="{HEIGHT}"></rect>',
    ]
    for i, b in enumerate(items):
        h = (b.value / top) * (HEIGHT - 4) if b.value > 0 else 0.0
        x = i * step + step * 0.1
        parts.append(
            f'<rect class="chart-bar" x="{x:.2f}" y="{HEIGHT - h:.2f}" width="{step * 0.8:.2f}" '
            f'height="{h:.2f}"><title>{escape(b.label)}: {escape(b.text)}</title></rect>'
        )
        if n <= 24:  # room for a label under each bar
            parts.append(
                f'<text class="chart-label" x="{x + step * 0.4:.2f}" y="{HEIGHT + 14}" '
                f'text-anchor="middle">{escape(_short(b.label))}</text>'
            )
    parts.append("</svg>")
    left, right = axis
    if left or right:
        parts.append(
            f'<p class="note chart-axis"><span>{escape(left)}</span>'
            f"<span>{escape(right)}</span></p>"
        )
    return Markup("".join(parts))  # noqa: S704 (every label and figure above is escaped)


def _short(label: str) -> str:
    return label if len(label) <= 12 else label[:11] + "…"


def throughput(store: Store, pools: Sequence[str], now: float | None = None) -> list[Bar]:
    """Jobs submitted per hour over the last :data:`HOURS` hours, across ``pools``: a
    ``ZCOUNT`` of each pool's job index per hour."""
    now = time.time() if now is None else now
    last = (now // 3600) * 3600
    starts = [last - 3600 * i for i in range(HOURS - 1, -1, -1)]
    with store.errors():
        pipe = store.redis.pipeline(transaction=False)
        for p in pools:
            jobs = PoolKeys(store.namespace, p).jobs
            for h in starts:
                pipe.zcount(jobs, h, f"({h + 3600}")
        counts = pipe.execute()
    totals = [0] * len(starts)
    for i, n in enumerate(counts):
        totals[i % len(starts)] += int(n)
    return [
        Bar(datetime.fromtimestamp(h, UTC).strftime("%m-%d %H:00"), n, f"{n} jobs")
        for h, n in zip(starts, totals, strict=True)
    ]


def cost_over_time(
    store: Store, pools: Sequence[str], prices: PriceTable, now: float | None = None
) -> list[Bar]:
    """Estimated USD per hour over the last :data:`HOURS` hours, across ``pools``: the billed
    machine-seconds of the attempts that ended in each hour (the pools' ``spend`` hashes,
    :func:`.aggregates.read_spend`) at ``prices``."""
    now = time.time() if now is None else now
    last = int(now // 3600)
    spend = read_spend(store, pools, last - HOURS + 1, last)
    usd: dict[int, float] = defaultdict(float)
    seconds: dict[int, float] = defaultdict(float)
    for (start, cpus, mem), s in spend.seconds.items():
        usd[start] += s * prices.per_second(cpus, mem)
        seconds[start] += s
    starts = [3600 * (last - i) for i in range(HOURS - 1, -1, -1)]
    return [
        Bar(
            datetime.fromtimestamp(h, UTC).strftime("%m-%d %H:00"),
            usd[h],
            f"${usd[h]:.6f} ({seconds[h]:.1f} machine-s)",
        )
        for h in starts
    ]


def merged(stats: dict[str, PoolStats], kind: str) -> Histogram:
    """One histogram of ``kind`` over every pool and task."""
    out = Histogram()
    for st in stats.values():
        for (k, _), h in st.histograms.items():
            if k == kind:
                out.add(h)
    return out


def distribution(h: Histogram) -> list[Bar]:
    """A histogram's buckets as bars (observations per bucket, not cumulative)."""
    bounds = [*(_seconds(b) for b in STAT_BUCKETS), "more"]
    lows = ["0", *bounds[:-1]]
    return [
        Bar(f"≤ {hi}" if hi != "more" else f"> {lo}", n, f"{n} ({lo} to {hi})")
        for lo, hi, n in zip(lows, bounds, h.counts, strict=True)
    ]


def summary(h: Histogram) -> str:
    """``n, median ≤ x, p95 ≤ y, mean z`` of a histogram (bucket bounds: upper estimates)."""
    if h.count == 0:
        return "no observations yet"
    p50, p95 = h.quantile(0.5), h.quantile(0.95)
    return (
        f"{h.count} observed; median ≤ {_seconds(p50)}, p95 ≤ {_seconds(p95)}, "
        f"mean {_seconds(h.total / h.count)}"
    )


def failure_rates(stats: dict[str, PoolStats]) -> list[Bar]:
    """Per pool: the share of its ended jobs that failed."""
    out = []
    for pool, st in sorted(stats.items()):
        ended = sum(n for (s, _, _), n in st.ended.items() if s != "CANCELLED")
        failed = sum(n for (s, _, _), n in st.ended.items() if s == "FAILED")
        rate = failed / ended if ended else 0.0
        out.append(Bar(pool, rate * 100, f"{rate:.1%} of {ended} ({failed} failed)"))
    return out


def costs(stats: dict[str, PoolStats], prices: PriceTable) -> list[Bar]:
    """Per pool: the estimated USD of its jobs' billed machine-seconds."""
    out = []
    for pool, st in sorted(stats.items()):
        usd = sum(s * prices.per_second(c, m) for (c, m, _), s in st.machine_seconds.items())
        seconds = sum(st.machine_seconds.values())
        out.append(Bar(pool, usd, f"${usd:.6f} ({seconds:.1f} machine-s)"))
    return out


def _seconds(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return f"> {_seconds(STAT_BUCKETS[-1])}"
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 120:
        return f"{v:g} s"
    return f"{v / 60:g} min"
