"""Bulk submit throughput: jobs/s of ``task.submit_many`` against RQ's ``Queue.enqueue_many``.

Both store N no-op jobs in one call, in pipelined batches, on the same Valkey server, one
after the other in alternating rounds so that machine noise hits them alike. balloons runs
with a backend whose ``launch`` returns at once and a pool of 4 machines, so the first four
jobs get slots (four launch calls) and the rest wait in the pool's queue, as a ``map`` over a
pool of 4 does; nothing consumes RQ's queue. ``task.submit()`` in a loop is shown beside them
(one round trip per job). Each round starts from an empty database.

    .venv/bin/python bench/submit_many.py [--n 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _balloons_tasks
import _rq_tasks
from _common import SECRET, ManualBackend, header, table, temp_state_dir, valkey_server

import balloons

Run = Callable[[int], float]


def balloons_runs(url: str, state_dir: Path) -> dict[str, Run]:
    app = balloons.App(
        redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state_dir
    )
    app.pool("bench-many", max_machines=4)
    task = app.task(timeout=60, pool="bench-many")(_balloons_tasks.noop.fn)

    def many(n: int) -> float:
        calls = [()] * n
        t0 = time.perf_counter()
        jobs = task.submit_many(calls)
        dt = time.perf_counter() - t0
        assert len(jobs) == n
        return dt

    def loop(n: int) -> float:
        submit = task.submit
        t0 = time.perf_counter()
        for _ in range(n):
            submit()
        return time.perf_counter() - t0

    return {"balloons submit_many": many, "balloons submit() loop": loop}


def rq_run(url: str) -> Run:
    from redis import Redis
    from rq import Queue

    queue = Queue("bench-many", connection=Redis.from_url(url))

    def many(n: int) -> float:
        t0 = time.perf_counter()
        data = [Queue.prepare_data(_rq_tasks.noop) for _ in range(n)]
        jobs = queue.enqueue_many(data)
        dt = time.perf_counter() - t0
        assert len(jobs) == n
        return dt

    return many


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="jobs per call")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = ap.parse_args()

    import redis
    import rq

    print(header("bulk submit: N no-op jobs stored in one call"))
    print(f"rq {rq.__version__}; n={args.n} per call, {args.rounds} rounds\n")
    rates: dict[str, list[float]] = {}
    with valkey_server() as url, temp_state_dir() as state:
        systems = {**balloons_runs(url, state), "rq enqueue_many": rq_run(url)}
        flush = redis.Redis.from_url(url)
        for run in systems.values():  # warm up: connections, scripts, imports
            run(200)
        for r in range(args.rounds):
            order = list(systems.items())
            if r % 2:
                order.reverse()
            for label, run in order:
                flush.flushall()
                rates.setdefault(label, []).append(args.n / run(args.n))
        flush.close()
    base = statistics.median(rates["rq enqueue_many"])
    rows = [
        [
            label,
            f"{statistics.median(xs):,.0f}",
            f"{min(xs):,.0f}-{max(xs):,.0f}",
            f"{statistics.median(xs) / base:.2f}x",
        ]
        for label, xs in rates.items()
    ]
    print(table(["system", "jobs/s (median)", "range", "/ rq enqueue_many"], rows))
    many = statistics.median(rates["balloons submit_many"])
    print(f"\nballoons submit_many: {many:,.0f} jobs/s (goal >= 20,000 jobs/s), "
          f"{many / base:.2f}x rq enqueue_many")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
