"""Scale on the Fly emulator: 10,000 short jobs through a pool of 50 machines.

10,000 jobs (``--n``) that each sleep 100 ms (``--sleep``) are submitted in a loop to a pool
with ``max_machines=50`` (``--cap``) through ``FlyBackend`` and the emulator (served by uvicorn
on 127.0.0.1, every machine a local ``python -m balloons.machine`` process). Reported: makespan
(first submit to the last result) against the ideal ``n * sleep / cap`` (target <= 1.2x),
machines created, API calls per job (the emulator's ``GET /_emulator/stats``), jobs taken warm,
and the peak memory of the submitting side. The submitting side (the app, its ``FlyBackend``
and the 10,000 ``Job`` handles it holds until every result is in) runs in a process of its own,
so that its peak RSS (``ru_maxrss``) is not the emulator's; its RSS just before the first
submit (interpreter, balloons, httpx) is reported too, and ``--tracemalloc`` adds the peak of
Python allocations during the run (slower). Runs: the client's rate limiter as shipped with
the emulator enforcing Fly's documented limits (1 create/s per app, bursts of 3); the same with
the pool pre-warmed (``min_machines=cap``, filled by a supervisor before the clock starts: a
first job stores the pool's settings, then the floor's machines are created at the limiter's
pace); the same with a pool of stopped standby machines (``standby=cap``: the cap's machines
are created, then idle out and stop, before the clock starts, so the run begins with no machine
running and each launch is one ``start``, rate-limited per machine, not per app); and the
limiter opened wide with the emulator's limits off.

    .venv/bin/python bench/fly_scale.py [--n 10000] [--cap 50] [--sleep 0.1]
        [--runs shipped,warm,standby,open] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import BENCH_DIR, SECRET, header, table, temp_state_dir, valkey_server

import balloons
from balloons.store.keys import PoolKeys

SUBMITTER = "--submitter"


def submitter(argv: list[str]) -> int:
    """The submitting side, in a process of its own; prints one JSON line."""
    ap = argparse.ArgumentParser()
    ap.add_argument(SUBMITTER, nargs=5, metavar=("REDIS", "API", "STATE", "POOL", "MODE"))
    ap.add_argument("--n", type=int)
    ap.add_argument("--cap", type=int)
    ap.add_argument("--sleep", type=float)
    ap.add_argument("--tracemalloc", action="store_true")
    args = ap.parse_args(argv)
    redis_url, api_url, state, pool, mode = args.submitter
    import _balloons_tasks
    from _fly import IMAGE, JOBS_APP, TOKEN

    from balloons.fly.ratelimit import Limit, RateLimiter

    limiter = (
        RateLimiter(limits={}, default=Limit(rate=10_000, burst=10_000)) if mode == "open" else None
    )
    warm_floor = args.cap if mode in ("warm", "standby") else 0
    standby = args.cap if mode == "standby" else 0
    backend = balloons.FlyBackend(
        token=TOKEN, app=JOBS_APP, api_url=api_url, image=IMAGE, limiter=limiter
    )
    app = balloons.App(redis_url=redis_url, secret=SECRET, state_dir=state, backend=backend)
    app.pool(pool, max_machines=args.cap, idle_timeout=5, min_machines=warm_floor, standby=standby)
    task = app.task(timeout=60, pool=pool)(_balloons_tasks.sleep.fn)
    _ = app.backend, app.store.redis.ping()  # bind and connect before the clock starts
    prewarm = 0.0
    if warm_floor:
        # The pool's warm floor, created by a supervisor (at the limiter's pace) before the
        # clock starts; a first job stores the pool's settings.
        w0 = time.perf_counter()
        task.submit(0).result(timeout=60)
        supervisor = app.start_supervisor(interval=0.5)
        while app.store.pool_stats(pool)["idle"] < warm_floor:
            if time.perf_counter() - w0 > 300:
                raise RuntimeError(f"the warm floor did not fill: {app.store.pool_stats(pool)}")
            time.sleep(0.2)
        if standby:
            # Then the floor goes (min_machines=0, stored by the next submit): the machines
            # idle out, stop and stay in the pool's standby set. No machine runs at the start.
            supervisor.stop()
            app.pool(pool, max_machines=args.cap, idle_timeout=5, standby=standby)
            task.submit(0).result(timeout=60)
            pk = PoolKeys(app.settings.namespace, pool)
            while len(app.store.standby(pk)) < standby or any(
                m.state != "stopped" for m in app.backend.list(pool=pool)
            ):
                if time.perf_counter() - w0 > 300:
                    stats = app.store.pool_stats(pool)
                    raise RuntimeError(f"the standby set did not fill: {stats}")
                time.sleep(0.5)
            warm_floor = 0
            import httpx

            httpx.delete(f"{api_url}/_emulator/stats").raise_for_status()  # count the run only
        prewarm = time.perf_counter() - w0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    t0 = time.perf_counter()
    jobs = [task.submit(args.sleep) for _ in range(args.n)]
    submitted = time.perf_counter() - t0
    first_wait = time.perf_counter()
    for job in jobs:
        job.result(timeout=600)
    makespan = time.perf_counter() - t0
    peak_py = tracemalloc.get_traced_memory()[1] if args.tracemalloc else 0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if warm_floor:
        supervisor.stop()
    infos = app.jobs(limit=args.n, pool=pool)[: args.n]
    warm = sum(1 for info in infos if info.attempts[-1].warm)
    # Where a machine's time goes: the task's own run (started -> finished, the sleep plus the
    # worker's bookkeeping inside the job) and the gap between one job's end and the next
    # one's start on the same machine (FINISH, TAKE, the next job's set-up).
    by_slot: dict[str, list[tuple[float, float]]] = {}
    for info in infos:
        a = info.attempts[-1]
        if a.started_at and a.ended_at:
            by_slot.setdefault(a.slot or "?", []).append((a.started_at, a.ended_at))
    runs, gaps = [], []
    for spans in by_slot.values():
        spans.sort()
        runs += [end - start for start, end in spans]
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    first_starts = sorted(spans[0][0] for spans in by_slot.values())
    wall0 = min(info.created_at for info in infos)
    print(
        json.dumps(
            {
                "makespan": makespan,
                "submit": submitted,
                "wait_from": first_wait - t0,
                "rss_before_kb": rss_before,
                "rss_peak_kb": rss_peak,
                "tracemalloc_peak": peak_py,
                "warm": warm,
                "prewarm": prewarm,
                "run_median": statistics.median(runs),
                "gap_median": statistics.median(gaps) if gaps else 0.0,
                "gap_p90": statistics.quantiles(gaps, n=10)[-1] if len(gaps) > 1 else 0.0,
                "all_machines_up": first_starts[-1] - wall0,
            }
        )
    )
    return 0


def run(url: str, state: Any, args: argparse.Namespace, mode: str, pool: str) -> dict[str, Any]:
    from _fly import emulator
    from redis import Redis

    from balloons.fly.emulator import Faults

    # Each run starts from an empty Redis: the emulator's machine ids follow its seed, so the
    # slots a previous run left behind would name this run's machines.
    with Redis.from_url(url) as r:
        r.flushall()
    with emulator(url, faults=Faults(seed=1, rate_limit=mode != "open")) as emu:
        emu.reset_stats()
        extra = ["--tracemalloc"] if args.tracemalloc else []
        cmd = [sys.executable, str(BENCH_DIR / "fly_scale.py"), SUBMITTER, url, emu.url,
               str(state), pool, mode, "--n", str(args.n), "--cap", str(args.cap),
               "--sleep", str(args.sleep), *extra]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(BENCH_DIR))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"submitter failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        r: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        stats = emu.stats()
        calls: dict[str, int] = stats["calls"]
        r["calls"] = sum(calls.values())
        r["creates"] = calls.get("POST /v1/apps/{app_name}/machines", 0)
        r["starts"] = calls.get("POST /v1/apps/{app_name}/machines/{machine_id}/start", 0)
        r["machines"] = len(emu.machines_including_destroyed())
    return r


def main() -> int:
    if SUBMITTER in sys.argv:
        return submitter(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--cap", type=int, default=50)
    ap.add_argument("--sleep", type=float, default=0.1)
    ap.add_argument(
        "--runs",
        default="shipped,warm,standby,open",
        help="comma-separated: shipped, warm, standby, open",
    )
    ap.add_argument("--tracemalloc", action="store_true")
    args = ap.parse_args()
    ideal = args.n * args.sleep / args.cap
    print(header(f"Fly scale: {args.n:,} jobs of {args.sleep:g}s, max_machines={args.cap}"))
    print(f"ideal makespan n * sleep / cap = {ideal:.2f} s\n")
    rows, parts = [], []
    with valkey_server() as url, temp_state_dir() as state:
        for i, mode in enumerate(args.runs.split(",")):
            r = run(url, state, args, mode, f"scale{i}")
            label = {"shipped": "limiter as shipped, Fly's limits enforced",
                     "warm": "same, pool pre-warmed (min_machines=cap, supervisor)",
                     "standby": "same, from stopped standby machines (standby=cap)",
                     "open": "limiter opened wide, no limits"}[mode]  # fmt: skip
            rows.append([
                label,
                f"{r['makespan']:.2f}",
                f"{r['makespan'] / ideal:.2f}x",
                f"{r['submit']:.2f}",
                str(r["creates"]),
                str(r["starts"]),
                str(r["machines"]),
                f"{r['calls'] / args.n:.4f}",
                f"{r['warm']:,}",
                f"{r['rss_before_kb'] / 1024:.1f}",
                f"{r['rss_peak_kb'] / 1024:.1f}",
                f"{r['tracemalloc_peak'] / 2**20:.1f}" if args.tracemalloc else "-",
            ])  # fmt: skip
            parts.append([
                label,
                f"{r['prewarm']:.1f}",
                f"{r['all_machines_up']:.2f}",
                f"{r['run_median'] * 1000:.1f}",
                f"{r['gap_median'] * 1000:.1f}",
                f"{r['gap_p90'] * 1000:.1f}",
                f"{(r['makespan'] * args.cap / args.n - args.sleep) * 1000:.1f}",
            ])  # fmt: skip
            print(f"{label}: {json.dumps(r)}", flush=True)
    print()
    print(table(["run", "makespan s", "/ ideal", "submit loop s", "creates", "starts", "machines",
                 "calls/job", "warm jobs", "RSS before MiB", "RSS peak MiB",
                 "tracemalloc peak MiB"], rows))  # fmt: skip
    print("\nwhere a machine's time goes (from the job records):\n")
    print(table(["run", "pre-warm s (before the clock: machines made; standby: made, then stopped)",
                 "last machine's first job s",
                 "job run ms (median)", "gap between jobs ms (median)", "gap p90 ms",
                 "overhead per job ms (makespan * cap / n - sleep)"], parts))  # fmt: skip
    print("\ntarget: makespan <= 1.20x ideal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
