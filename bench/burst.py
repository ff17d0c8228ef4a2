"""Burst: N no-op jobs submitted at once to a pool capped at ``max_machines`` machines.

balloons (``LocalBackend``, machines forked) starts each round from zero machines (the pool
scales to zero: its idle timeout is short, and the round waits until every machine has
exited), so the makespan includes launching the machines; warm reuse then runs the rest of
the burst on those few machines. Reported: the makespan (first submit to last result held
by the caller), the machines started (distinct machine ids in the jobs' attempts, checked
against the backend's own machine records) and jobs per machine.

The peers run the same burst on workers already running (always on, never scaled to zero),
with as many processes as the cap, each against a Valkey of its own: Celery prefork
``-c CAP``, RQ ``SimpleWorker`` x CAP and RQ ``Worker`` x CAP (a forked work horse per job,
the isolation closest to a fresh machine per job). Rounds take turns across the systems.

    .venv/bin/python bench/burst.py [--n 200] [--cap 4] [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable

import _balloons_tasks
from _common import (
    SECRET,
    header,
    machines_of,
    ms,
    shutdown_local,
    stop_machines,
    table,
    temp_state_dir,
    valkey_server,
    wait_pool_empty,
)
from _peers import CeleryPeer, Peer, RQPeer

import balloons

POOL = "burst"


class BalloonsBurst:
    """One round: submit N jobs to the empty pool, collect every result, count machines."""

    label = "balloons fork"

    def __init__(self, url: str, state: object, cap: int, idle: float) -> None:
        self.backend = balloons.LocalBackend(start="fork")
        self.app = balloons.App(redis_url=url, secret=SECRET, backend=self.backend, state_dir=state)
        self.app.pool(POOL, max_machines=cap, idle_timeout=idle)
        self.task = self.app.task(timeout=60, pool=POOL)(_balloons_tasks.noop.fn)
        self.machines: list[int] = []  # per round, from the attempts
        self.records: list[int] = []  # per round, from the backend's machine records
        self.retries: list[int] = []

    def batch(self, n: int) -> float:
        wait_pool_empty(self.app, POOL)
        since = time.time()
        submit = self.task.submit
        t0 = time.perf_counter()
        jobs = [submit() for _ in range(n)]
        for job in jobs:
            job.result(timeout=60)
        dt = time.perf_counter() - t0
        machines, retries = machines_of(jobs)
        launched = {
            m.id for m in self.backend.list(pool=POOL) if (m.created_at or 0.0) >= since - 0.001
        }
        if not machines <= launched:
            raise RuntimeError(f"attempts name machines the backend never launched: {machines}")
        self.machines.append(len(machines))
        self.records.append(len(launched))
        self.retries.append(retries)
        return dt

    def close(self) -> None:
        stop_machines(self.backend)
        shutdown_local(self.backend)
        self.app.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="jobs per burst")
    ap.add_argument("--cap", type=int, default=4, help="max_machines of the pool")
    ap.add_argument("--rounds", type=int, default=7, help="measured bursts per system")
    ap.add_argument(
        "--idle", type=float, default=0.3, help="the pool's idle timeout (s): scale to zero"
    )
    args = ap.parse_args()

    import celery
    import rq

    print(header(f"burst: {args.n} no-op jobs at once, max_machines={args.cap}"))
    print(
        f"rq {rq.__version__}, celery {celery.__version__}; {args.rounds} rounds per system, "
        "taking turns\n"
    )

    with contextlib.ExitStack() as stack:
        state = stack.enter_context(temp_state_dir())
        bal = BalloonsBurst(stack.enter_context(valkey_server()), state, args.cap, args.idle)
        stack.callback(bal.close)
        peers: list[Peer] = [
            CeleryPeer(stack.enter_context(valkey_server()), args.cap),
            RQPeer(stack.enter_context(valkey_server()), args.cap, "simple"),
            RQPeer(stack.enter_context(valkey_server()), args.cap, "fork"),
        ]
        for peer in peers:
            stack.callback(peer.stop)
            peer.start()
        # Unmeasured: starts the fork server and imports the task module in it.
        bal.batch(args.cap)
        bal.machines.clear(), bal.records.clear(), bal.retries.clear()

        systems: dict[str, Callable[[int], float]] = {bal.label: bal.batch}
        for peer in peers:
            systems[peer.label] = peer.timed()
        samples: dict[str, list[float]] = {label: [] for label in systems}
        for _ in range(args.rounds):
            for label, run in systems.items():
                samples[label].append(run(args.n))

    med = {label: statistics.median(xs) for label, xs in samples.items()}
    rows = []
    for label, xs in samples.items():
        if label == bal.label:
            procs = f"{max(bal.machines)} started (max of rounds)"
            per = f"{args.n / statistics.median(bal.machines):.0f}"
        else:
            procs, per = f"{args.cap} always on", f"~{args.n / args.cap:.0f}"
        rows.append(
            [
                label,
                ms(med[label]),
                ms(min(xs)),
                f"{args.n / med[label]:,.0f}",
                procs,
                per,
                f"{med[bal.label] / med[label]:.2f}x",
            ]
        )
    print(
        table(
            [
                "system",
                "makespan ms (median)",
                "min ms",
                "jobs/s",
                "machines / workers",
                "jobs per machine",
                "balloons / this",
            ],
            rows,
        )
    )
    print()
    print(
        f"balloons machines started per round (attempts): {bal.machines}; "
        f"launched per the backend's records: {bal.records}; retries: {bal.retries}"
    )
    most = max(bal.machines)
    limit = args.cap + max(bal.retries)
    verdict = "met" if most <= limit else "NOT met"
    print(f"machines started: at most {most} (target <= {args.cap} + retries = {limit}: {verdict})")
    for label in samples:
        if label != bal.label:
            print(f"balloons makespan / {label}: {med[bal.label] / med[label]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
