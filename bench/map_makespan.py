"""Map makespan: one call maps a no-op over N inputs on 4 workers; seconds from the call to
the last result.

* balloons: ``task.map(range(N))`` (``submit_many``'s pipelined batches, then every result in
  input order) on a pool of ``max_machines=4`` (``LocalBackend``, machines forked), *warm*
  (its 4 machines up and idle when the map starts, as the peers' workers are) and *cold*
  (from zero machines: launching them is part of the makespan);
* Celery: ``group(echo.s(i) for i in range(N)).apply_async().get()``, prefork ``-c 4``, Redis
  broker and result backend;
* RQ: ``Queue.enqueue_many`` of N calls, then every result, with 4 workers (RQ's default
  ``Worker``, a work horse forked per job, and ``SimpleWorker``).

Each system has its workers already running against a Valkey of its own (balloons' cold pool
aside); rounds take turns across the systems and the figure is the median round.

    .venv/bin/python bench/map_makespan.py [--n 1000] [--rounds 3] [--no-cold]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _balloons_tasks
from _common import (
    SECRET,
    header,
    shutdown_local,
    stop_machines,
    table,
    temp_state_dir,
    valkey_server,
)
from _peers import RESULT_TIMEOUT, CeleryPeer, RQPeer
from drain import COLD_IDLE, WARM_IDLE, BalloonsDrain

import balloons

WORKERS = 4


class BalloonsMap(BalloonsDrain):
    """A pool of 4 machines; a round is one ``task.map`` over the inputs."""

    def __init__(self, app: balloons.App, warm: bool) -> None:
        self.app, self.cap, self.warm = app, WORKERS, warm
        self.pool = f"map{'w' if warm else 'c'}"
        self.label = f"balloons task.map, pool of {WORKERS} ({'warm' if warm else 'cold'})"
        app.pool(self.pool, max_machines=WORKERS, idle_timeout=WARM_IDLE if warm else COLD_IDLE)
        self.task = app.task(timeout=60, pool=self.pool)(_balloons_tasks.echo.fn)

    def makespan(self, n: int) -> float:
        self.prepare()
        t0 = time.perf_counter()
        out = list(self.task.map(range(n), timeout=RESULT_TIMEOUT))
        dt = time.perf_counter() - t0
        assert out == list(range(n)), "results out of order or missing"
        return dt


class CeleryGroup(CeleryPeer):
    def __init__(self, url: str) -> None:
        super().__init__(url, WORKERS)
        self.label = f"celery group, prefork -c {WORKERS}"

    def makespan(self, n: int) -> float:
        from _celery_tasks import ECHO
        from celery import group

        gc.disable()  # see CeleryPeer: no collection inside Celery's pub/sub calls
        try:
            t0 = time.perf_counter()
            res = group(self.app.signature(ECHO, args=(i,)) for i in range(n)).apply_async()
            out = res.get(timeout=RESULT_TIMEOUT)
            dt = time.perf_counter() - t0
            assert out == list(range(n)), "results out of order or missing"
            del res
            gc.collect()
        finally:
            gc.enable()
        return dt


class RQMany(RQPeer):
    def __init__(self, url: str, kind: str) -> None:
        super().__init__(url, WORKERS, kind)
        self.label = f"rq enqueue_many, {self.label}"

    def makespan(self, n: int) -> float:
        import _rq_tasks
        from rq import Queue

        t0 = time.perf_counter()
        jobs = self.queue.enqueue_many([Queue.prepare_data(_rq_tasks.echo, (i,)) for i in range(n)])
        out: list[Any] = []
        for job in jobs:
            self._wait(job)
            out.append(job.return_value())
        dt = time.perf_counter() - t0
        assert out == list(range(n)), "results out of order or missing"
        return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="inputs per map")
    ap.add_argument("--rounds", type=int, default=3, help="measured maps per system")
    ap.add_argument("--no-cold", action="store_true", help="skip balloons' cold pool")
    args = ap.parse_args()

    import celery
    import rq

    print(header(f"map makespan: a no-op over {args.n:,} inputs on {WORKERS} workers"))
    print(f"rq {rq.__version__}, celery {celery.__version__}; {args.rounds} rounds, taking turns\n")
    with contextlib.ExitStack() as stack:
        state: Path = stack.enter_context(temp_state_dir())
        url = stack.enter_context(valkey_server())
        backend = balloons.LocalBackend(start="fork")
        app = balloons.App(redis_url=url, secret=SECRET, backend=backend, state_dir=state)
        stack.callback(app.close)
        stack.callback(shutdown_local, backend)
        stack.callback(stop_machines, backend)
        ours = [BalloonsMap(app, True)] + ([] if args.no_cold else [BalloonsMap(app, False)])
        peers = [
            CeleryGroup(stack.enter_context(valkey_server())),
            RQMany(stack.enter_context(valkey_server()), "fork"),
            RQMany(stack.enter_context(valkey_server()), "simple"),
        ]
        for peer in peers:
            stack.callback(peer.stop)
            peer.start()
        for system in ours:
            system.prepare()
            if not system.warm:  # unmeasured: starts the fork server, then scale to zero
                system.makespan(4 * system.cap)
        systems: dict[str, Callable[[int], float]] = {s.label: s.makespan for s in ours}
        systems.update({p.label: p.makespan for p in peers})
        for run in systems.values():  # warm up: imports, scripts, connections
            run(20)
        samples: dict[str, list[float]] = {label: [] for label in systems}
        for r in range(args.rounds):
            order = list(systems.items())
            if r % 2:
                order.reverse()
            for label, run in order:
                samples[label].append(run(args.n))

    celery_s = statistics.median(samples[peers[0].label])
    rows = [
        [
            label,
            f"{statistics.median(xs):.2f}",
            ", ".join(f"{x:.2f}" for x in xs),
            f"{args.n / statistics.median(xs):,.0f}",
            f"{statistics.median(xs) / celery_s:.2f}x",
        ]
        for label, xs in samples.items()
    ]
    print(table(["system", "makespan s (median)", "rounds", "inputs/s", "/ celery"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
