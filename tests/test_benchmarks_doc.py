"""BENCHMARKS.md tells the figures of bench/results.json, and the links to it lead somewhere.

The tables of BENCHMARKS.md are written by bench/plots.py from bench/results.json; these tests
fail when a table is edited by hand, a plot is missing, or a link to a section of
BENCHMARKS.md names no heading.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _plots() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_plots", ROOT / "bench" / "plots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_of_benchmarks_md_is_made_from_results_json() -> None:
    assert _plots().check() == []


def test_a_figure_edited_by_hand_is_caught() -> None:
    plots = _plots()
    doc = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    cold = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    fork = cold["benchmarks"]["cold_job"]["tables"][0]["rows"][0]
    shown = f"| {fork['median_ms']:.2f} ms |"
    assert shown in doc
    problems = plots.check(doc=doc.replace(shown, "| 7.01 ms |", 1))
    assert problems == [
        "the cold_job block of BENCHMARKS.md differs from bench/results.json "
        "(edit the data file, then run bench/plots.py)"
    ]


def test_a_benchmark_without_its_block_or_plot_is_caught(tmp_path: Path) -> None:
    plots = _plots()
    data = plots.load()
    data["benchmarks"]["cold_job"]["png"] = "docs/bench-no-such-plot.png"
    doc = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    doc = re.sub(r"<!-- results:drain -->\n.*?<!-- /results -->", "", doc, flags=re.S)
    problems = plots.check(doc=doc, data=data)
    assert "BENCHMARKS.md has no <!-- results:drain --> block" in problems
    assert "cold_job: docs/bench-no-such-plot.png is missing (run bench/plots.py)" in problems
    assert "cold_job: BENCHMARKS.md does not show docs/bench-no-such-plot.png" in problems


def test_every_plot_in_docs_belongs_to_a_benchmark() -> None:
    data = _plots().load()
    made = {b["png"] for b in data["benchmarks"].values() if b["png"]}
    on_disk = {f"docs/{p.name}" for p in (ROOT / "docs").glob("bench-*.png")}
    assert on_disk == made


def test_links_to_benchmarks_md_and_its_sections_lead_somewhere() -> None:
    """Every link in the benchmark docs, and every link elsewhere to BENCHMARKS.md or one of
    its sections, reaches a file and a heading that exist."""
    plots = _plots()
    bench = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    anchors = {plots.slug(h) for h in re.findall(r"^#+ (.+)$", bench, re.M)}
    ours = {ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md"}
    docs = [*ours, ROOT / "README.md", ROOT / "ARCHITECTURE.md", *(ROOT / "docs").glob("*.md")]
    checked = 0
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            where = (doc.parent / path).resolve() if path else doc
            if doc not in ours and where.name != "BENCHMARKS.md":
                continue
            assert where.exists(), f"{doc.name} links to {target}, which does not exist"
            if anchor and where.name == "BENCHMARKS.md":
                assert anchor in anchors, f"{doc.name} links to {target}: no such section"
            checked += 1
    assert checked > 20
