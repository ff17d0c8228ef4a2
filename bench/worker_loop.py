"""Worker loop: how fast one machine drains a queue that is already full, and where its time
goes.

N no-op jobs are queued in a pool of one machine (the backend launches nothing); then this
process runs the worker of that machine itself (``balloons.machine.worker.Worker``, in the main
thread, as a machine does) until the queue is empty and the pool's idle timeout (0) sends it
away. Every round trip the worker makes is timed: the first job's ``CLAIM``, each ``TAKE``
sent on its own, each ``FINISH`` (which carries the next ``TAKE`` in the same write) and
the rest of a job (verify the signature, decode, call, encode). No peer: this isolates the
balloons side of ``drain.py``. It uses the worker's internals, so keep it in step with
``src/balloons/machine/worker.py``.

    .venv/bin/python bench/worker_loop.py [--n 2000]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from typing import Any

import _balloons_tasks
from _common import SECRET, ManualBackend, header, table, temp_state_dir, valkey_server

import balloons
from balloons.machine import worker as worker_mod
from balloons.store import lua
from balloons.store.resp import RespClient

POOL = "loop"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="jobs queued before the worker starts")
    args = ap.parse_args()
    print(header(f"worker loop: one machine drains {args.n} queued no-op jobs"))
    print()

    with valkey_server() as url, temp_state_dir() as state:
        app = balloons.App(
            redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state
        )
        app.pool(POOL, max_machines=1, idle_timeout=0)
        task = app.task(timeout=60, pool=POOL)(_balloons_tasks.noop.fn)
        jobs = [task.submit() for _ in range(args.n)]
        env = {
            "BALLOONS_JOB": f"{jobs[0].id}/1",
            "BALLOONS_REDIS_URL": url,
            "BALLOONS_SECRET": SECRET,
            "BALLOONS_MACHINE_ID": "0123456789abcd",
        }
        client = RespClient(url)
        signal.signal(signal.SIGUSR1, worker_mod._on_interrupt)
        worker = worker_mod.Worker(worker_mod.Handoff.from_env(env), client)

        names = {id(lua.CLAIM): "CLAIM", id(lua.TAKE): "TAKE alone", id(lua.FINISH): "FINISH"}
        times: dict[str, list[float]] = {}

        def timed(name: str, fn: Any) -> Any:
            def wrapper(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    times.setdefault(name, []).append(time.perf_counter() - t0)

            return wrapper

        real_eval = worker._eval

        def eval_(script: str, *a: Any, **kw: Any) -> Any:
            name = names.get(id(script), "HEARTBEAT (thread)")
            return timed(name, real_eval)(script, *a, **kw)

        worker._eval = eval_  # type: ignore[method-assign]
        worker.finish = timed("FINISH + next TAKE (one write)", worker.finish)  # type: ignore[method-assign]
        worker.run_job = timed("whole job (run_job)", worker.run_job)  # type: ignore[method-assign]
        t0 = time.perf_counter()
        code = worker.run()
        dt = time.perf_counter() - t0
        client.close()
        stats = app.store.pool_stats(POOL)
        done = sum(1 for j in jobs if j.status() is balloons.JobStatus.SUCCEEDED)
        app.close()

    if done != args.n or stats["queued"] or stats["machines"]:
        raise RuntimeError(f"the worker left work behind: {done}/{args.n} succeeded, {stats}")
    rows = []
    for name, xs in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        rows.append(
            [
                name,
                f"{len(xs):,}",
                f"{statistics.median(xs) * 1e6:.1f}",
                f"{sum(xs) / args.n * 1e6:.1f}",
            ]
        )
    print(table(["step", "calls", "median us", "us per job"], rows))
    print()
    print(
        f"{args.n} jobs in {dt * 1000:.0f} ms: {args.n / dt:,.0f} jobs/s, "
        f"{dt / args.n * 1e6:.0f} us per job (exit code {code}); 'whole job' includes its FINISH"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
