"""Submit → result latency of a no-op job through FlyBackend + the Machines API emulator,
against LocalBackend, in the same run and against the same Valkey.

* ``fly (emulator)``: ``FlyBackend`` creates a machine over real HTTP (uvicorn on 127.0.0.1);
  the emulator spawns ``python -m balloons.machine`` as a fresh process, which gets the Redis
  URL and the key from the app's secrets. The backend's rate limiter is opened wide here:
  this measures one job's path, not Fly's cap of about one create per second per app;
* ``local exec``: ``LocalBackend(start="exec")``, also a fresh interpreter per job;
* ``local fork``: ``LocalBackend()``, a fork of a pre-imported parent (the default).

Jobs run one at a time, the systems interleaved round by round. For the two fresh-interpreter
systems the job record splits each job into: the submit call (record + launch request), launch
→ claim (spawning the process, interpreter start-up, imports, the claim script), the task, and
finish → the caller holding the result.

    .venv/bin/python bench/fly_latency.py [--n 30] [--warmup 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import _balloons_tasks
from _common import SECRET, header, ms, p90, shutdown_local, table, temp_state_dir, valkey_server
from _fly import emulator

import balloons
from balloons.fly.ratelimit import Limit, RateLimiter

Sample = dict[str, float]


def runner(app: balloons.App, pool: str) -> Callable[[], Sample]:
    app.pool(pool, idle_timeout=0)
    task = app.task(timeout=60, pool=pool)(_balloons_tasks.noop.fn)

    def run() -> Sample:
        wall0, t0 = time.time(), time.perf_counter()
        job = task.submit()
        t1 = time.perf_counter()
        job.result(timeout=60)
        t2 = time.perf_counter()
        wall2 = time.time()
        info = job.info()
        started, finished = info.started_at or wall0, info.finished_at or wall2
        return {
            "total": t2 - t0,
            "submit": t1 - t0,
            "to_claim": started - (wall0 + (t1 - t0)),
            "task": finished - started,
            "to_caller": wall2 - finished,
        }

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    print(header("submit -> result: FlyBackend + emulator vs LocalBackend"))
    print(f"n={args.n} per system, warm-up {args.warmup}\n")
    samples: dict[str, list[Sample]] = {}
    with valkey_server() as url, temp_state_dir() as state, emulator(url) as emu:
        wide_open = RateLimiter(limits={}, default=Limit(rate=10_000, burst=10_000))
        locals_: list[balloons.LocalBackend] = []
        runners: dict[str, Callable[[], Sample]] = {}
        # Each system in a pool of its own, with no warm reuse: every job a fresh machine.
        fly_app = balloons.App(redis_url=url, secret=SECRET, state_dir=state / "fly",
                               backend=emu.backend(limiter=wide_open))  # fmt: skip
        runners["fly (emulator)"] = runner(fly_app, "fly")
        for iso in ("exec", "fork"):
            backend = balloons.LocalBackend(start=iso)
            locals_.append(backend)
            app = balloons.App(redis_url=url, secret=SECRET, state_dir=state / iso,
                               backend=backend)  # fmt: skip
            runners[f"local {iso}"] = runner(app, f"local-{iso}")
        try:
            for _ in range(args.warmup):
                for run in runners.values():
                    run()
            emu.reset_stats()
            for _ in range(args.n):
                for label, run in runners.items():
                    samples.setdefault(label, []).append(run())
            calls = emu.stats()["total_calls"]
        finally:
            for backend in locals_:
                shutdown_local(backend)
    med: dict[str, dict[str, float]] = {
        label: {k: statistics.median(s[k] for s in rows) for k in rows[0]}
        for label, rows in samples.items()
    }
    base = med["local exec"]["total"]
    rows: list[list[str]] = []
    for label, rows_ in samples.items():
        totals = [s["total"] for s in rows_]
        rows.append([label, ms(med[label]["total"]), ms(p90(totals)), ms(min(totals)),
                     f"{med[label]['total'] / base:.2f}x"])  # fmt: skip
    print(table(["system", "median ms", "p90 ms", "min ms", "/ local exec"], rows))
    print()
    parts = ["submit", "to_claim", "task", "to_caller"]
    names = ["submit call", "launch -> claim", "task", "finish -> caller"]
    split: list[list[str]] = []
    for label in ("fly (emulator)", "local exec", "local fork"):
        split.append([label, *(ms(med[label][p]) for p in parts)])
    fly, loc = med["fly (emulator)"], med["local exec"]
    split.append(["fly - local exec", *(f"{(fly[p] - loc[p]) * 1000:+.2f}" for p in parts)])
    print(table(["median ms", *names], split))
    print(f"\nfly (emulator) / local exec: {fly['total'] / base:.2f}x; "
          f"/ local fork: {fly['total'] / med['local fork']['total']:.2f}x; "
          f"API calls per job: {calls / args.n:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
