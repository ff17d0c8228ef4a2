"""Cold job latency: submit -> result of a no-op task, a fresh process per job.

Compares, in one run and against one private Valkey server:

* balloons ``LocalBackend(start="fork")``: the fork server forks a child per job;
* balloons ``LocalBackend(start="exec")``: the child execs a fresh interpreter;
* RQ ``Worker``: a long-running worker that forks a work horse per job;
* RQ ``SpawnWorker`` (if the installed RQ has it): ``posix_spawn`` of a fresh interpreter.

Latency is measured from just before ``submit``/``enqueue`` to the moment the caller holds
the result: balloons ``job.result()`` (blocks on the job's done list, no polling), RQ
``job.latest_result(timeout=...)`` (blocks with ``XREAD BLOCK`` on the result stream, no
polling). Jobs run one at a time; the systems are interleaved round by round so that
machine noise hits them alike. Ratios are against the RQ fork worker of the same run.

    .venv/bin/python bench/cold_job.py [--n 50] [--warmup 5] [--no-exec] [--no-spawn]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import _balloons_tasks
import _rq_tasks
from _common import (
    BENCH_DIR,
    SECRET,
    header,
    ms,
    p90,
    shutdown_local,
    stop_process_group,
    table,
    temp_state_dir,
    valkey_server,
    wait_pool_empty,
)

import balloons

RQ_WORKER = """
import logging, sys
from redis import Redis
from rq import Queue
import rq.worker as w
cls = {"fork": w.Worker, "spawn": getattr(w, "SpawnWorker", None)}[sys.argv[1]]
conn = Redis.from_url(sys.argv[2])
worker = cls([Queue(sys.argv[3], connection=conn)], connection=conn)
worker.work(logging_level="WARNING", with_scheduler=False)
"""

Runner = Callable[[], float]
COLD_POOL = "cold"


def balloons_runner(app: balloons.App, isolation: str) -> Runner:
    # A pool that scales to zero at once, and each job submitted only once the previous
    # machine has exited (not timed): every job gets a fresh machine, never a warm one.
    app.pool(COLD_POOL, max_machines=1, idle_timeout=0, isolation=isolation)
    task = app.task(timeout=60, pool=COLD_POOL)(_balloons_tasks.noop.fn)

    def run() -> float:
        wait_pool_empty(app, COLD_POOL)
        t0 = time.perf_counter()
        job = task.submit()
        job.result(timeout=60)
        dt = time.perf_counter() - t0
        if any(a.warm for a in job.info().attempts):
            raise RuntimeError(f"job {job.id} ran on a warm machine: not a cold job")
        return dt

    return run


def start_rq_worker(kind: str, url: str, queue: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), env.get("PYTHONPATH", "")]).rstrip(":")
    return subprocess.Popen(
        [sys.executable, "-c", RQ_WORKER, kind, url, queue],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def rq_runner(url: str, queue_name: str) -> Runner:
    from redis import Redis
    from rq import Queue

    queue = Queue(queue_name, connection=Redis.from_url(url))

    def run() -> float:
        t0 = time.perf_counter()
        job = queue.enqueue(_rq_tasks.noop)
        res = job.latest_result(timeout=60)
        dt = time.perf_counter() - t0
        if res is None or res.type != res.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ job {job.id} did not succeed: {res!r}")
        return dt

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50, help="measured jobs per system (>= 30)")
    ap.add_argument("--warmup", type=int, default=5, help="unmeasured jobs per system first")
    ap.add_argument("--no-exec", action="store_true", help="skip balloons isolation=exec")
    ap.add_argument("--no-spawn", action="store_true", help="skip RQ SpawnWorker")
    ap.add_argument(
        "--isolation",
        default="machine",
        choices=("machine", "process", "none"),
        help="the pool's isolation (default: machine, a machine per job)",
    )
    args = ap.parse_args()

    import rq
    import rq.worker

    has_spawn = hasattr(rq.worker, "SpawnWorker") and not args.no_spawn
    print(header("cold job: submit -> result of a no-op, one fresh process per job"))
    print(f"rq {rq.__version__}; n={args.n} per system, warm-up {args.warmup}\n")

    workers: list[subprocess.Popen[bytes]] = []
    backends: list[balloons.LocalBackend] = []
    with valkey_server() as url, temp_state_dir() as state:
        try:
            runners: dict[str, Runner] = {}
            first_launch: dict[str, float] = {}
            for iso in ("fork", "exec") if not args.no_exec else ("fork",):
                backend = balloons.LocalBackend(start=iso)
                backends.append(backend)
                # One state dir per app, so each first job pays for starting a fork server.
                app = balloons.App(
                    redis_url=url, secret=SECRET, backend=backend, state_dir=state / iso
                )
                label = f"balloons {iso}"
                runners[label] = balloons_runner(app, args.isolation)
                first_launch[label] = runners[label]()
            for kind in ["fork", *(["spawn"] if has_spawn else [])]:
                label = "rq Worker (fork)" if kind == "fork" else "rq SpawnWorker"
                t0 = time.perf_counter()
                workers.append(start_rq_worker(kind, url, f"bench-{kind}"))
                runners[label] = rq_runner(url, f"bench-{kind}")
                runners[label]()
                first_launch[label] = time.perf_counter() - t0
            for _ in range(args.warmup):
                for run in runners.values():
                    run()
            samples: dict[str, list[float]] = {label: [] for label in runners}
            for _ in range(args.n):
                for label, run in runners.items():
                    samples[label].append(run())
        finally:
            for backend in backends:
                shutdown_local(backend)
            for proc in workers:
                stop_process_group(proc)

    base = statistics.median(samples["rq Worker (fork)"])
    rows = []
    for label, xs in samples.items():
        med = statistics.median(xs)
        rows.append(
            [
                label,
                ms(med),
                ms(p90(xs)),
                ms(min(xs)),
                ms(first_launch[label]),
                f"{med / base:.2f}x",
            ]
        )
    print(f"balloons: the pool's isolation is {args.isolation!r}")
    print(
        table(
            ["system", "median ms", "p90 ms", "min ms", "first job ms", "median / rq fork"],
            rows,
        )
    )
    print()
    fork = statistics.median(samples["balloons fork"])
    print(f"balloons fork / rq Worker (fork): {fork / base:.2f}x  (target <= 1.00x)")
    if "balloons exec" in samples and "rq SpawnWorker" in samples:
        ex = statistics.median(samples["balloons exec"])
        sp = statistics.median(samples["rq SpawnWorker"])
        print(f"balloons exec / rq SpawnWorker:   {ex / sp:.2f}x")
    print(
        "first job ms: balloons = first submit with a fresh state dir (starts the fork "
        "server); rq = starting the worker process + its first job."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
