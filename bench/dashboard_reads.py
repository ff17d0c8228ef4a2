"""What the dashboard's reads cost against the plain recent-jobs listing, over many jobs.

Stores ``--n`` job records (a backend that launches nothing; half of them then marked
SUCCEEDED with run times, a tenth FAILED), then times, interleaved round by round:

* baseline: ``app.jobs(limit=50)``, the listing ``balloons jobs`` used before filters;
* ``find_jobs`` page 1 (what the jobs page and ``balloons jobs`` read);
* ``find_jobs`` with a filter nothing matches (a scan of the newest ``SCAN_LIMIT`` per pool);
* ``pool_summaries`` (the pools page, ``balloons pools``);
* one ``/metrics`` scrape (every job kept, up to ``METRICS_SCAN_LIMIT`` per pool), without and
  with the cost figures (which read every job's attempts too);
* the cost page's report (``app.costs()``: its own scan plus the attempts).

    .venv/bin/python bench/dashboard_reads.py [--n 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import _balloons_tasks
from _common import SECRET, ManualBackend, header, ms, table, temp_state_dir, valkey_server

import balloons
from balloons.dashboard.metrics import exposition, registry_for
from balloons.listing import SCAN_LIMIT, Filters, find_jobs, pool_summaries


def prepare(app: balloons.App, n: int) -> None:
    task = app.task(timeout=60)(_balloons_tasks.noop.fn)
    ids = [task.submit().id for _ in range(n)]
    r = app.store.redis
    pipe = r.pipeline(transaction=False)
    now = time.time()
    for i, jid in enumerate(ids):
        key = app.store.keys(jid).job
        if i % 10 == 0:
            pipe.hset(key, mapping={"status": "FAILED", "reason": "task_error"})
        elif i % 2 == 0:
            pipe.hset(key, mapping={"status": "SUCCEEDED", "started": now, "finished": now + i % 7})
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(header(f"dashboard reads over {args.n:,} jobs, {args.rounds} rounds"))
    with valkey_server() as url, temp_state_dir() as state:
        app = balloons.App(
            redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state
        )
        prepare(app, args.n)
        store = app.store
        registry = registry_for(store)
        with_cost = registry_for(store, app)
        cases: dict[str, Callable[[], object]] = {
            "app.jobs(limit=50) (baseline)": lambda: app.jobs(limit=50),
            "find_jobs page 1": lambda: find_jobs(store, Filters()),
            f"find_jobs, no match (scans {min(args.n, SCAN_LIMIT):,})": lambda: find_jobs(
                store, Filters(status=balloons.JobStatus.CANCELLED)
            ),
            f"pool_summaries (scans {min(args.n, SCAN_LIMIT):,})": lambda: pool_summaries(store),
            f"/metrics scrape (reads {args.n:,})": lambda: exposition(registry),
            "/metrics scrape with cost (+ attempts)": lambda: exposition(with_cost),
            "cost page (app.costs())": app.costs,
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["app.jobs(limit=50) (baseline)"])
        rows = []
        for name, xs in times.items():
            med = statistics.median(xs)
            rows.append([name, ms(med), f"{med / base:.2f}x"])
        print(table(["read", "median ms", "vs baseline"], rows))
        app.close()


if __name__ == "__main__":
    main()
