"""What the dashboard's pages show, built from the store: plain data, no HTTP.

The job page is a list of :data:`SECTIONS`. Each section's ``build`` returns the data its
template needs, or ``None`` when the job has nothing to show there, so a section appears only
once its data exists. Live sections are re-rendered as the job changes; the others (the
arguments) are rendered once. A new kind of per-job data (logs, progress, cost) is one more
section: a ``build`` function and a template.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import logs as job_logs
from ..cost import CostReport, PriceTable, job_cost
from ..info import AttemptInfo, JobInfo
from ..listing import ROW_FIELDS
from ..signing import result_serializer
from ..store.keys import JobKeys
from ..store.writes import Store
from ..untrusted import (
    MAX_CPUS,
    MAX_MEMORY_MB,
    integer,
    json_object,
    json_value,
    number,
)

#: Characters of one argument or result shown before it is cut.
PREVIEW_CHARS = 2000
#: Fields the live part of a job page reads (never the arguments or the result).
LIVE_FIELDS = (*ROW_FIELDS, "error", "esig", "slot", "need")


def fmt_time(ts: float | None) -> str:
    """A timestamp as UTC date and time to the second; ``-`` for none."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_clock(ts: float) -> str:
    """A timestamp as a UTC time of day to the millisecond."""
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def fmt_duration(seconds: float | None) -> str:
    """A duration in ms, s or min, whichever reads best; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


@dataclass(frozen=True)
class Preview:
    """A value as text, cut to :data:`PREVIEW_CHARS`."""

    label: str
    text: str
    size: int  # characters of the whole text, or bytes when it could not be decoded
    truncated: bool

    @classmethod
    def of(cls, label: str, text: str) -> Preview:
        """The preview of ``text``, cut to :data:`PREVIEW_CHARS`."""
        cut = len(text) > PREVIEW_CHARS
        return cls(label, text[:PREVIEW_CHARS], len(text), cut)


def _json_text(value: Any) -> str | None:
    """``value`` as indented JSON; None when it nests too deep to be written back."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (ValueError, RecursionError):
        return None


def _raw(label: str, data: bytes) -> Preview:
    return Preview.of(label, data.decode("utf-8", "replace"))


def previews_of_call(data: bytes, ser: str) -> list[Preview]:
    """One preview per positional and keyword argument. Only JSON is decoded: the dashboard
    never unpickles anything. Arguments that do not decode (or nest too deep) are shown raw."""
    if ser != "json":
        return [Preview(f"({ser})", f"{len(data):,} bytes, not decoded here", len(data), False)]
    call = json_object(data) or {}
    args, kwargs = call.get("args"), call.get("kwargs")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return [_raw("(raw)", data)]
    out = [(f"[{i}]", _json_text(v)) for i, v in enumerate(args)]
    out += [(str(k), _json_text(v)) for k, v in kwargs.items()]
    if any(text is None for _, text in out):
        return [_raw("(raw)", data)]
    return [Preview.of(label, text or "") for label, text in out]


def preview_result(data: bytes, ser: str) -> Preview:
    """A stored result as text: JSON decoded and shown; another serializer's bytes only counted
    (never decoded here)."""
    if ser != "json":
        return Preview(f"({ser})", f"{len(data):,} bytes, not decoded here", len(data), False)
    value = json_value(data)  # None too for what is not JSON: then shown raw
    text = _json_text(value) if value is not None or data.strip() == b"null" else None
    return _raw("result", data) if text is None else Preview.of("result", text)


@dataclass(frozen=True)
class Bar:
    """One attempt on the timeline: offsets are percentages of the job's whole span."""

    attempt: AttemptInfo
    left: float
    width: float
    run_left: float  # where the task started running, inside the bar
    state: str  # outcome in lowercase, or "running"


def timeline(info: JobInfo, now: float | None = None) -> list[Bar]:
    """The job's attempts as bars of a timeline spanning its creation to its end (or ``now``)."""
    now = now if now is not None else time.time()
    start = info.created_at or now
    ends = [a.ended_at or now for a in info.attempts] or [now]
    span = max(max(ends) - start, 1e-3)

    def pct(t: float | None) -> float:
        return 0.0 if t is None else max(0.0, min(100.0, (t - start) / span * 100))

    bars = []
    for a in info.attempts:
        left = pct(a.launched_at or a.started_at or start)
        right = pct(a.ended_at or now)
        bars.append(
            Bar(
                a,
                left,
                max(right - left, 0.5),
                pct(a.started_at) if a.started_at else left,
                (a.outcome or "running").lower(),
            )
        )
    return bars


@dataclass
class JobContext:
    """What sections are built from: the store, the job's keys and a snapshot of it."""

    store: Store
    keys: JobKeys
    info: JobInfo
    payload: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)
    prices: PriceTable | None = None


@dataclass(frozen=True)
class Section:
    """One section of the job page: its name, title and template, ``build`` (its data, or
    ``None`` when the job has none yet) and whether it updates live."""

    name: str
    title: str
    template: str
    build: Callable[[JobContext], dict[str, Any] | None]
    live: bool = True


def _summary(ctx: JobContext) -> dict[str, Any]:
    payload = ctx.payload
    # What the payload says, when it says it in numbers (the record may have been altered).
    size = {
        "cpus": integer(payload.get("cpus"), 1, MAX_CPUS),
        "memory_mb": integer(payload.get("memory_mb"), 1, MAX_MEMORY_MB),
        "timeout": number(payload.get("timeout"), 0, 1e12),
    }
    return {
        "size": size if all(v is not None for v in size.values()) else {},
        "serializer": _serializer(ctx),
        "problems": "; ".join(ctx.info.all_problems),
        "note": ctx.info.note or "",
    }


def _serializer(ctx: JobContext) -> str:
    ser = ctx.payload.get("ser", "json")
    return ser if isinstance(ser, str) else "?"


def _attempts(ctx: JobContext) -> dict[str, Any] | None:
    if not ctx.info.attempts:
        return None
    return {"bars": timeline(ctx.info)}


def _outcome(ctx: JobContext) -> dict[str, Any] | None:
    info = ctx.info
    if not info.status.terminal:
        return None
    if info.error_type or info.error_message or info.traceback:
        return {"error": True}
    rec = ctx.store.fields([ctx.keys.job_id], ["status", "result", "rsig", "attempt"])[0]
    raw = rec.get("result")
    if raw is None:
        return None
    # Shown only once its tag verifies with the app's secret (and decoded only as JSON).
    secret = ctx.store.signing_key()
    names = dict.fromkeys(("json", _serializer(ctx)))
    found = result_serializer(secret, ctx.keys.job_id, rec, names) if secret else None
    if found is None:
        why = "it does not verify with" if secret else "no signing key to verify it with:"
        text = f"{len(raw):,} bytes, not shown: {why} this app's secret"
        return {"result": Preview("(result_invalid)", text, len(raw), False)}
    return {"result": preview_result(raw, found)}


def _arguments(ctx: JobContext) -> dict[str, Any] | None:
    raw = ctx.store.fields([ctx.keys.job_id], ["status", "args"])[0].get("args")
    if raw is None:
        return None
    return {"args": previews_of_call(raw, _serializer(ctx)), "bytes": len(raw)}


#: Lines of a job's log shown on its page (the newest).
LOG_TAIL = 200


def _progress(ctx: JobContext) -> dict[str, Any] | None:
    got = ctx.store.progress(ctx.keys)
    if got is None:
        return None
    fraction, note = got
    if ctx.info.status.value == "SUCCEEDED":
        fraction = 1.0
    return {"percent": round(fraction * 100, 1), "note": note}


def _logs(ctx: JobContext) -> dict[str, Any] | None:
    lines = job_logs.tail(ctx.store, ctx.keys, LOG_TAIL)
    if not lines:
        return None
    return {"lines": lines, "limit": LOG_TAIL}


def _cost(ctx: JobContext) -> dict[str, Any] | None:
    if ctx.prices is None or not ctx.info.attempts:
        return None
    payload = ctx.payload
    size = (
        integer(payload.get("cpus"), 1, MAX_CPUS) or 1,
        integer(payload.get("memory_mb"), 1, MAX_MEMORY_MB) or 256,
    )
    cost = job_cost(ctx.info, ctx.prices, size, time.time())
    return {"cost": cost, "max_cost": number(payload.get("max_cost"), 0, 1e12)}


#: The sections of the job page, in order.
SECTIONS: list[Section] = [
    Section("summary", "Job", "sections/summary.html", _summary),
    Section("progress", "Progress", "sections/progress.html", _progress),
    Section("attempts", "Attempts", "sections/attempts.html", _attempts),
    Section("outcome", "Outcome", "sections/outcome.html", _outcome),
    Section("logs", "Logs", "sections/logs.html", _logs),
    Section("cost", "Cost", "sections/cost.html", _cost),
    Section("arguments", "Arguments", "sections/arguments.html", _arguments, live=False),
]


def job_context(store: Store, keys: JobKeys, prices: PriceTable | None = None) -> JobContext | None:
    """What the job page's sections are built from; ``None`` when there is no such job."""
    info = store.snapshot(keys, LIVE_FIELDS)
    if info is None:
        return None
    raw = store.fields([keys.job_id], ["status", "payload"])[0].get("payload", b"{}")
    return JobContext(store, keys, info, json_object(raw) or {}, prices=prices)


def sections(ctx: JobContext, live: bool) -> list[tuple[Section, dict[str, Any]]]:
    """The sections of the job page that have data, live or not as asked, with their data."""
    out = []
    for s in SECTIONS:
        if s.live is live:
            data = s.build(ctx)
            if data is not None:
                out.append((s, data))
    return out


@dataclass(frozen=True)
class ChartBar:
    """One bar of the cost chart, in the SVG's coordinates, with its label and amount."""

    x: float
    y: float
    width: float
    height: float
    label: str
    usd: float


#: Hours the cost chart covers, up to now.
CHART_HOURS = 48


def cost_chart(
    rep: CostReport, now: float | None = None, hours: int = CHART_HOURS
) -> dict[str, Any]:
    """Bars of estimated USD per hour for the last ``hours`` hours, in a 0..100 x 0..40 box."""
    now = now if now is not None else time.time()
    last = (now // 3600) * 3600
    starts = [last - 3600 * i for i in range(hours - 1, -1, -1)]
    values = [rep.by_hour[h].usd if h in rep.by_hour else 0.0 for h in starts]
    top = max(values) or 1.0
    width = 100 / hours
    bars = [
        ChartBar(
            x=i * width,
            y=40 - v / top * 38,
            width=width * 0.8,
            height=v / top * 38,
            label=datetime.fromtimestamp(h, UTC).strftime("%m-%d %H:00"),
            usd=v,
        )
        for i, (h, v) in enumerate(zip(starts, values, strict=True))
    ]
    return {
        "bars": bars,
        "top": top if any(values) else 0.0,
        "first": bars[0].label,
        "last": bars[-1].label,
    }
