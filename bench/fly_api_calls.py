"""Fly Machines API calls per job, counted at the emulator (``GET /_emulator/stats``).

* happy path, the emulator enforcing Fly's rate limits (1 create/s per app, bursts of 3) and
  the backend's limiter keeping to them: jobs one at a time, each on a machine of its own (the
  target: exactly 1 call per job, the create, and no 429); and a burst from 4 threads, where
  machines already up take queued jobs (at most 1 call per job);
* with faults (the emulator's seeded injection, its rate limits off, the client's limiter
  opened wide, creates made in the submitting call, jobs one at a time): lost create answers,
  5xx on create, capacity refusals in the primary region. Each row also checks that no slot
  got two machines.

    .venv/bin/python bench/fly_api_calls.py [--n 20] [--fault-n 50]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from typing import Any

import _balloons_tasks
from _common import SECRET, header, table, temp_state_dir, valkey_server
from _fly import emulator

import balloons
from balloons.fly.client import RetryPolicy
from balloons.fly.emulator import Faults
from balloons.fly.ratelimit import Limit, RateLimiter

OPEN = {"limits": {}, "default": Limit(rate=10_000, burst=10_000)}


def run(
    url: str, state: Any, emu: Any, n: int, threads: int, **backend_options: Any
) -> dict[str, Any]:
    app = balloons.App(
        redis_url=url, secret=SECRET, state_dir=state, backend=emu.backend(**backend_options)
    )
    app.pool("default", idle_timeout=0)  # no warm reuse: every job wants a machine of its own
    task = app.task(timeout=60)(_balloons_tasks.noop.fn)
    emu.reset_stats()
    jobs: list[balloons.Job[None]] = []
    lock = threading.Lock()

    def submit(count: int) -> None:
        for _ in range(count):
            job = task.submit()
            with lock:
                jobs.append(job)
            if threads == 0:  # one job at a time: each on a machine of its own
                job.result(timeout=60)

    t0 = time.perf_counter()
    k = max(threads, 1)
    workers = [threading.Thread(target=submit, args=(n // k + (i < n % k),))
               for i in range(k)]  # fmt: skip
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    submitted = time.perf_counter() - t0
    failed = 0
    for job in jobs:
        try:
            job.result(timeout=60)
        except balloons.JobFailed:
            failed += 1
    calls = emu.stats()["calls"]  # before this script's own listing calls below
    emu.wait_idle()
    # Two machines for one slot would be a duplicated create (a slot is one machine's right
    # to exist: one per attempt, or per machine launched with no job of its own).
    made = emu.machines_including_destroyed()
    per_attempt = Counter(m["config"]["metadata"]["balloons_slot"] for m in made)
    # The machines jobs ran on: a job taken by a machine already up (one whose previous job
    # had just ended) needed no machine of its own, and no call.
    ran_on = {job.info().attempts[-1].machine_id for job in jobs}
    app.close()
    return {
        "calls": calls,
        "total": sum(calls.values()),
        "creates": calls.get("POST /v1/apps/{app_name}/machines", 0),
        "lists": calls.get("GET /v1/apps/{app_name}/machines", 0),
        "failed": failed,
        "duplicates": sum(1 for c in per_attempt.values() if c > 1),
        "machines": len(made),
        "ran_on": len(ran_on),
        "submit_s": submitted,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20, help="jobs on the happy path")
    ap.add_argument("--fault-n", type=int, default=50, help="jobs per fault scenario")
    args = ap.parse_args()
    print(header("Fly API calls per job, counted at the emulator"))
    rows = []
    # Fault rows: creates made in the submitting call, one job at a time, so that every job's
    # create meets the faults (with creates from the launcher thread, the first machines take
    # most of a burst from the queue and few creates are made at all).
    sync = {"limiter": RateLimiter(**OPEN), "background_launches": False}
    scenarios: list[tuple[str, dict[str, Any], dict[str, Any], int, int]] = [
        ("happy path, one job at a time, Fly's rate limits enforced",
         {"faults": Faults(seed=1, rate_limit=True)}, {}, args.n, 0),
        ("happy path, 4 threads at once, Fly's rate limits enforced",
         {"faults": Faults(seed=1, rate_limit=True)}, {}, args.n, 4),
        ("10% of create answers lost", {"faults": Faults(seed=2, lost_response_rate=0.1)},
         sync, args.fault_n, 0),
        ("10% of creates answer 500/503", {"faults": Faults(seed=3, error_rates={"create": 0.1})},
         {**sync, "retry": RetryPolicy(base=0.02, cap=0.2)}, args.fault_n, 0),
        ("iad refuses 30% for capacity, fallback ord",
         {"faults": Faults(seed=4, capacity_refusal_by_region={"iad": 0.3})},
         {**sync, "region": "iad", "fallback_regions": ["ord"]}, args.fault_n, 0),
    ]  # fmt: skip
    with valkey_server() as url, temp_state_dir() as state:
        for label, emu_options, backend_options, n, threads in scenarios:
            with emulator(url, **emu_options) as emu:
                r = run(url, state, emu, n, threads, **backend_options)
            rows.append([
                label, str(n), str(r["creates"]), str(r["lists"]), str(r["total"]),
                f"{r['total'] / n:.2f}", str(r["ran_on"]), f"{r['total'] / r['ran_on']:.2f}",
                str(r["machines"] - r["ran_on"]), str(r["failed"]), str(r["duplicates"]),
                f"{n / r['submit_s']:.2f}",
            ])  # fmt: skip
    print(table(["scenario", "jobs", "creates", "lookups", "calls", "calls/job",
                 "machines used", "calls/machine used", "machines unused", "failed",
                 "duplicate machines", "submits/s"], rows))  # fmt: skip
    print(f"\none job at a time: {rows[0][7]} API calls per job that needed a machine (target "
          f"1.00), {rows[0][5]} per job; a burst from 4 threads: {rows[1][5]} per job (machines "
          "already up take queued jobs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
