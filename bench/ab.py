"""A/B: the same benchmark for two versions of balloons, interleaved in many short rounds.

On a shared machine the noise between two runs (other processes, frequency, cache) is larger
than the differences worth measuring, so one long run per version compares the machine's
moods more than the code. Here each side is one process (``_ab_probe.py``) importing balloons
from its own checkout (``PYTHONPATH=CHECKOUT/src``, compiled first), with its own Valkey and,
for ``warm``, its own warm machine, set up once. The sides then take turns: round after round,
each runs ``--k`` jobs (A then B, B then A in the next round), so both see the same load. Each
round gives one ratio B / A of that round's figures (the median latency, or the seconds per
submit); the result is the median of those ratios with a bootstrap 95% interval (the rounds
resampled), with the load average seen during the rounds.

A side is a git revision (its ``src/`` exported to a cache directory and compiled there) or a
directory holding ``src/balloons`` (compiled in place). ``--pin C,S`` puts the probes on CPU C
and their Valkey servers (and, for ``warm``, the fork server and machines) on CPU S.

    .venv/bin/python bench/ab.py --a 877f087 --b . --b-isolation none --bench warm
    .venv/bin/python bench/ab.py --a 2254679 --b . --bench launch,queued,ping --k 1000
    .venv/bin/python bench/ab.py --a . --b .            # A/A: what the method calls noise

Benchmarks (``--bench``, comma-separated): ``warm`` (submit -> result of a no-op on an idle
warm machine, ``warm_latency.py``), ``launch`` and ``queued`` (``task.submit()``'s two paths,
``submit_throughput.py``), ``ping`` (a redis-py round trip: a control, the same code on both
sides). ``--budget 1.05`` says whether the interval's upper end is within 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from _common import BENCH_DIR, REPO_ROOT, header, table

CACHE = Path(tempfile.gettempdir()) / "balloons-ab"


def git(*args: str, cwd: Path = REPO_ROOT) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip()}")
    return out.stdout.strip()


@dataclass
class Checkout:
    """Where a side's balloons is, and what it is (a commit, ``+dirty`` for local changes)."""

    spec: str
    src: Path
    commit: str


def checkout(spec: str, python: str) -> Checkout:
    path = Path(spec)
    if (path / "src" / "balloons").is_dir():
        commit = git("rev-parse", "--short=7", "HEAD", cwd=path)
        if git("status", "--porcelain", "--untracked-files=no", "--", "src", cwd=path):
            commit += "+dirty"
        src = path.resolve() / "src"
    else:
        commit = git("rev-parse", "--short=7", f"{spec}^{{commit}}")
        src = CACHE / commit / "src"
        if not (src / "balloons").is_dir():
            dest = CACHE / commit
            dest.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(
                ["git", "archive", commit, "src"], cwd=REPO_ROOT, capture_output=True, check=True
            )
            tmp = dest / "src.tar"
            tmp.write_bytes(archive.stdout)
            with tarfile.open(tmp) as tar:
                tar.extractall(dest, filter="data")
            tmp.unlink()
    subprocess.run([python, "-m", "compileall", "-q", str(src)], check=True)
    return Checkout(spec, src, commit)


@dataclass
class Probe:
    name: str
    co: Checkout
    proc: subprocess.Popen[str]
    log: IO[bytes]
    ready: dict[str, Any] = field(default_factory=dict)

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.log.flush()
                err = Path(self.log.name).read_text(errors="replace")[-3000:]
                raise SystemExit(f"side {self.name} ({self.co.spec}) stopped:\n{err}")
            if line.startswith("{"):
                return dict(json.loads(line))

    def run(self, bench: str, k: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"bench": bench, "k": k}) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start(name: str, co: Checkout, python: str, opts: dict[str, Any], logdir: Path) -> Probe:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(co.src), str(BENCH_DIR)])
    log = open(logdir / f"{name}.log", "wb")  # noqa: SIM115 (Probe.close closes it)
    proc = subprocess.Popen(
        [python, str(BENCH_DIR / "_ab_probe.py"), json.dumps(opts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    probe = Probe(name, co, proc, log)
    probe.ready = probe.read()["ready"]
    where = Path(probe.ready["balloons"])
    if where != co.src / "balloons":
        probe.close()
        raise SystemExit(f"side {name} imported balloons from {where}, not {co.src / 'balloons'}")
    return probe


def median_interval(
    ratios: Sequence[float], n: int = 10_000, seed: int = 1
) -> tuple[float, float, float]:
    """The median of ``ratios`` and its bootstrap 95% interval (percentile method)."""
    rng = random.Random(seed)
    k = len(ratios)
    meds = sorted(statistics.median(rng.choices(ratios, k=k)) for _ in range(n))
    return statistics.median(ratios), meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def verdict(lo: float, hi: float, budget: float | None) -> str:
    if budget is None:
        return ""
    if hi <= budget:
        return f"within {budget:.2f}x"
    if lo > budget:
        return f"ABOVE {budget:.2f}x"
    return f"undecided at {budget:.2f}x"


UNIT = {"warm": ("median ms", 1e3), "ping": ("us/call", 1e6)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="the baseline: a git revision or a checkout")
    ap.add_argument("--b", required=True, help="the version compared: a revision or a checkout")
    ap.add_argument("--bench", default="warm", help="warm, launch, queued, ping (comma list)")
    ap.add_argument("--rounds", type=int, default=30, help="alternations (each: A and B once)")
    ap.add_argument("--k", type=int, default=0, help="jobs per side per round (0: per bench)")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--isolation", default=None, help="the pools' isolation, both sides")
    ap.add_argument("--a-isolation", default=None, help="side A's pool isolation")
    ap.add_argument("--b-isolation", default=None, help="side B's pool isolation")
    ap.add_argument("--pin", default=None, help="C,S: probes on CPU C, servers/machines on S")
    ap.add_argument(
        "--no-spin", action="store_true", help="submits sleep for their reply (CPU = work)"
    )
    ap.add_argument("--budget", type=float, default=None, help="the ratio allowed, e.g. 1.05")
    ap.add_argument("--python", default=sys.executable, help="interpreter of both sides")
    ap.add_argument("--json", type=Path, default=None, help="write every round's figures here")
    args = ap.parse_args()
    benches = [b.strip() for b in args.bench.split(",") if b.strip()]
    ks = {b: args.k or {"warm": 200, "ping": 2000}.get(b, 1000) for b in benches}
    pins: dict[str, int | None] = {"client_cpu": None, "server_cpu": None, "machine_cpu": None}
    if args.pin:
        c, s = (int(x) for x in args.pin.split(","))
        pins = {"client_cpu": c, "server_cpu": s, "machine_cpu": s}

    print(header(f"A/B: {', '.join(benches)}, {args.rounds} interleaved rounds"))
    sides = {"A": checkout(args.a, args.python), "B": checkout(args.b, args.python)}
    isolation = {"A": args.a_isolation or args.isolation, "B": args.b_isolation or args.isolation}
    for name, co in sides.items():
        print(f"{name}: {co.spec} = {co.commit} ({co.src}), isolation {isolation[name] or '-'}")
    print(f"k per round: {ks}; pinning: {args.pin or 'none'}\n")

    rows: dict[str, list[dict[str, Any]]] = {b: [] for b in benches}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="balloons-ab-") as logdir:
        probes: dict[str, Probe] = {}
        try:
            for name, co in sides.items():
                opts = {"benches": benches, "warmup": args.warmup, "no_spin": args.no_spin, **pins}
                opts["isolation"] = isolation[name]
                probes[name] = start(name, co, args.python, opts, Path(logdir))
            t0 = time.monotonic()
            for r in range(args.rounds):
                loads.append(os.getloadavg()[0])
                order = ("A", "B") if r % 2 == 0 else ("B", "A")
                for bench in benches:
                    got = {name: probes[name].run(bench, ks[bench]) for name in order}
                    rows[bench].append({"round": r, "order": "".join(order), **got})
            loads.append(os.getloadavg()[0])
            elapsed = time.monotonic() - t0
        finally:
            for probe in probes.values():
                probe.close()

    report: dict[str, Any] = {
        "sides": {
            n: {"spec": c.spec, "commit": c.commit, "isolation": isolation[n]}
            for n, c in sides.items()
        },
        "rounds": args.rounds,
        "k": ks,
        "pin": args.pin,
        "load": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "benches": {},
    }
    out = []
    for bench in benches:
        label, scale = UNIT.get(bench, ("us/submit", 1e6))
        measures = [("wall", "value", label, scale)]
        if bench != "ping":
            measures.append(("client CPU", "client_cpu", "us/op", 1e6))
        if bench == "warm":
            measures.append(("machine CPU", "machine_cpu_total", "ms/round", 1e3))
        report["benches"][bench] = {}
        for what, field_, unit, sc in measures:
            got = rows[bench]
            ratios = [row["B"][field_] / row["A"][field_] for row in got if row["A"][field_] > 0]
            med, lo, hi = median_interval(ratios)
            a = statistics.median(row["A"][field_] for row in got) * sc
            b = statistics.median(row["B"][field_] for row in got) * sc
            budget = verdict(lo, hi, args.budget) if what == "wall" else ""
            out.append(
                [
                    bench,
                    what,
                    unit,
                    f"{a:.3g}",
                    f"{b:.3g}",
                    f"**{med:.3f}x**",
                    f"{lo:.3f}-{hi:.3f}",
                    budget,
                ]
            )
            report["benches"][bench][what] = {
                "median_ratio": round(med, 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "a": round(a, 4),
                "b": round(b, 4),
                "unit": unit,
                "ratios": [round(x, 4) for x in ratios],
            }
    print()
    print(table(["bench", "measure", "unit", "A", "B", "B / A", "95% interval", "budget"], out))
    ld = report["load"]
    print(
        f"\n{args.rounds} rounds in {elapsed:.0f} s; load average (1 min) "
        f"{ld['min']:.1f}-{ld['max']:.1f} (median {ld['median']:.1f}); "
        f"A = {sides['A'].commit}, B = {sides['B'].commit}"
    )
    if args.json:
        report["rows"] = rows
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
