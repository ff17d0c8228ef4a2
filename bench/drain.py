"""Drain: N no-op jobs submitted at once, jobs/s from the first submit to the last result.

balloons (``LocalBackend``, machines forked) with warm reuse, for each cap in ``--caps``:

* *warm*: the pool's machines are already up and idle when the burst arrives (as the peers'
  workers are); they are checked idle before each round;
* *cold*: the pool starts from zero machines (scale to zero: a short idle timeout, and the
  round waits until every machine has exited), so launching them is part of the drain.

Peers, each with its workers already running, against a Valkey of its own: Celery prefork
``-c 2`` (Redis broker and result backend), arq with its queue polled every 10 ms (one worker
process, arq's own concurrency of 10 jobs; results polled every 10 ms too) and RQ
``SimpleWorker`` x2. Every system submits all N jobs first, then collects every result in
submission order through its own client API. Rounds take turns across the systems; the
figure is the median round.

    .venv/bin/python bench/drain.py [--n 1000] [--rounds 3] [--caps 2,4] [--no-cold] [--profile]
                                    [--cpu]

``--profile`` adds Valkey's own work per balloons job (``INFO commandstats``) for one warm
round of the first cap. ``--cpu`` adds, for every system, the CPU time per job of each of its
parts over all the measured rounds: the submitting and waiting process, the workers (with
their children: balloons' machines and their job processes, Celery's pool, arq's and RQ's
workers) and the system's own Valkey (``INFO cpu``). On a shared machine the drain rate follows
the CPU a system spends per job more than anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _balloons_tasks
from _common import (
    SECRET,
    header,
    machines_of,
    server_profile,
    shutdown_local,
    stop_machines,
    table,
    temp_state_dir,
    valkey_server,
    wait_pool_empty,
)
from _peers import ArqPeer, CeleryPeer, Peer, RQPeer

import balloons
from balloons.store.resp import RespClient

COLD_IDLE = 0.3  # seconds: cold pools scale to zero between rounds
WARM_IDLE = 600.0  # seconds: warm pools keep their machines for the whole run


class BalloonsDrain:
    def __init__(self, app: balloons.App, cap: int, warm: bool, isolation: str) -> None:
        self.app, self.cap, self.warm = app, cap, warm
        self.pool = f"drain{cap}{'w' if warm else 'c'}-{isolation}"
        self.label = f"balloons {'warm' if warm else 'cold'} max_machines={cap} ({isolation})"
        app.pool(
            self.pool,
            max_machines=cap,
            idle_timeout=WARM_IDLE if warm else COLD_IDLE,
            isolation=isolation,
        )
        self.task = app.task(timeout=60, pool=self.pool)(_balloons_tasks.noop.fn)
        self.machines: list[int] = []
        self.submit_s: list[float] = []

    def prepare(self) -> None:
        """Warm: every machine of the pool up and idle. Cold: none left."""
        if not self.warm:
            wait_pool_empty(self.app, self.pool)
            return
        stats = self.app.store.pool_stats(self.pool)
        if stats["machines"] < self.cap:
            jobs = [self.task.submit() for _ in range(20 * self.cap)]
            for job in jobs:
                job.result(timeout=60)
        deadline = time.monotonic() + 10
        while True:
            stats = self.app.store.pool_stats(self.pool)
            if stats["idle"] == self.cap == stats["machines"]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: machines not all idle: {stats}")
            time.sleep(0.01)

    def batch(self, n: int) -> float:
        self.prepare()
        submit = self.task.submit
        t0 = time.perf_counter()
        jobs = [submit() for _ in range(n)]
        t1 = time.perf_counter()
        for job in jobs:
            job.result(timeout=60)
        dt = time.perf_counter() - t0
        self.submit_s.append(t1 - t0)
        machines, _ = machines_of(jobs)
        self.machines.append(len(machines))
        return dt


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + sys) of the processes ``roots`` and their descendants, with the
    children each has reaped (``/proc``: ticks of 10 ms, so over a whole drain)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    todo, total, seen = list(roots), 0, set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += ticks.get(pid, 0)
        todo += [child for child, ppid in parent.items() if ppid == pid]
    return total / os.sysconf("SC_CLK_TCK")


def valkey_cpu(url: str) -> float:
    client = RespClient(url)
    info = client.execute("INFO", "cpu")
    client.close()
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


class CpuMeter:
    """The CPU a system spends on its drains, by part (see ``--cpu``)."""

    def __init__(self, url: str, workers: Callable[[], list[int]]) -> None:
        self.url, self.workers = url, workers
        self.spent = {"client": 0.0, "workers": 0.0, "valkey": 0.0}
        self.jobs = 0

    def timed(self, run: Callable[[int], float]) -> Callable[[int], float]:
        def measured(n: int) -> float:
            me0, w0, v0 = resource.getrusage(resource.RUSAGE_SELF), None, valkey_cpu(self.url)
            w0 = tree_cpu(self.workers())
            dt = run(n)
            me1 = resource.getrusage(resource.RUSAGE_SELF)
            self.spent["workers"] += tree_cpu(self.workers()) - w0
            self.spent["valkey"] += valkey_cpu(self.url) - v0
            self.spent["client"] += me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime
            self.jobs += n
            return dt

        return measured


def cpu_meters(
    backend: balloons.LocalBackend, url: str, ours: list[BalloonsDrain], peers: list[Peer]
) -> dict[str, CpuMeter]:
    """A meter per system: balloons' fork server (its machines, their job processes) and
    Valkey; each peer's worker processes and Valkey."""
    server = int(backend._request({"op": "ping"})["pid"])
    meters = {s.label: CpuMeter(url, lambda: [server]) for s in ours}
    for peer in peers:
        meters[peer.label] = CpuMeter(peer.url, lambda p=peer: [x.pid for x in p.procs])
    return meters


def print_cpu(meters: dict[str, CpuMeter]) -> None:
    if not meters:
        return
    rows = []
    for label, m in meters.items():
        per = {k: v / m.jobs * 1e6 for k, v in m.spent.items()}
        rows.append([label, *(f"{per[k]:,.0f}" for k in per), f"{sum(per.values()):,.0f}"])
    heads = ["system", "client us/job", "workers us/job", "Valkey us/job", "total us/job"]
    print("\nCPU per job, over the measured rounds (balloons' Valkey is shared by its pools)")
    print(table(heads, rows))
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="jobs per drain")
    ap.add_argument("--rounds", type=int, default=3, help="measured drains per system")
    ap.add_argument("--caps", default="2,4", help="max_machines values to run balloons with")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-pool variants")
    ap.add_argument("--profile", action="store_true", help="Valkey commandstats per job")
    ap.add_argument("--cpu", action="store_true", help="CPU per job of each system, by part")
    ap.add_argument(
        "--isolation",
        default="process",
        help="the pools' isolations, comma-separated (default: process; e.g. process,none)",
    )
    args = ap.parse_args()
    caps = [int(c) for c in args.caps.split(",") if c]

    try:
        import arq
    except ImportError:
        raise SystemExit(
            "drain.py needs arq, which needs redis-py < 6: it is kept out of .venv. Run "
            "scripts/bench-venv, then .venv-bench/bin/python bench/drain.py"
        ) from None
    import celery
    import rq

    print(header(f"drain: {args.n} no-op jobs at once, first submit -> last result"))
    print(
        f"rq {rq.__version__}, celery {celery.__version__}, arq {arq.VERSION}; "
        f"{args.rounds} rounds per system, taking turns\n"
    )

    with contextlib.ExitStack() as stack:
        state: Path = stack.enter_context(temp_state_dir())
        url = stack.enter_context(valkey_server())
        backend = balloons.LocalBackend(start="fork")
        app = balloons.App(redis_url=url, secret=SECRET, backend=backend, state_dir=state)
        stack.callback(app.close)
        stack.callback(shutdown_local, backend)
        stack.callback(stop_machines, backend)
        isolations = [i for i in args.isolation.split(",") if i]
        ours = [BalloonsDrain(app, cap, True, iso) for cap in caps for iso in isolations]
        if not args.no_cold:
            ours += [BalloonsDrain(app, cap, False, iso) for cap in caps for iso in isolations]
        peers: list[Peer] = [
            CeleryPeer(stack.enter_context(valkey_server()), 2),
            ArqPeer(stack.enter_context(valkey_server())),
            RQPeer(stack.enter_context(valkey_server()), 2, "simple"),
        ]
        for peer in peers:
            stack.callback(peer.stop)
            peer.start()
        for system in ours:
            system.prepare()
            if not system.warm:  # unmeasured: starts the fork server, then scale to zero
                system.batch(4 * system.cap)
            system.machines.clear(), system.submit_s.clear()
        systems: dict[str, Callable[[int], float]] = {s.label: s.batch for s in ours}
        for peer in peers:
            systems[peer.label] = peer.timed()
        meters = cpu_meters(backend, url, ours, peers) if args.cpu else {}
        systems = {
            label: meters[label].timed(run) if meters else run for label, run in systems.items()
        }
        samples: dict[str, list[float]] = {label: [] for label in systems}
        for _ in range(args.rounds):
            for label, run in systems.items():
                samples[label].append(run(args.n))
        if args.profile:
            first = ours[0]
            server_profile(url, first.label, lambda: first.batch(args.n), args.n)
            del first.machines[args.rounds :], first.submit_s[args.rounds :]

    rate = {label: args.n / statistics.median(xs) for label, xs in samples.items()}
    best_peer = max((p.label for p in peers), key=lambda label: rate[label])
    rows = []
    for label, xs in samples.items():
        rows.append(
            [
                label,
                f"{rate[label]:,.0f}",
                f"{args.n / min(xs):,.0f}",
                f"{statistics.median(xs) * 1000:,.0f}",
                f"{rate[label] / rate[best_peer]:.2f}x",
            ]
        )
    print(table(["system", "jobs/s (median)", "jobs/s (best)", "drain ms", "/ best peer"], rows))
    print()
    for s in ours:
        print(
            f"{s.label}: machines per round {s.machines}; submitting alone took "
            f"{statistics.median(s.submit_s) * 1000:.0f} ms of the drain (median)"
        )
    print_cpu(meters)
    print(f"best peer: {best_peer} ({rate[best_peer]:,.0f} jobs/s)")
    for s in ours:
        ratio = rate[s.label] / rate[best_peer]
        verdict = "met" if ratio >= 1 else "NOT met"
        print(f"{s.label} / best peer: {ratio:.2f}x  (target >= 1.00x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
