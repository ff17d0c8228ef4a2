"""Warm job latency: submit -> result of a no-op while a worker is already waiting for it.

balloons (``LocalBackend``, machines forked; the pool's ``--isolation``, by default
``process``: each job in a child forked by the machine): a pool of one machine whose idle timeout
outlasts the run; an unmeasured first job launches the machine, which then waits idle
(``BLPOP`` on its pool's wake list) for the next job, and every measured job is taken by it
(checked afterwards: every attempt ran on that one machine, none launched another).

Peers, each with its worker process already running, against a Valkey of its own:
RQ ``SimpleWorker`` (runs the job in the worker process; result waited for with
``job.latest_result(timeout=...)``, a blocking read) and Celery prefork (``-c 1``; Redis as
broker and result backend; ``AsyncResult.get()`` over pub/sub). Jobs run one at a time and
the systems take turns job by job. Ratios are against Celery.

    .venv/bin/python bench/warm_latency.py [--n 300] [--warmup 20] [--celery-c 1] [--profile]

``--profile`` adds the client's split (submit vs waiting for the result) and Valkey's own
work per balloons job (``INFO commandstats``). Every run prints the CPU time a balloons job
costs each side: the client's (``time.process_time`` around its submit and result) and the
machine's (its process's, from ``/proc``, over the measured jobs).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _balloons_tasks
from _common import (
    SECRET,
    header,
    machine_pids,
    machines_of,
    ms,
    p95,
    process_cpu,
    server_profile,
    shutdown_local,
    stop_machines,
    table,
    temp_state_dir,
    valkey_server,
)
from _peers import CeleryPeer, RQPeer

import balloons

POOL = "warm"


class BalloonsWarm:
    label = "balloons warm machine"

    def __init__(self, url: str, state: Path, idle: float, isolation: str) -> None:
        self.url = url
        self.label = f"balloons warm machine ({isolation})"
        self.backend = balloons.LocalBackend(start="fork")
        self.app = balloons.App(redis_url=url, secret=SECRET, backend=self.backend, state_dir=state)
        self.app.pool(POOL, max_machines=1, idle_timeout=idle, isolation=isolation)
        self.task = self.app.task(timeout=60, pool=POOL)(_balloons_tasks.noop.fn)
        self.jobs: list[balloons.Job[None]] = []
        self.split: list[tuple[float, float]] = []  # (submit, wait for the result)
        self.cpu = 0.0  # the client's CPU seconds in its submits and results

    def one(self) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        job = self.task.submit()
        t1 = time.perf_counter()
        job.result(timeout=60)
        self.split.append((t1 - t0, time.perf_counter() - t1))
        self.cpu += time.process_time() - c0
        self.jobs.append(job)

    def close(self) -> None:
        stop_machines(self.backend)
        shutdown_local(self.backend)
        self.app.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="measured jobs per system (>= 200)")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured jobs per system first")
    ap.add_argument("--celery-c", type=int, default=1, help="Celery prefork concurrency")
    ap.add_argument("--idle", type=float, default=600.0, help="the pool's idle timeout (s)")
    ap.add_argument("--profile", action="store_true", help="Valkey commandstats per job")
    ap.add_argument(
        "--isolation",
        default="process",
        choices=("process", "none"),
        help="the pool's isolation (default: process, a fresh process per job)",
    )
    args = ap.parse_args()

    import celery
    import rq

    print(header("warm job latency: submit -> result of a no-op, a worker already waiting"))
    print(
        f"rq {rq.__version__}, celery {celery.__version__}; n={args.n} per system, "
        f"warm-up {args.warmup}, taking turns job by job\n"
    )

    with contextlib.ExitStack() as stack:
        state = stack.enter_context(temp_state_dir())
        bal = BalloonsWarm(stack.enter_context(valkey_server()), state, args.idle, args.isolation)
        stack.callback(bal.close)
        celery_peer = CeleryPeer(stack.enter_context(valkey_server()), args.celery_c)
        rq_peer = RQPeer(stack.enter_context(valkey_server()), 1, "simple")
        for peer in (celery_peer, rq_peer):
            stack.callback(peer.stop)
            peer.start()
        runners: dict[str, Callable[[], None]] = {
            bal.label: bal.one,
            rq_peer.label: rq_peer.one,
            celery_peer.label: celery_peer.one,
        }
        for _ in range(args.warmup):
            for run in runners.values():
                run()
        stats = bal.app.store.pool_stats(POOL)
        if stats["machines"] != 1:
            raise RuntimeError(f"expected one warm machine before measuring, found {stats}")
        warm_machines, _ = machines_of(bal.jobs[-1:])
        bal.jobs.clear(), bal.split.clear()
        bal.cpu = 0.0
        pids = machine_pids(bal.backend)
        machine_cpu = process_cpu(pids[0]) if len(pids) == 1 else None
        samples: dict[str, list[float]] = {label: [] for label in runners}
        for _ in range(args.n):
            for label, run in runners.items():
                t0 = time.perf_counter()
                run()
                samples[label].append(time.perf_counter() - t0)
        if machine_cpu is not None:
            machine_cpu = process_cpu(pids[0]) - machine_cpu
        machines, retries = machines_of(bal.jobs)
        cold = sum(1 for j in bal.jobs for a in j.info().attempts if not a.warm)
        if args.profile:
            k = min(args.n, 500)
            server_profile(bal.url, "balloons warm job", lambda: [bal.one() for _ in range(k)], k)

    base = statistics.median(samples[celery_peer.label])
    rows = []
    for label, xs in samples.items():
        med = statistics.median(xs)
        rows.append(
            [
                label,
                ms(med),
                ms(p95(xs)),
                ms(min(xs)),
                ms(statistics.fmean(xs)),
                f"{med / base:.2f}x",
            ]
        )
    print(table(["system", "median ms", "p95 ms", "min ms", "mean ms", "median / celery"], rows))
    print()
    sub = [s for s, _ in bal.split]
    wait = [w for _, w in bal.split]
    print(
        f"balloons split (median): submit {statistics.median(sub) * 1e6:.0f} us, "
        f"result wait {statistics.median(wait) * 1e6:.0f} us; "
        f"machines that ran the measured jobs: {len(machines)} "
        f"(the warm one: {machines == warm_machines}), attempts not taken warm: {cold}, "
        f"retries: {retries}"
    )
    machine = f"{machine_cpu / args.n * 1e6:.0f} us" if machine_cpu is not None else "unknown"
    print(
        f"balloons CPU per job: client {bal.cpu / args.n * 1e6:.0f} us (submit and result), "
        f"machine {machine} (its process, idle waits included)"
    )
    bm = statistics.median(samples[bal.label])
    verdict = "met" if bm <= base else "NOT met"
    print(f"balloons / {celery_peer.label}: {bm / base:.2f}x  (target <= 1.00x: {verdict})")
    print(f"balloons / {rq_peer.label}: {bm / statistics.median(samples[rq_peer.label]):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
