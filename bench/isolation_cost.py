"""Isolation cost: what one machine spends per job draining a full queue, by the pool's isolation.

N no-op jobs are queued in a pool of one machine (the backend launches nothing); then one
machine process (``balloons.machine.worker.main``, started after importing what the local fork
server imports, as a local machine has it) drains them. Per job: wall time, CPU of the machine's
own process and of its children (the forked job processes, ``isolation="process"``), their minor
page faults, and Valkey's CPU (``INFO cpu``). The isolations take turns, round by round.

    .venv/bin/python bench/isolation_cost.py [--n 1000] [--rounds 3] [--isolation process,none]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import _balloons_tasks
from _common import BENCH_DIR, SECRET, ManualBackend, header, table, temp_state_dir, valkey_server

import balloons
from balloons.store.resp import RespClient

MACHINE = r"""
import json, os, resource, sys, time
import balloons.backends.forkserver  # what a local machine's process has imported
from balloons.machine import worker
t0 = time.perf_counter()
code = worker.main()
dt = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
os.write(3, json.dumps({
    "code": code, "wall": dt,
    "cpu": me.ru_utime + me.ru_stime, "user": me.ru_utime, "sys": me.ru_stime,
    "kids_cpu": kids.ru_utime + kids.ru_stime, "kids_user": kids.ru_utime,
    "kids_sys": kids.ru_stime, "faults": me.ru_minflt, "kids_faults": kids.ru_minflt,
}).encode())
sys.exit(0)
"""


def valkey_cpu(client: RespClient) -> float:
    info = client.execute("INFO", "cpu").decode()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


def one_round(
    url: str, task: balloons.Task[[], None], isolation: str, n: int, src: str = ""
) -> dict[str, float]:
    jobs = [task.submit() for _ in range(n)]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([*([src] if src else []), str(BENCH_DIR)]),
        "BALLOONS_JOB": f"{jobs[0].id}/1",
        "BALLOONS_REDIS_URL": url,
        "BALLOONS_SECRET": SECRET,
        "BALLOONS_MACHINE_ID": "0123456789abcd",
    }
    r, w = os.pipe()
    os.dup2(w, 3)
    os.set_inheritable(3, True)
    probe = RespClient(url)
    before = valkey_cpu(probe)
    proc = subprocess.Popen(
        [sys.executable, "-c", MACHINE],
        env=env,
        pass_fds=(3,),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(3)
    os.close(w)
    proc.wait()
    server = valkey_cpu(probe) - before
    probe.close()
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    stats = json.loads(out)
    done = sum(1 for j in jobs if j.status() is balloons.JobStatus.SUCCEEDED)
    if done != n:
        raise RuntimeError(f"{isolation}: {done}/{n} jobs succeeded (exit {stats['code']})")
    stats["valkey"] = server
    return {k: float(v) / n for k, v in stats.items() if k != "code"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="jobs per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--isolation", default="process,none")
    ap.add_argument(
        "--against",
        default="",
        help="another checkout's src/ directory: its machines run too, taking turns (A/B)",
    )
    args = ap.parse_args()
    isolations = [i for i in args.isolation.split(",") if i]
    srcs = {"": "this code", **({args.against: args.against} if args.against else {})}
    runs = [(iso, src) for iso in isolations for src in srcs]
    print(header(f"isolation cost: one machine drains {args.n} queued no-op jobs"))
    print(f"load average {os.getloadavg()[0]:.1f}\n")
    samples: dict[str, list[dict[str, float]]] = {}
    with valkey_server() as url, temp_state_dir() as state:
        app = balloons.App(
            redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state
        )
        tasks = {}
        for iso in isolations:
            app.pool(f"iso-{iso}", max_machines=1, idle_timeout=0, isolation=iso)
            tasks[iso] = app.task(timeout=60, pool=f"iso-{iso}")(_balloons_tasks.noop.fn)
        for _ in range(args.rounds):
            for iso, src in runs:
                label = f"{iso}, {srcs[src]}"
                samples.setdefault(label, []).append(one_round(url, tasks[iso], iso, args.n, src))
        app.close()

    def med(iso: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[iso])

    rows = []
    for iso in samples:
        rows.append(
            [
                iso,
                f"{1 / med(iso, 'wall'):,.0f}",
                f"{med(iso, 'wall') * 1e6:,.0f}",
                f"{med(iso, 'cpu') * 1e6:,.0f}",
                f"{med(iso, 'kids_cpu') * 1e6:,.0f}",
                f"{med(iso, 'kids_sys') * 1e6:,.0f}",
                f"{med(iso, 'valkey') * 1e6:,.0f}",
                f"{med(iso, 'faults'):,.0f}",
                f"{med(iso, 'kids_faults'):,.0f}",
            ]
        )
    print(
        table(
            [
                "isolation",
                "jobs/s",
                "wall us/job",
                "machine CPU us/job",
                "children CPU us/job",
                "(of which sys)",
                "Valkey CPU us/job",
                "machine faults/job",
                "children faults/job",
            ],
            rows,
        )
    )
    print(f"\nmedian of {args.rounds} rounds; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
