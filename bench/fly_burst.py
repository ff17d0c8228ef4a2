"""Burst on the Fly emulator: many no-op jobs submitted at once to a pool of a few machines.

200 no-op jobs (``--n``) are submitted in a loop to a pool with ``max_machines=4``
(``--cap``) through ``FlyBackend`` and the emulator served by uvicorn on 127.0.0.1. The first
jobs get slots and their machines are created; the rest queue and are taken by those machines
as they become free (warm reuse: no API call, no boot). Reported: makespan (first submit to the
last result), machines the emulator started (including destroyed ones; target at most the cap
plus retries) and API calls per job counted by the emulator itself (``GET /_emulator/stats``,
every route; target < 0.1). Two Fly runs: the client's rate limiter as shipped with the
emulator enforcing Fly's documented limits (1 create/s per app, bursts of 3), and the limiter
opened wide with the emulator's limits off. Baseline in the same run: the same burst on
``LocalBackend`` with exec start (a fresh interpreter per machine, like a Fly machine
here), same cap.

    .venv/bin/python bench/fly_burst.py [--n 200] [--cap 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import _balloons_tasks
from _common import SECRET, header, shutdown_local, table, temp_state_dir, valkey_server
from _fly import emulator

import balloons
from balloons.fly.emulator import Faults
from balloons.fly.ratelimit import Limit, RateLimiter

OPEN = {"limits": {}, "default": Limit(rate=10_000, burst=10_000)}


def burst(app: balloons.App, pool: str, n: int, cap: int) -> dict[str, Any]:
    """Submit ``n`` no-op jobs to a fresh pool of ``cap`` machines; wait for every result."""
    app.pool(pool, max_machines=cap, idle_timeout=2)
    task = app.task(timeout=60, pool=pool)(_balloons_tasks.noop.fn)
    t0 = time.perf_counter()
    jobs = [task.submit() for _ in range(n)]
    submitted = time.perf_counter() - t0
    for job in jobs:
        job.result(timeout=120)
    makespan = time.perf_counter() - t0
    warm = sum(1 for job in jobs if job.info().attempts[-1].warm)
    return {"makespan": makespan, "submit": submitted, "warm": warm}


def fly_round(url: str, state: Any, n: int, cap: int, label: str, pool: str) -> dict[str, Any]:
    shipped = label == "shipped"
    emu_opts: dict[str, Any] = {"faults": Faults(seed=1, rate_limit=shipped)}
    backend_opts: dict[str, Any] = {} if shipped else {"limiter": RateLimiter(**OPEN)}
    with emulator(url, **emu_opts) as emu:
        app = balloons.App(
            redis_url=url, secret=SECRET, state_dir=state, backend=emu.backend(**backend_opts)
        )
        emu.reset_stats()
        r = burst(app, pool, n, cap)
        app.close()  # after any launch still waiting for the rate limiter
        stats = emu.stats()  # before the listing below, which the emulator counts too
        calls: dict[str, int] = stats["calls"]
        machines = emu.machines_including_destroyed()
    r.update(
        calls=sum(calls.values()),
        creates=calls.get("POST /v1/apps/{app_name}/machines", 0),
        machines=len(machines),
    )
    return r


def local_round(url: str, state: Any, n: int, cap: int, pool: str) -> dict[str, Any]:
    backend = balloons.LocalBackend(start="exec")
    app = balloons.App(redis_url=url, secret=SECRET, state_dir=state / pool, backend=backend)
    try:
        r = burst(app, pool, n, cap)
        machines = {a.slot for job in app.jobs(limit=n, pool=pool) for a in job.attempts}
        r.update(calls=0, creates=0, machines=len(machines))
    finally:
        app.close()
        shutdown_local(backend)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="jobs per burst")
    ap.add_argument("--cap", type=int, default=4, help="the pool's max_machines")
    ap.add_argument("--rounds", type=int, default=3, help="bursts per system, interleaved")
    args = ap.parse_args()
    print(header(f"Fly burst: {args.n} no-op jobs, max_machines={args.cap}"))
    systems: dict[str, Callable[[str, Any, int], dict[str, Any]]] = {
        "fly, limiter as shipped, Fly's limits enforced": lambda url, state, i: fly_round(
            url, state, args.n, args.cap, "shipped", f"shipped{i}"
        ),
        "fly, limiter opened wide, no limits": lambda url, state, i: fly_round(
            url, state, args.n, args.cap, "open", f"open{i}"
        ),
        "local exec (baseline)": lambda url, state, i: local_round(
            url, state, args.n, args.cap, f"local{i}"
        ),
    }
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in systems}
    with valkey_server() as url, temp_state_dir() as state:
        for i in range(args.rounds):
            for label, run in systems.items():
                results[label].append(run(url, state, i))
    base = statistics.median(r["makespan"] for r in results["local exec (baseline)"])
    rows = []
    for label, rs in results.items():
        mk = statistics.median(r["makespan"] for r in rs)
        rows.append([
            label,
            f"{mk:.2f}",
            " / ".join(f"{r['makespan']:.2f}" for r in rs),
            f"{mk / base:.2f}x",
            " / ".join(str(r["machines"]) for r in rs),
            " / ".join(str(r["creates"]) for r in rs),
            " / ".join(str(r["calls"]) for r in rs),
            " / ".join(f"{r['calls'] / args.n:.3f}" for r in rs),
            " / ".join(str(r["warm"]) for r in rs),
        ])  # fmt: skip
    print(table(["system", "makespan s (median)", "makespan s (runs)", "/ local exec",
                 "machines started", "creates", "API calls", "calls/job", "warm jobs"],
                rows))  # fmt: skip
    worst = max(r["calls"] / args.n for label, rs in results.items() for r in rs if "fly" in label)
    most = max(r["machines"] for label, rs in results.items() for r in rs if "fly" in label)
    print(f"\nmachines started (fly, worst run): {most} (target <= {args.cap} plus retries)")
    print(f"API calls per job (fly, worst run): {worst:.3f} (target < 0.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
