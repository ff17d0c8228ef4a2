"""BENCHMARKS.md's tables and plots, made from one data file: ``bench/results.json``.

Each benchmark in the file gets its tables written into BENCHMARKS.md between
``<!-- results:NAME -->`` and ``<!-- /results -->``, and one PNG in ``docs/`` (matplotlib, the
``[bench]`` extra). ``--check`` writes nothing and needs no matplotlib: it fails when a table
in BENCHMARKS.md is not what the data file gives, a benchmark has no table or a plot is
missing (``tests/test_benchmarks_doc.py`` runs it).

    .venv/bin/python bench/plots.py            # after editing bench/results.json
    .venv/bin/python bench/plots.py --check
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "BENCHMARKS.md"
BLOCK = re.compile(r"<!-- results:(\w+) -->\n(.*?)<!-- /results -->", re.S)

Row = dict[str, Any]
Bench = dict[str, Any]


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RESULTS.read_text(encoding="utf-8"))
    return data


# ---------------------------------------------------------------------------- tables


def cell(value: Any, col: dict[str, Any]) -> str:
    """A table cell: a number, a [low, high] range, a string, or None (not measured)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    fmt = col.get("fmt", "{}")
    parts = value if isinstance(value, list) else [value]
    text = "\u2013".join(fmt.format(v) for v in parts)
    text = col.get("prefix", "") + text + col.get("unit", "")
    return f"**{text}**" if col.get("bold") else text


def render(bench: Bench) -> str:
    """The Markdown between a benchmark's markers: each table, then a line with its caption
    and notes; the goal and verdict close the last one."""
    out: list[str] = []
    tables = bench["tables"]
    for i, table in enumerate(tables):
        cols = table["columns"]
        out.append("| " + " | ".join(c["head"] for c in cols) + " |")
        out.append("|" + "|".join(" --- " for _ in cols) + "|")
        for row in table["rows"]:
            out.append("| " + " | ".join(cell(row.get(c["key"]), c) for c in cols) + " |")
        out.append("")
        line = [f"*{table['caption']}.*", *table.get("notes", [])]
        if i == len(tables) - 1 and bench.get("goal"):
            verdict = bench["verdict"][:1].upper() + bench["verdict"][1:]
            line.append(f"Goal: {bench['goal']}. **{verdict}.**")
        out.append(" ".join(line))
        if i < len(tables) - 1:
            out.append("")
    return "\n".join(out) + "\n" if out else ""


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def render_summary(benches: dict[str, Bench]) -> str:
    out = ["| benchmark | latest | goal | |", "| --- | --- | --- | --- |"]
    for b in benches.values():
        link = f"[{b['name']}](#{slug(b['name'])})" if b["tables"] else b["name"]
        out.append(f"| {link} | {b['headline']} | {b.get('goal') or '—'} | {b['status']} |")
    return "\n".join(out) + "\n\n"


def blocks(data: dict[str, Any]) -> dict[str, str]:
    """Every generated block of BENCHMARKS.md, by name."""
    benches = data["benchmarks"]
    return {"summary": render_summary(benches)} | {
        n: render(b) for n, b in benches.items() if b["tables"]
    }


def check(doc: str | None = None, data: dict[str, Any] | None = None) -> list[str]:
    """What in BENCHMARKS.md disagrees with the data file (an empty list: nothing)."""
    doc = DOC.read_text(encoding="utf-8") if doc is None else doc
    data = load() if data is None else data
    want = blocks(data)
    found = {m.group(1): m.group(2) for m in BLOCK.finditer(doc)}
    problems: list[str] = []
    for name, text in want.items():
        if name not in found:
            problems.append(f"BENCHMARKS.md has no <!-- results:{name} --> block")
        elif found[name] != text:
            problems.append(
                f"the {name} block of BENCHMARKS.md differs from bench/results.json "
                "(edit the data file, then run bench/plots.py)"
            )
    problems += [
        f"BENCHMARKS.md block {n!r} is not in bench/results.json" for n in found if n not in want
    ]
    headings = {slug(h) for h in re.findall(r"^#+ (.+)$", doc, re.M)}
    for name, bench in data["benchmarks"].items():
        if bench["tables"] and slug(bench["name"]) not in headings:
            problems.append(f"{name}: BENCHMARKS.md has no heading {bench['name']!r}")
        png = bench.get("png")
        if png and not (ROOT / png).is_file():
            problems.append(f"{name}: {png} is missing (run bench/plots.py)")
        if png and f"]({png})" not in doc:
            problems.append(f"{name}: BENCHMARKS.md does not show {png}")
    return problems


def write_tables(data: dict[str, Any]) -> None:
    want = blocks(data)

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"<!-- results:{name} -->\n{want.get(name, m.group(2))}<!-- /results -->"

    DOC.write_text(BLOCK.sub(fill, DOC.read_text(encoding="utf-8")), encoding="utf-8")


# ---------------------------------------------------------------------------- plots

BALLOONS = "#2b6cb0"
SECOND = "#63b3ed"
PEER = "#a0aec0"
BASE = "#718096"
GOAL = "#c53030"


def plain(label: str) -> str:
    return label.replace("`", "").replace("**", "")


def rows(bench: Bench, i: int = 0) -> list[Row]:
    result: list[Row] = bench["tables"][i]["rows"]
    return result


def kind(row: Row, peer: bool = False) -> str:
    return "base" if row.get("baseline") else "peer" if peer else "ours"


def hbars(
    ax: Any,
    items: list[tuple[str, float, str, str]],
    unit: str,
    log: bool = False,
    room: float = 1.45,
) -> None:
    """Horizontal bars, top to bottom: (label, value, text at the bar's end, kind), kind being
    "ours" (balloons), "peer", or "base" (the baseline: hatched, with a dashed line)."""
    colour = {"ours": BALLOONS, "peer": "#cbd5e0", "base": PEER}
    values = [i[1] for i in items]
    ys = list(range(len(items)))[::-1]
    for y, (_, value, text, k) in zip(ys, items, strict=True):
        ax.barh(
            y,
            value,
            color=colour[k],
            hatch="//" if k == "base" else None,
            edgecolor=BASE if k == "base" else "none",
        )
        ax.annotate(
            text,
            (value, y),
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
            zorder=3,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
        )
        if k == "base":
            ax.axvline(value, color=BASE, ls="--", lw=1, zorder=0.5, alpha=0.7)
    ax.set_yticks(ys, [plain(i[0]) for i in items], fontsize=9)
    ax.set_xlabel(unit)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 2, max(values) * 12)
    else:
        ax.set_xlim(0, max(values) * room)
    ax.spines[["top", "right"]].set_visible(False)


def baseline_note(ax: Any, text: str, top: bool = False) -> None:
    ax.text(
        0.99,
        0.99 if top else 0.01,
        text,
        transform=ax.transAxes,
        ha="right",
        va="top" if top else "bottom",
        fontsize=8,
        color=BASE,
        style="italic",
    )


def plot_warm_latency(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.2]}
    )
    hbars(
        left,
        [
            (
                r["system"],
                r["median_ms"],
                f"{r['median_ms']:.2f} ms  ({r['ratio']:.2f}\u00d7)",
                kind(r, "balloons" not in r["system"]),
            )
            for r in rows(b, 0)
        ],
        "median, ms",
    )
    left.set_title("against RQ and Celery (2026-11-28, n=300)", fontsize=10)
    baseline_note(left, "hatched: baseline (Celery = 1.00\u00d7)")
    table = b["tables"][-1]  # the newest before/after series
    pairs = [r for r in table["rows"] if r.get("before_ms") is not None]
    series = [c for c in table["columns"] if c["key"].endswith("_ms")]
    width = 0.8 / len(series)
    colours = [PEER, BALLOONS, SECOND, "#2f855a"]
    for k, col in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(pairs))]
        vals = [r.get(col["key"]) or 0 for r in pairs]
        right.bar(
            xs,
            vals,
            width,
            color=colours[k],
            label=plain(col["head"]),
            hatch="//" if k == 0 else None,
            edgecolor=BASE if k == 0 else "none",
        )
        for x, v in zip(xs, vals, strict=True):
            if v:
                right.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    for i, r in enumerate(pairs):
        top = max(r.get(c["key"]) or 0 for c in series)
        right.text(
            i,
            top * 1.07,
            f"{r['after_over_before']:.2f}\u00d7",
            ha="center",
            fontsize=9,
            weight="bold",
        )
    right.set_xticks(range(len(pairs)), [f"pair {r['pair']}" for r in pairs])
    right.set_ylim(0, max(r.get(c["key"]) or 0 for r in pairs for c in series) * 1.42)
    right.set_ylabel("balloons median, ms")
    right.legend(fontsize=8, loc="upper left", ncol=2)
    baseline_note(right, "bold: after \u00f7 before\nhatched: the baseline", top=True)
    right.set_title(table["plot_title"], fontsize=10)
    right.spines[["top", "right"]].set_visible(False)
    fig.suptitle(
        "Warm job latency: submit → result of a no-op on an idle warm machine (lower is better)"
    )
    return fig


def plot_cold_job(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 3.8))
    items: list[tuple[str, float, str, bool]] = []
    for r in rows(b):
        items.append(
            (
                "balloons " + r["system"],
                r["median_ms"],
                f"{r['median_ms']:.2f} ms  ({r['ratio']:.2f}\u00d7 its baseline)",
                "ours",
            )
        )
        items.append((r["peer"], r["peer_ms"], f"{r['peer_ms']:.2f} ms  (baseline)", "base"))
    hbars(ax, items, "median submit → result, ms")
    fig.suptitle("Cold job: a fresh process per job, n=50 (2026-11-28; lower is better)")
    return fig


def plot_submit_throughput(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(11, 4.6))
    data = rows(b)[::-1]
    for k, (key, colour, name) in enumerate(
        [
            ("launch_ratio", BALLOONS, "launch (new slot per job)"),
            ("queued_ratio", SECOND, "queued (pool at its cap)"),
        ]
    ):
        for i, r in enumerate(data):
            x = i + (k - 0.5) * 0.38
            v = r.get(key)
            if v is None:
                ax.text(x, 0.1, "not\nrecorded", ha="center", fontsize=8, color=BASE)
                continue
            lo, hi = (v, v) if not isinstance(v, list) else v
            ax.bar(
                x,
                max(hi - lo, 0.04),
                0.36,
                bottom=lo if hi > lo else lo - 0.02,
                color=colour,
                label=name if i == 0 or (i == 1 and k == 1) else None,
            )
            ax.text(
                x,
                hi + 0.05,
                f"{lo:.2f}\u2013{hi:.2f}\u00d7" if hi > lo else f"{lo:.2f}\u00d7",
                ha="center",
                fontsize=8,
            )
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.axhline(1, color=BASE, ls="--", lw=1)
    ax.text(
        len(data) - 0.5,
        1.03,
        "RQ enqueue = 1.00\u00d7 (baseline)",
        ha="right",
        fontsize=8,
        color=BASE,
    )
    ax.axhline(2, color=GOAL, ls=":", lw=1.2)
    ax.text(len(data) - 0.5, 2.03, "goal ≥ 2\u00d7", ha="right", fontsize=8, color=GOAL)
    ax.set_xticks(
        range(len(data)), [plain(r["when"]).replace(", ", "\n", 1) for r in data], fontsize=8
    )
    ax.set_ylim(0, 3.6)
    ax.set_xlim(-0.6, len(data) - 0.4)
    ax.set_ylabel("balloons jobs/s ÷ RQ jobs/s (range over 3 runs)")
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="upper left")
    fig.suptitle("Submit throughput: task.submit() vs RQ Queue.enqueue, n=5,000 (higher is better)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_drain(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.4))
    cols = [c for c in b["tables"][0]["columns"] if c.get("unit") == "\u00d7"]
    colours = [BALLOONS, "#1a365d", SECOND, "#90cdf4"]
    data = rows(b)
    width = 0.8 / len(cols)
    for k, col in enumerate(cols):
        xs = [i + (k - (len(cols) - 1) / 2) * width for i in range(len(data))]
        vals = [r[col["key"]] for r in data]
        ax.bar(xs, vals, width, color=colours[k], label=col["head"])
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v + 0.03, f"{v:.2f}\u00d7", ha="center", fontsize=8)
    ax.axhline(1, color=BASE, ls="--", lw=1, label="best peer (arq) = 1.00\u00d7, the baseline")
    ax.set_xticks(
        range(len(data)),
        [f"run {r['run']}\narq {r['arq_jobs']:,} jobs/s" for r in data],
        fontsize=9,
    )
    ax.set_ylabel("balloons jobs/s ÷ arq jobs/s")
    ax.set_ylim(0, max(r[c["key"]] for r in data for c in cols) * 1.15)
    ax.legend(fontsize=8, title="balloons pool", title_fontsize=8)
    fig.suptitle("Drain: 1,000 no-op jobs submitted at once (2026-11-28; higher is better)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_burst(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 3.8))
    hbars(
        ax,
        [
            (
                r["system"],
                r["makespan_ms"],
                f"{r['makespan_ms']:,.0f} ms"
                + ("" if r["ratio"] == 1 else f"  (balloons = {r['ratio']:.2f}\u00d7 this)"),
                kind(r, "balloons" not in r["system"]),
            )
            for r in rows(b)
        ],
        "makespan, ms (first submit → last result)",
    )
    baseline_note(ax, "hatched: baseline")
    fig.suptitle(
        "Burst: 200 no-op jobs, max_machines=4, median of 7 rounds (2026-11-28; lower is better)"
    )
    return fig


def plot_worker_startup(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.4))
    data = rows(b)
    x = 0
    ticks: list[tuple[float, str]] = []
    for r in data:
        runs = r.get("runs") or []
        start = x
        if runs:
            for v in runs:
                ax.bar(x, v, 0.8, color=BALLOONS if "no .pyc" not in r["what"] else SECOND)
                ax.text(x, v + 0.5, f"+{v:.1f}", ha="center", fontsize=8)
                x += 1
        else:
            lo, hi = r["over_ms"]
            ax.bar(x, hi - lo, 0.8, bottom=lo, color=PEER)
            ax.text(x, hi + 0.5, f"+{lo:.1f}\u2013{hi:.1f}", ha="center", fontsize=8)
            x += 1
        ticks.append(((start + x - 1) / 2, plain(r["what"]).replace(", ", "\n", 1)))
        x += 0.6
    ax.axhline(30, color=GOAL, ls=":", lw=1.2)
    ax.text(-0.45, 30.6, "goal ≤ +30 ms", ha="left", fontsize=8, color=GOAL)
    ax.set_xticks([t[0] for t in ticks], [t[1] for t in ticks], fontsize=8)
    ax.set_ylabel("ms over a bare interpreter (baseline = 0)")
    ax.set_ylim(0, 55)
    fig.suptitle(
        "Worker start-up: wall time over a bare interpreter, one bar per run"
        " (2026-11-28; lower is better)"
    )
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_log_capture(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    lines = [r for r in rows(b) if r["per"] == "line"]
    xs = range(len(lines))
    left.bar(
        [i - 0.2 for i in xs],
        [r["plain_us"] for r in lines],
        0.4,
        color=PEER,
        hatch="//",
        edgecolor=BASE,
        label="uncaptured (baseline)",
    )
    left.bar(
        [i + 0.2 for i in xs],
        [r["captured_us"] for r in lines],
        0.4,
        color=BALLOONS,
        label="captured",
    )
    for i, r in enumerate(lines):
        left.text(i - 0.2, r["plain_us"] + 0.1, f"{r['plain_us']:.2f}", ha="center", fontsize=8)
        left.text(
            i + 0.2,
            r["captured_us"] + 0.1,
            f"{r['captured_us']:.2f}\n({r['ratio']:.2f}\u00d7)",
            ha="center",
            fontsize=8,
        )
    left.set_xticks(list(xs), [plain(r["what"]) for r in lines])
    left.set_ylabel("\u00b5s per line (median)")
    left.set_ylim(0, max(r["captured_us"] for r in lines) * 1.35)
    left.legend(fontsize=8, loc="upper left")
    left.set_title("per line, 5,000 lines \u00d7 9 rounds", fontsize=10)
    left.spines[["top", "right"]].set_visible(False)
    items: list[tuple[str, float, str, str]] = []
    for r in rows(b):
        if r["per"] != "job":
            continue
        if r["plain_us"] is not None:
            items.append(
                (r["what"] + ", uncaptured", r["plain_us"], f"{r['plain_us']:.1f} \u00b5s", "base")
            )
        items.append(
            (r["what"] + ", captured", r["captured_us"], f"{r['captured_us']:.1f} \u00b5s", "ours")
        )
    hbars(right, items, "\u00b5s per job (median, n=300)")
    right.set_title("per job: begin, task, end with its final flush", fontsize=10)
    fig.suptitle("Log capture: what it costs a task (2026-11-28; lower is better)")
    return fig


def plot_dashboard_reads(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4))
    hbars(
        ax,
        [
            (
                r["read"],
                r["median_ms"],
                f"{r['median_ms']:,.2f} ms  ({r['ratio']:,.2f}\u00d7)",
                kind(r),
            )
            for r in rows(b)
        ],
        "median, ms (log scale)",
        log=True,
    )
    baseline_note(ax, "hatched: baseline")
    fig.suptitle("Dashboard reads over 20,000 jobs, 7 rounds (2026-11-28; lower is better)")
    return fig


def plot_fly(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1.3, 1]}
    )
    calls = rows(b, 0)
    ys = list(range(len(calls)))[::-1]
    left.barh(
        [y + 0.18 for y in ys],
        [r["per_machine"] for r in calls],
        0.36,
        color=BALLOONS,
        label="calls per machine used",
    )
    left.barh(
        [y - 0.18 for y in ys],
        [r["per_job"] for r in calls],
        0.36,
        color=SECOND,
        label="calls per job",
    )
    for y, r in zip(ys, calls, strict=True):
        left.text(r["per_machine"], y + 0.18, f" {r['per_machine']:.2f}", va="center", fontsize=8)
        left.text(r["per_job"], y - 0.18, f" {r['per_job']:.2f}", va="center", fontsize=8)
    left.axvline(1, color=BASE, ls="--", lw=1)
    left.text(1.02, -0.85, "1 = one create per machine", fontsize=8, color=BASE)
    left.set_ylim(-1, len(calls) - 0.4)
    left.set_yticks(ys, [plain(r["scenario"]) for r in calls], fontsize=8)
    left.set_xlim(0, 2.6)
    left.set_xlabel("Fly Machines API calls (counted by the emulator)")
    left.legend(fontsize=8, loc="upper right")
    left.set_title("API calls, happy path and injected faults", fontsize=10)
    left.spines[["top", "right"]].set_visible(False)
    hbars(
        right,
        [
            (
                r["system"],
                r["median_ms"],
                f"{r['median_ms']:.2f} ms"
                + (f"  ({r['ratio']:.2f}\u00d7)" if r["ratio"] is not None else ""),
                kind(r),
            )
            for r in rows(b, 1)
        ],
        "median submit → result, ms",
        room=1.8,
    )
    right.set_title("a fresh machine per job, n=30", fontsize=10)
    baseline_note(right, "hatched: baseline")
    fig.suptitle("Fly Machines API against the emulator (2026-11-28)")
    return fig


def plot_fly_scale(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 3.8))
    hbars(
        ax,
        [
            (
                r["run"],
                r["makespan_s"],
                f"{r['makespan_s']:.2f} s  ({r['ratio']:.2f}\u00d7 ideal)",
                "ours",
            )
            for r in rows(b)
        ],
        "makespan, s",
    )
    ax.axvline(20, color=BASE, ls="--", lw=1)
    ax.text(20, -0.75, " ideal 20 s (baseline)", fontsize=8, color=BASE)
    ax.axvline(24, color=GOAL, ls=":", lw=1.2)
    ax.text(24, 3.45, " goal ≤ 1.2\u00d7 ideal", fontsize=8, color=GOAL)
    ax.set_ylim(-1, 3.8)
    fig.suptitle(
        "Fly scale: 10,000 jobs of 100 ms, max_machines=50, emulator (2026-11-28; lower is better)"
    )
    return fig


def plot_tls(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    data = [r for r in rows(b) if r["rt_connect"] is not None]
    xs = range(len(data))
    left.bar(
        [i - 0.2 for i in xs],
        [r["rt_connect"] for r in data],
        0.4,
        color=BALLOONS,
        label="connect + first command",
    )
    left.bar(
        [i + 0.2 for i in xs],
        [r["rt_command"] for r in data],
        0.4,
        color=SECOND,
        label="a command on an open connection",
    )
    for i, r in enumerate(data):
        left.text(
            i - 0.2, r["rt_connect"] + 0.05, f"{r['rt_connect']:.2f}", ha="center", fontsize=8
        )
        left.text(
            i + 0.2, r["rt_command"] + 0.05, f"{r['rt_command']:.2f}", ha="center", fontsize=8
        )
    left.set_xticks(list(xs), [r["endpoint"] for r in data])
    left.set_ylabel("round trips (link delayed 10 ms each way)")
    left.set_ylim(0, 4)
    left.legend(fontsize=8, loc="upper left")
    left.set_title("round trips: TLS costs per connection, not per command", fontsize=10)
    left.spines[["top", "right"]].set_visible(False)
    subs = [r for r in rows(b) if r["submit_us"] is not None]
    hbars(
        right,
        [(r["endpoint"], r["submit_us"], f"{r['submit_us']:.0f} µs", kind(r)) for r in subs],
        "µs per submit (3,000 submits, no new connection)",
    )
    right.set_title("submit cost on loopback", fontsize=10)
    baseline_note(right, "hatched: baseline (the same forwarder without TLS)")
    fig.suptitle("Redis over TLS (rediss://) against plain TCP (2026-12-06)")
    return fig


def plot_cluster(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.4))
    data = rows(b)
    for i, r in enumerate(data):
        ax.bar(
            i - 0.2,
            r["single"],
            0.4,
            color=PEER,
            hatch="//",
            edgecolor=BASE,
            label="one Valkey (baseline)" if i == 0 else None,
        )
        ax.bar(
            i + 0.2, r["cluster"], 0.4, color=BALLOONS, label="3-node cluster" if i == 0 else None
        )
        ax.text(i - 0.2, r["single"], f"{r['single']:,}", ha="center", va="bottom", fontsize=8)
        ax.text(
            i + 0.2,
            r["cluster"],
            f"{r['cluster']:,}\n{r['ratio']:.2f}\u00d7",
            ha="center",
            va="bottom",
            fontsize=8,
            weight="bold",
        )
        ax.hlines(
            2 * r["single"],
            i + 0.0,
            i + 0.4,
            color=GOAL,
            ls=":",
            lw=1.5,
            label="goal: 2\u00d7 one Valkey" if i == 0 else None,
        )
    ax.set_xticks(range(len(data)), [plain(r["load"]) for r in data])
    ax.set_ylabel("jobs/s (median of 3 rounds)")
    ax.set_ylim(0, max(2 * r["single"] for r in data) * 1.12)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Redis Cluster: 3 nodes vs one Valkey on the same 2 cores (2026-12-06; goal not met)"
    )
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_chaos(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(11, 3.8))
    data = {plain(r["what"]): r for r in rows(b)}
    runs = [c for c in b["tables"][0]["columns"] if c["key"] != "what"]
    parts = [
        ("succeeded", BALLOONS),
        ("failed by design (task_error, timeout)", PEER),
        ("failed killed (every attempt killed)", "#dd6b20"),
    ]
    ys = list(range(len(runs)))[::-1]
    for y, col in zip(ys, runs, strict=True):
        total = sum(data[name][col["key"]] for name, _ in parts)
        left = 0.0
        for name, colour in parts:
            share = 100 * data[name][col["key"]] / total
            ax.barh(y, share, left=left, color=colour, label=name if y == ys[0] else None)
            if share > 4:
                ax.text(
                    left + share / 2,
                    y,
                    f"{data[name][col['key']]:,}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if colour == BALLOONS else "black",
                )
            left += share
        lost = data["lost"][col["key"]]
        orphans = data["orphan machines after gc / processes left"][col["key"]]
        ax.text(
            101,
            y,
            f" lost {lost} · orphans {orphans}",
            va="center",
            fontsize=9,
            weight="bold",
            color="#2f855a" if lost == orphans == 0 else GOAL,
        )
    ax.set_yticks(ys, [c["head"] for c in runs])
    ax.set_xlim(0, 125)
    ax.set_xlabel("% of jobs (numbers in the bars: jobs)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.45, -0.2), ncol=3)
    fig.suptitle(
        "Chaos: machines killed, Fly API faults, a Redis restart"
        " (2026-11-28; goal: lost = orphans = 0)"
    )
    ax.spines[["top", "right"]].set_visible(False)
    return fig


PLOTS: dict[str, Callable[[Any, Bench], Any]] = {
    "warm_latency": plot_warm_latency,
    "cold_job": plot_cold_job,
    "submit_throughput": plot_submit_throughput,
    "drain": plot_drain,
    "burst": plot_burst,
    "worker_startup": plot_worker_startup,
    "log_capture": plot_log_capture,
    "dashboard_reads": plot_dashboard_reads,
    "fly": plot_fly,
    "fly_scale": plot_fly_scale,
    "tls": plot_tls,
    "cluster": plot_cluster,
    "chaos": plot_chaos,
}


def write_plots(data: dict[str, Any], only: list[str] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 11, "savefig.dpi": 110})
    for name, bench in data["benchmarks"].items():
        if not bench.get("png") or (only and name not in only):
            continue
        fig = PLOTS[name](plt, bench)
        fig.tight_layout()
        fig.savefig(ROOT / bench["png"], metadata={"Software": None})
        plt.close(fig)
        print(f"wrote {bench['png']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check", action="store_true", help="check BENCHMARKS.md against the data file"
    )
    ap.add_argument("--only", nargs="*", help="plot only these benchmarks (names in results.json)")
    args = ap.parse_args()
    data = load()
    if not args.check:
        write_tables(data)
        write_plots(data, args.only)
    problems = check(data=data)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
