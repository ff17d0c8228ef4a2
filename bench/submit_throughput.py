"""Submit throughput: jobs/s of ``task.submit()`` against RQ's ``Queue.enqueue``.

balloons runs with a backend whose ``launch`` returns at once, so only the submit path is
measured: serialize the arguments, sign, store and place the job (one round trip: the pool set
and the SUBMIT script), and the launch call when the job got a slot. Two balloons paths, each
in a pool of its own: ``launch`` (a cap no run reaches, so every submit takes a new slot and
calls the backend) and ``queued`` (a cap of 1, taken by the first submit, so every later job
goes to the pool's queue and nothing is launched). RQ enqueues the same no-op on the same
Valkey server (nothing consumes its queue). A batch of bare round trips (redis-py ``PING``)
shows what a round trip costs in the run: an enqueue makes two, a submit one, so the ratios
move with it. All run in this process, one at a time, in alternating batches so that machine
noise hits them alike.

    .venv/bin/python bench/submit_throughput.py [--n 5000] [--batch 500] [--profile]

``--profile`` also times each step of a balloons submit, reports Valkey's own time per job of
each system (``INFO commandstats``), and runs cProfile over one batch of each.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _balloons_tasks
import _rq_tasks
from _common import SECRET, ManualBackend, header, table, temp_state_dir, valkey_server

import balloons
from balloons.pools import MAX_MACHINES

Batch = Callable[[int], float]
PING = "for scale: redis-py PING"


# The two places a submit can put a job when no machine is idle: a new slot (its machine is
# launched: here a backend call that returns at once) while the pool is under its cap, or the
# queue once the cap is reached (no launch; a warm machine takes it later).
PATHS = {
    "launch": ("bench-launch", MAX_MACHINES, "STARTING"),  # a cap no run reaches
    "queued": ("bench-queued", 1, "QUEUED"),  # the first submit takes the one slot
}


def balloons_batch(url: str, state_dir: Path, path: str) -> tuple[Batch, Callable[[], None]]:
    pool, cap, expect = PATHS[path]
    backend = ManualBackend(keep_specs=False)
    app = balloons.App(redis_url=url, secret=SECRET, backend=backend, state_dir=state_dir)
    app.pool(pool, max_machines=cap)
    task = app.task(timeout=60, pool=pool)(_balloons_tasks.noop.fn)

    def batch(k: int) -> float:
        submit = task.submit
        t0 = time.perf_counter()
        for _ in range(k):
            submit()
        return time.perf_counter() - t0

    def check() -> None:
        task.submit()  # with a cap of 1, this one takes the slot
        job = task.submit()
        assert job.status().value == expect, (path, job.status())

    return batch, check


def rq_batch(url: str) -> tuple[Batch, Callable[[], None]]:
    from redis import Redis
    from rq import Queue

    queue = Queue("bench-submit", connection=Redis.from_url(url))

    def batch(k: int) -> float:
        enqueue, fn = queue.enqueue, _rq_tasks.noop
        t0 = time.perf_counter()
        for _ in range(k):
            enqueue(fn)
        return time.perf_counter() - t0

    def check() -> None:
        job = queue.enqueue(_rq_tasks.noop)
        assert job.get_status() == "queued", job.get_status()

    return batch, check


def ping_batch(url: str) -> tuple[Batch, Callable[[], None]]:
    """A bare round trip (redis-py ``PING``), for scale: what a machine's network and
    scheduling cost per round trip in this run. RQ's enqueue makes two round trips, a balloons
    submit one, so the ratios depend on it."""
    from redis import Redis

    r = Redis.from_url(url)

    def batch(k: int) -> float:
        ping = r.ping
        t0 = time.perf_counter()
        for _ in range(k):
            ping()
        return time.perf_counter() - t0

    def check() -> None:
        assert r.ping()

    return batch, check


def profile(label: str, batch: Batch, k: int, top: int = 25) -> None:
    prof = cProfile.Profile()
    prof.enable()
    batch(k)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n## cProfile: {label}, {k} submits, by own time\n")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])


def breakdown(url: str, state_dir: Path, k: int) -> None:
    """Wall time of each step of one submit (new-slot path), mirroring ``Dispatcher.submit``
    (private API: keep in step with src/balloons/dispatch.py), with a bare round trip (PING)
    for scale."""
    app = balloons.App(
        redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state_dir
    )
    pool, cap, _ = PATHS["launch"]
    app.pool(pool, max_machines=cap)
    task = app.task(timeout=60, pool=pool)(_balloons_tasks.noop.fn)
    store, opts, dispatcher = app.store, task.opts, app.dispatcher
    steps = [
        "submit_args (json, ulid, hmac, SubmitRequest)",
        "store.submit_start, spec while Redis works, the reply (1 round trip)",
        "after_submit (reply, Job)",
        "launch_slot (backend.launch, returns at once)",
        "for scale: redis-py PING round trip",
    ]
    times: dict[str, list[float]] = {step: [] for step in steps}
    for _ in range(k):
        t = [time.perf_counter()]
        jk, req = dispatcher.submit_args(task, opts, (), {})
        t.append(time.perf_counter())
        reply_of = store.submit_start(jk, req)
        spec = dispatcher.slots.spec(
            jk.pool.pool, jk.ulid, 1, req.cpus, req.memory_mb, opts.timeout
        )
        reply = reply_of()
        t.append(time.perf_counter())
        _job, launch = dispatcher.after_submit(jk, opts, reply)
        t.append(time.perf_counter())
        assert launch is not None
        dispatcher.launch_slot(launch, spec)
        t.append(time.perf_counter())
        store.redis.ping()
        t.append(time.perf_counter())
        for step, a, b in zip(steps, t[:-1], t[1:], strict=True):
            times[step].append(b - a)
    total = sum(statistics.median(v) for v in list(times.values())[:-1])
    print(f"\n## wall-clock breakdown of one balloons submit, new-slot path (median of {k})\n")
    print(
        table(
            ["step", "median us", "share"],
            [
                [step, f"{statistics.median(v) * 1e6:.1f}", f"{statistics.median(v) / total:.0%}"]
                for step, v in times.items()
            ],
        )
    )


def server_time(url: str, label: str, batch: Batch, k: int) -> None:
    """Valkey's own time per job (``INFO commandstats``). A script's time includes the
    commands it calls; those are listed too, indented."""
    from redis import Redis

    r = Redis.from_url(url)
    r.config_resetstat()
    wall = batch(k) / k
    stats: dict[str, dict[str, float]] = r.info("commandstats")  # type: ignore[assignment]
    r.close()
    rows = []
    total = 0.0
    # What each sends at top level (checked with MONITOR): balloons a pipeline of SADD + EVAL
    # and an EVAL; RQ two MULTI/EXEC blocks, which every other command runs inside.
    top = {"eval", "evalsha", "sadd"} if label.startswith("balloons") else {"multi", "exec"}
    for name, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
        cmd = name.removeprefix("cmdstat_")
        if cmd in ("config|resetstat", "info"):
            continue
        nested = cmd not in top
        if not nested:
            total += v["usec"] / k
        rows.append(
            [
                ("  " if nested else "") + cmd,
                f"{v['calls'] / k:.1f}",
                f"{v['usec_per_call']:.1f}",
                f"{v['usec'] / k:.1f}",
            ]
        )
    print(f"\n## Valkey time per job: {label} ({k} jobs, {wall * 1e6:.1f} us/job wall)\n")
    print(table(["command", "calls/job", "us/call", "us/job"], rows))
    print(f"server time per job: ~{total:.1f} us (indented: run inside a script or EXEC)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="measured submits per system")
    ap.add_argument("--batch", type=int, default=500, help="submits per alternating batch")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--profile", action="store_true", help="also profile one batch of each")
    args = ap.parse_args()

    import rq

    print(header("submit throughput: storing a no-op job (nothing launched)"))
    print(f"rq {rq.__version__}; n={args.n} per system in batches of {args.batch}\n")
    with valkey_server() as url, temp_state_dir() as state:
        systems = {
            **{f"balloons submit ({path})": balloons_batch(url, state, path) for path in PATHS},
            "rq enqueue": rq_batch(url),
            PING: ping_batch(url),
        }
        for batch, check in systems.values():
            check()
            batch(args.warmup)
        per_job: dict[str, list[float]] = {label: [] for label in systems}  # per batch
        total: dict[str, float] = dict.fromkeys(systems, 0.0)
        done = 0
        while done < args.n:
            k = min(args.batch, args.n - done)
            for label, (batch, _) in systems.items():
                dt = batch(k)
                total[label] += dt
                per_job[label].append(dt / k)
            done += k
        if args.profile:
            breakdown(url, state, args.batch * 4)
            for label, (batch, _) in systems.items():
                if label != PING:
                    server_time(url, label, batch, args.batch * 2)
            for label, (batch, _) in systems.items():
                if label != PING:
                    profile(label, batch, args.batch)

    rate = {label: 1 / statistics.median(xs) for label, xs in per_job.items()}
    rows = []
    for label, xs in per_job.items():
        rows.append(
            [
                label,
                f"{rate[label]:,.0f}",
                f"{args.n / total[label]:,.0f}",
                f"{statistics.median(xs) * 1e6:.1f}",
                f"{rate[label] / rate['rq enqueue']:.2f}x",
            ]
        )
    print(
        table(
            ["system", "jobs/s (median batch)", "jobs/s (overall)", "us/job", "/ rq enqueue"],
            rows,
        )
    )
    for path in PATHS:
        ratio = rate[f"balloons submit ({path})"] / rate["rq enqueue"]
        verdict = "OK" if ratio >= 2 else "below target"
        print(f"balloons submit ({path}) / rq enqueue: {ratio:.2f}x  (target >= 2.00x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
