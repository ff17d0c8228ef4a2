"""The plots of BENCHMARKS.md, one function per benchmark of ``results.json``.

Each function gets ``matplotlib.pyplot`` and the benchmark's entry of ``results.json`` and
returns a figure drawn from that entry's tables only. Conventions: balloons in blue, a peer in
light grey, the baseline hatched (with a dashed line where it helps), a goal as a red dotted
line, every bar labelled with its value. ``bench/plots.py`` saves them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Bench = dict[str, Any]
Row = dict[str, Any]
X = "\u00d7"  # the multiplication sign of ratios

BLUE = "#2b6cb0"
LIGHT_BLUE = "#63b3ed"
DARK_BLUE = "#1a365d"
PALE_BLUE = "#90cdf4"
PEER = "#cbd5e0"
GREY = "#718096"
GOAL = "#c53030"
GREEN = "#2f855a"
STYLE = {
    "ours": {"color": BLUE},
    "peer": {"color": PEER},
    "base": {"color": "#a0aec0", "hatch": "//", "edgecolor": GREY},
}
SMALL = {"ha": "center", "va": "bottom", "fontsize": 8}
LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 1.5}


def plain(label: str) -> str:
    return label.replace("`", "").replace("**", "")


def rows(bench: Bench, i: int = 0) -> list[Row]:
    result: list[Row] = bench["tables"][i]["rows"]
    return result


def kind(row: Row, peer: bool = False) -> str:
    return "base" if row.get("baseline") else "peer" if peer else "ours"


def tidy(ax: Any, title: str | None = None, note: str | None = None, top: bool = False) -> None:
    """Drop the top and right frame; a panel title; a grey note in a corner."""
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    if note:
        y, va = (0.99, "top") if top else (0.01, "bottom")
        ax.text(0.99, y, note, transform=ax.transAxes, ha="right", va=va, fontsize=8,
                color=GREY, style="italic")  # fmt: skip


def hbars(ax: Any, items: Sequence[tuple[str, float, str, str]], xlabel: str,
          log: bool = False, room: float = 1.45) -> None:  # fmt: skip
    """Horizontal bars, top to bottom: (label, value, text after the bar, kind)."""
    ys = list(range(len(items)))[::-1]
    for y, (_, value, text, k) in zip(ys, items, strict=True):
        ax.barh(y, value, **STYLE[k])
        ax.annotate(text, (value, y), xytext=(5, 0), textcoords="offset points", va="center",
                    fontsize=9, bbox=LABEL_BOX)  # fmt: skip
        if k == "base":
            ax.axvline(value, color=GREY, ls="--", lw=1, zorder=0.5, alpha=0.7)
    ax.set_yticks(ys, [plain(i[0]) for i in items], fontsize=9)
    ax.set_xlabel(xlabel)
    values = [i[1] for i in items]
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 2, max(values) * 12)
    else:
        ax.set_xlim(0, max(values) * room)
    tidy(ax)


def grouped(ax: Any, groups: Sequence[str], series: Sequence[tuple[str, list[Any], dict[str, Any]]],
            fmt: Callable[[Any], str]) -> list[list[float]]:  # fmt: skip
    """Vertical bars, a cluster per group and a bar per series (label, values, style);
    returns each series' x positions."""
    width = 0.8 / len(series)
    positions = []
    for k, (label, values, style) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [v or 0 for v in values], width * 0.95, label=label, **style)
        for x, v in zip(xs, values, strict=True):
            if v is not None:
                ax.text(x, v, fmt(v), **SMALL)
        positions.append(xs)
    ax.set_xticks(range(len(groups)), groups)
    tidy(ax)
    return positions


def ratio_items(data: list[Row], label: str, value: str, unit: str, fmt: str = "{:.2f}",
                peer: str = "") -> list[tuple[str, float, str, str]]:  # fmt: skip
    """hbars items: the value with its unit, and the row's ratio when it has one; a row whose
    label lacks ``peer`` (when given) is a peer's."""
    out = []
    for r in data:
        text = fmt.format(r[value]) + unit
        if r.get("ratio") is not None:
            text += f"  ({r['ratio']:.2f}{X})"
        out.append((r[label], r[value], text, kind(r, bool(peer) and peer not in r[label])))
    return out


def plot_warm_latency(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), width_ratios=[1, 1.2])
    items = ratio_items(rows(b), "system", "median_ms", " ms", peer="balloons")
    hbars(left, items, "median, ms")
    tidy(left, "against RQ and Celery (2026-11-28, n=300)", f"hatched: baseline (Celery = 1.00{X})")
    table = b["tables"][-1]  # the newest before/after series
    pairs = [r for r in table["rows"] if r.get("before_ms") is not None]
    cols = [c for c in table["columns"] if c["key"].endswith("_ms")]
    styles = [STYLE["base"], {"color": BLUE}, {"color": LIGHT_BLUE}, {"color": GREEN}]
    series = [(plain(c["head"]), [r.get(c["key"]) for r in pairs], s)
              for c, s in zip(cols, styles, strict=False)]  # fmt: skip
    grouped(right, [f"pair {r['pair']}" for r in pairs], series, lambda v: f"{v:.2f}")
    top = max(v or 0 for _, values, _ in series for v in values)
    for i, r in enumerate(pairs):
        right.text(i, top * 1.1, f"{r['after_over_before']:.2f}{X}", ha="center", weight="bold")
    right.set_ylim(0, top * 1.42)
    right.set_ylabel("balloons median, ms")
    right.legend(fontsize=8, loc="upper left", ncol=2)
    tidy(right, table["plot_title"], "bold: after \u00f7 before\nhatched: the baseline", top=True)
    fig.suptitle("Warm job latency: submit → result of a no-op on an idle warm machine"
                 " (lower is better)")  # fmt: skip
    return fig


def plot_cold_job(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 3.8))
    items = []
    for r in rows(b):
        text = f"{r['median_ms']:.2f} ms  ({r['ratio']:.2f}{X} its baseline)"
        items.append(("balloons " + r["system"], r["median_ms"], text, "ours"))
        items.append((r["peer"], r["peer_ms"], f"{r['peer_ms']:.2f} ms  (baseline)", "base"))
    hbars(ax, items, "median submit → result, ms")
    fig.suptitle("Cold job: a fresh process per job, n=50 (2026-11-28; lower is better)")
    return fig


def plot_submit_throughput(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(11, 4.6))
    data = rows(b)[::-1]
    paths = [("launch_ratio", BLUE, "launch (new slot per job)"),
             ("queued_ratio", LIGHT_BLUE, "queued (pool at its cap)")]  # fmt: skip
    for k, (key, colour, name) in enumerate(paths):
        for i, r in enumerate(data):
            x, v = i + (k - 0.5) * 0.38, r.get(key)
            if v is None:
                ax.text(x, 0.1, "not\nrecorded", ha="center", fontsize=8, color=GREY)
                continue
            lo, hi = v if isinstance(v, list) else (v, v)
            ax.bar(x, max(hi - lo, 0.04), 0.36, bottom=min(lo, hi - 0.02), color=colour,
                   label=name if i == k else None)  # fmt: skip
            text = f"{lo:.2f}\u2013{hi:.2f}{X}" if hi > lo else f"{lo:.2f}{X}"
            ax.text(x, hi + 0.05, text, **SMALL)
    ax.axhline(1, color=GREY, ls="--", lw=1, label=f"RQ enqueue = 1.00{X}, the baseline")
    ax.axhline(2, color=GOAL, ls=":", lw=1.2, label=f"goal \u2265 2{X}")
    ax.set_xticks(range(len(data)), [plain(r["when"]).replace(", ", "\n", 1) for r in data],
                  fontsize=8)  # fmt: skip
    ax.set_ylim(0, 3.6)
    ax.set_xlim(-0.6, len(data) - 0.4)
    ax.set_ylabel("balloons jobs/s \u00f7 RQ jobs/s (range over 3 runs)")
    ax.legend(fontsize=8, loc="upper left")
    tidy(ax)
    fig.suptitle("Submit throughput: task.submit() vs RQ Queue.enqueue, n=5,000 (higher is better)")
    return fig


def plot_drain(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.4))
    data = rows(b)
    cols = [c for c in b["tables"][0]["columns"] if c.get("unit") == X]
    colours = [BLUE, DARK_BLUE, LIGHT_BLUE, PALE_BLUE]
    series = [(c["head"], [r[c["key"]] for r in data], {"color": s})
              for c, s in zip(cols, colours, strict=False)]  # fmt: skip
    grouped(ax, [f"run {r['run']}\narq {r['arq_jobs']:,} jobs/s" for r in data], series,
            lambda v: f"{v:.2f}{X}")  # fmt: skip
    ax.axhline(1, color=GREY, ls="--", lw=1, label=f"best peer (arq) = 1.00{X}, the baseline")
    ax.set_ylabel("balloons jobs/s \u00f7 arq jobs/s")
    ax.set_ylim(0, max(max(v for v in s[1]) for s in series) * 1.15)
    ax.legend(fontsize=8, title="balloons pool", title_fontsize=8)
    fig.suptitle("Drain: 1,000 no-op jobs submitted at once (2026-11-28; higher is better)")
    return fig


def plot_map_makespan(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.4))
    data = rows(b)
    cols = [c for c in b["tables"][0]["columns"] if c.get("unit") == " s"]
    colours = [BLUE, LIGHT_BLUE, PEER, "#a0aec0", "#e2e8f0"]
    series = [(plain(c["head"]), [r[c["key"]] for r in data], {"color": s, "edgecolor": GREY})
              for c, s in zip(cols, colours, strict=False)]  # fmt: skip
    grouped(ax, [f"run {r['run']}\nload {r['load']}" for r in data], series, lambda v: f"{v:.1f}")
    ax.set_ylabel("makespan, s (the call → the last result)")
    ax.set_ylim(0, max(max(v for v in s[1]) for s in series) * 1.15)
    ax.legend(fontsize=8, ncol=2)
    fig.suptitle("Map makespan: a no-op over 1,000 inputs on 4 workers"
                 " (2026-12-06; lower is better)")  # fmt: skip
    return fig


def plot_burst(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 3.8))
    items = []
    for r in rows(b):
        text = f"{r['makespan_ms']:,.0f} ms"
        if r["ratio"] != 1:
            text += f"  (balloons = {r['ratio']:.2f}{X} this)"
        items.append((r["system"], r["makespan_ms"], text, kind(r, "balloons" not in r["system"])))
    hbars(ax, items, "makespan, ms (first submit → last result)")
    tidy(ax, note="hatched: baseline")
    fig.suptitle("Burst: 200 no-op jobs, max_machines=4, median of 7 rounds"
                 " (2026-11-28; lower is better)")  # fmt: skip
    return fig


def plot_worker_startup(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.4))
    x, ticks = 0.0, []
    for r in rows(b):
        start = x
        for v in r.get("runs") or []:
            ax.bar(x, v, 0.8, color=LIGHT_BLUE if "no .pyc" in r["what"] else BLUE)
            ax.text(x, v + 0.5, f"+{v:.1f}", **SMALL)
            x += 1
        if not r.get("runs"):
            lo, hi = r["over_ms"]
            ax.bar(x, hi - lo, 0.8, bottom=lo, color=STYLE["base"]["color"])
            ax.text(x, hi + 0.5, f"+{lo:.1f}\u2013{hi:.1f} (range)", **SMALL)
            x += 1
        ticks.append(((start + x - 1) / 2, plain(r["what"]).replace(", ", "\n", 1)))
        x += 0.6
    ax.axhline(30, color=GOAL, ls=":", lw=1.2)
    ax.text(-0.45, 30.6, "goal \u2264 +30 ms", fontsize=8, color=GOAL)
    ax.set_xticks([t[0] for t in ticks], [t[1] for t in ticks], fontsize=8)
    ax.set_ylabel("ms over a bare interpreter (baseline = 0)")
    ax.set_ylim(0, 55)
    tidy(ax)
    fig.suptitle("Worker start-up: wall time over a bare interpreter, one bar per run"
                 " (2026-11-28; lower is better)")  # fmt: skip
    return fig


def plot_log_capture(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    lines = [r for r in rows(b) if r["per"] == "line"]
    series = [("uncaptured (baseline)", [r["plain_us"] for r in lines], STYLE["base"]),
              ("captured", [r["captured_us"] for r in lines], STYLE["ours"])]  # fmt: skip
    xs = grouped(left, [plain(r["what"]) for r in lines], series, lambda v: f"{v:.2f}")
    for x, r in zip(xs[1], lines, strict=True):
        left.text(x, r["captured_us"] + 0.55, f"({r['ratio']:.2f}{X})", weight="bold", **SMALL)
    left.set_ylabel("\u00b5s per line (median)")
    left.set_ylim(0, max(r["captured_us"] for r in lines) * 1.35)
    left.legend(fontsize=8, loc="upper left")
    tidy(left, f"per line, 5,000 lines {X} 9 rounds")
    items = []
    for r in (r for r in rows(b) if r["per"] == "job"):
        if r["plain_us"] is not None:
            text = f"{r['plain_us']:g} \u00b5s"
            items.append((r["what"] + ", uncaptured", r["plain_us"], text, "base"))
        text = f"{r['captured_us']:g} \u00b5s"
        items.append((r["what"] + ", captured", r["captured_us"], text, "ours"))
    hbars(right, items, "\u00b5s per job (median, n=300)")
    tidy(right, "per job: begin, task, end with its final flush")
    fig.suptitle("Log capture: what it costs a task (2026-11-28; lower is better)")
    return fig


def plot_dashboard_reads(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4))
    items = ratio_items(rows(b), "read", "median_ms", " ms", fmt="{:,.2f}")
    hbars(ax, items, "median, ms (log scale)", log=True)
    tidy(ax, note="hatched: baseline")
    fig.suptitle("Dashboard reads over 20,000 jobs, 7 rounds (2026-11-28; lower is better)")
    return fig


def plot_fly(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4), width_ratios=[1.3, 1])
    calls = rows(b, 0)
    ys = list(range(len(calls)))[::-1]
    for dy, key, colour, name in [(0.18, "per_machine", BLUE, "calls per machine used"),
                                  (-0.18, "per_job", LIGHT_BLUE, "calls per job")]:  # fmt: skip
        left.barh([y + dy for y in ys], [r[key] for r in calls], 0.36, color=colour, label=name)
        for y, r in zip(ys, calls, strict=True):
            left.text(r[key], y + dy, f" {r[key]:.2f}", va="center", fontsize=8)
    left.axvline(1, color=GREY, ls="--", lw=1)
    left.text(1.02, -0.85, "1 = one create per machine", fontsize=8, color=GREY)
    left.set_ylim(-1, len(calls) - 0.4)
    left.set_yticks(ys, [plain(r["scenario"]) for r in calls], fontsize=8)
    left.set_xlim(0, 2.6)
    left.set_xlabel("Fly Machines API calls (counted by the emulator)")
    left.legend(fontsize=8, loc="upper right")
    tidy(left, "API calls, happy path and injected faults")
    items = ratio_items(rows(b, 1), "system", "median_ms", " ms")
    hbars(right, items, "median submit → result, ms", room=1.8)
    tidy(right, "a fresh machine per job, n=30", "hatched: baseline")
    fig.suptitle("Fly Machines API against the emulator (2026-11-28)")
    return fig


def plot_fly_scale(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 3.8))
    items = [(r["run"], r["makespan_s"], f"{r['makespan_s']:.2f} s  ({r['ratio']:.2f}{X} ideal)",
              "ours") for r in rows(b)]  # fmt: skip
    hbars(ax, items, "makespan, s")
    ax.axvline(20, color=GREY, ls="--", lw=1)
    ax.text(20, -0.75, " ideal 20 s (baseline)", fontsize=8, color=GREY)
    ax.axvline(24, color=GOAL, ls=":", lw=1.2)
    ax.text(24, len(items) - 0.55, f" goal \u2264 1.2{X} ideal", fontsize=8, color=GOAL)
    ax.set_ylim(-1, len(items) - 0.2)
    fig.suptitle("Fly scale: 10,000 jobs of 100 ms, max_machines=50, emulator"
                 " (2026-11-28; lower is better)")  # fmt: skip
    return fig


def plot_tls(plt: Any, b: Bench) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    data = [r for r in rows(b) if r["rt_connect"] is not None]
    series = [("connect + first command", [r["rt_connect"] for r in data], {"color": BLUE}),
              ("a command on an open connection", [r["rt_command"] for r in data],
               {"color": LIGHT_BLUE})]  # fmt: skip
    grouped(left, [r["endpoint"] for r in data], series, lambda v: f"{v:.2f}")
    left.set_ylabel("round trips (link delayed 10 ms each way)")
    left.set_ylim(0, 4)
    left.legend(fontsize=8, loc="upper left")
    tidy(left, "round trips: TLS costs per connection, not per command")
    items = [(r["endpoint"], r["submit_us"], f"{r['submit_us']:.0f} \u00b5s", kind(r))
             for r in rows(b) if r["submit_us"] is not None]  # fmt: skip
    hbars(right, items, "\u00b5s per submit (3,000 submits, no new connection)")
    tidy(right, "submit cost on loopback", "hatched: baseline (the same forwarder without TLS)")
    fig.suptitle("Redis over TLS (rediss://) against plain TCP (2026-12-06)")
    return fig


def plot_cluster(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.4))
    data = rows(b)
    series = [("one Valkey (baseline)", [r["single"] for r in data], STYLE["base"]),
              ("3-node cluster", [r["cluster"] for r in data], STYLE["ours"])]  # fmt: skip
    xs = grouped(ax, [plain(r["load"]) for r in data], series, lambda v: f"{v:,}")
    for i, r in enumerate(data):
        ax.annotate(f"{r['ratio']:.2f}{X}", (xs[1][i], r["cluster"]), xytext=(0, 13),
                    textcoords="offset points", weight="bold", **SMALL)  # fmt: skip
        ax.hlines(2 * r["single"], i, i + 0.4, color=GOAL, ls=":", lw=1.5,
                  label=f"goal: 2{X} one Valkey" if i == 0 else None)  # fmt: skip
    ax.set_ylabel("jobs/s (median of 3 rounds)")
    ax.set_ylim(0, max(2 * r["single"] for r in data) * 1.12)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Redis Cluster: 3 nodes vs one Valkey on the same 2 cores"
                 " (2026-12-06; goal not met)")  # fmt: skip
    return fig


def plot_chaos(plt: Any, b: Bench) -> Any:
    fig, ax = plt.subplots(figsize=(11, 3.8))
    data = {plain(r["what"]): r for r in rows(b)}
    runs = [c for c in b["tables"][0]["columns"] if c["key"] != "what"]
    parts = [("succeeded", BLUE), ("failed by design (task_error, timeout)", "#a0aec0"),
             ("failed killed (every attempt killed)", "#dd6b20")]  # fmt: skip
    ys = list(range(len(runs)))[::-1]
    for y, col in zip(ys, runs, strict=True):
        counts = [data[name][col["key"]] for name, _ in parts]
        left = 0.0
        for (name, colour), n in zip(parts, counts, strict=True):
            share = 100 * n / sum(counts)
            ax.barh(y, share, left=left, color=colour, label=name if y == ys[0] else None)
            if share > 4:
                ax.text(left + share / 2, y, f"{n:,}", ha="center", va="center", fontsize=8,
                        color="white" if colour == BLUE else "black")  # fmt: skip
            left += share
        lost = data["lost"][col["key"]]
        orphans = data["orphan machines after gc / processes left"][col["key"]]
        ax.text(101, y, f" lost {lost} \u00b7 orphans {orphans}", va="center", fontsize=9,
                weight="bold", color=GREEN if lost == orphans == 0 else GOAL)  # fmt: skip
    ax.set_yticks(ys, [c["head"] for c in runs])
    ax.set_xlim(0, 125)
    ax.set_xlabel("% of jobs (numbers in the bars: jobs)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.45, -0.2), ncol=3)
    tidy(ax)
    fig.suptitle("Chaos: machines killed, Fly API faults, a Redis restart"
                 " (2026-11-28; goal: lost = orphans = 0)")  # fmt: skip
    return fig


PLOTS: dict[str, Callable[[Any, Bench], Any]] = {
    "warm_latency": plot_warm_latency,
    "cold_job": plot_cold_job,
    "submit_throughput": plot_submit_throughput,
    "drain": plot_drain,
    "map_makespan": plot_map_makespan,
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
