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


def write_plots(data: dict[str, Any], only: list[str] | None) -> None:
    import _figures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 11, "savefig.dpi": 110})
    for name, bench in data["benchmarks"].items():
        if not bench.get("png") or (only and name not in only):
            continue
        fig = _figures.PLOTS[name](plt, bench)
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
