"""What one ``/metrics`` scrape costs over many jobs, now that it reads running aggregates.

Submits ``--n`` jobs (a backend that launches nothing) and ends every one of them with the
real ``CANCEL`` script, pipelined, so that the pool's stats hash holds what those scripts add;
then fills every field the scripts write for ``--tasks`` more tasks (each histogram's every
bucket, each status and failure reason, retries, billed seconds: the largest hash that many
tasks make) and writes ``--machines`` machine records as the local fork server does; then
times scrapes with and without the cost figures. A scrape reads the stats hashes, the pools'
queue sizes and slot tables and the newest 1,000 machine records' pool and state: the same
work at 1,000 jobs as at 100,000, which ``--compare`` shows by timing the same scrape again
after the first ``--compare`` jobs only.

    .venv/bin/python bench/metrics_scrape.py [--n 100000] [--tasks 20] [--rounds 21]
        [--machines 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _balloons_tasks
from _common import SECRET, ManualBackend, header, ms, table, temp_state_dir, valkey_server

import balloons
from balloons.dashboard.metrics import exposition, registry_for
from balloons.states import Reason
from balloons.store import lua
from balloons.store.keys import (
    STAT_BUCKETS,
    JobKeys,
    machine_key,
    machines_key,
    script_keys,
)


def submit(app: balloons.App, n: int) -> list[str]:
    task = app.task(timeout=60)(_balloons_tasks.noop.fn)
    return [task.submit().id for _ in range(n)]


def end_all(app: balloons.App, ids: list[str]) -> None:
    """Each job ended by the CANCEL script (its stats added as the scripts add them)."""
    r = app.store.redis
    r.script_load(lua.CANCEL)
    ns = app.settings.namespace
    for at in range(0, len(ids), 1000):
        pipe = r.pipeline(transaction=False)
        for jid in ids[at : at + 1000]:
            jk = JobKeys.of(ns, jid)
            pipe.execute_command(
                *lua.evalsha(lua.CANCEL, script_keys(jk.pool, jk.ulid), [jk.pool.tag, 0, jk.ulid])
            )
        pipe.execute()


def fill(app: balloons.App, tasks: int) -> int:
    """Every field the scripts write, for ``tasks`` tasks of the default pool."""
    pk = app.store.keys("default.01jd3x9k2m8vq4t7w0c5r6y1zh").pool
    fields: dict[str, float] = {}
    for t in range(tasks):
        name = f"bench.tasks:task_{t:02d}"
        for kind in ("queue", "boot", "run", "e2e"):
            for b in range(1, len(STAT_BUCKETS) + 2):
                fields[f"{kind}:{b}:{name}"] = b
            fields[f"{kind}:s:{name}"] = 12500
        for reason in Reason:
            fields[f"n:FAILED:{reason.value}:{name}"] = 3
            fields[f"retry:{reason.value}:{name}"] = 2
        fields[f"n:SUCCEEDED::{name}"] = 1000
        fields[f"ms:1:256:{name}"] = 4500
    if fields:
        app.store.redis.hset(pk.stats, mapping=fields)
    return int(app.store.redis.hlen(pk.stats))


def machines(app: balloons.App, n: int) -> None:
    """``n`` machine records as the fork server writes them (launched, then exited), for the
    scrape's machine counts: the newest 1,000 are read."""
    ns, now = app.settings.namespace, time.time()
    pipe = app.store.redis.pipeline(transaction=False)
    for i in range(n):
        mid = f"{i:014x}"
        pipe.hset(
            machine_key(ns, mid),
            mapping={
                "state": "stopped", "pid": 10_000 + i, "host": "bench", "attempt": 1,
                "job": f"default.{i:026d}", "pool": "default", "slot": f"{i:026d}-1",
                "created": now - n + i, "memory_mb": 256, "cpus": 1, "backend": "local",
                "sid": 10_000 + i, "start": 123456, "proof": "0" * 64, "exited": now,
                "exit_code": 0,
            },
        )  # fmt: skip
        pipe.zadd(machines_key(ns), {mid: now - n + i})
    pipe.execute()


def timed(fn: object, rounds: int) -> tuple[float, float]:
    """The median wall time of ``fn`` and the median CPU time this process spent in it (the
    scrape's own work, which the machine's load does not stretch as it does the wall time)."""
    wall, cpu = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()  # type: ignore[operator]
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--compare", type=int, default=1000)
    ap.add_argument("--machines", type=int, default=1000, help="machine records (local backend)")
    args = ap.parse_args()
    print(
        header(
            f"/metrics over {args.n:,} jobs, {args.tasks} more tasks, {args.machines:,} machine "
            f"records, {args.rounds} rounds"
        )
    )
    with valkey_server() as url, temp_state_dir() as state:
        app = balloons.App(
            redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state
        )
        store = app.store
        plain, with_cost = registry_for(store), registry_for(store, app)
        rows = []
        first = submit(app, args.compare)
        end_all(app, first)
        size = fill(app, args.tasks)
        machines(app, args.machines)
        for label, reg in (("without cost", plain), ("with cost", with_cost)):
            wall, cpu = timed(lambda r=reg: exposition(r), args.rounds)
            rows.append([f"{args.compare:,} jobs, {label}", ms(wall), ms(cpu)])
        t0 = time.perf_counter()
        rest = submit(app, args.n - args.compare)
        end_all(app, rest)
        print(f"stored and ended {args.n:,} jobs in {time.perf_counter() - t0:.1f} s")
        for label, reg in (("without cost", plain), ("with cost", with_cost)):
            wall, cpu = timed(lambda r=reg: exposition(r), args.rounds)
            rows.append([f"{args.n:,} jobs, {label}", ms(wall), ms(cpu)])
        jobs = store.redis.zcard(app.store.keys(first[0]).pool.jobs)
        print(f"stats hash: {size:,} fields; jobs kept in the index: {jobs:,}")
        print(f"scrape size: {len(exposition(with_cost)):,} bytes")
        print(table(["scrape", "median ms", "CPU ms (this process)"], rows))
        app.close()


if __name__ == "__main__":
    main()
