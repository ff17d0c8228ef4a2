"""The peer job queues of the benchmarks (RQ, Celery, arq), each with its workers started as
subprocesses (``sys.executable``) against a Valkey of its own, and a no-op submitted and
waited for through each one's own client API. Not a benchmark itself.

Every peer has the same small surface: ``start()`` (workers up, one job through them),
``one()`` (submit one no-op and block until its result is back), ``batch(n)`` (submit ``n``
at once, then collect every result) and ``stop()`` (every process of its workers gone).
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, stop_process_group

RESULT_TIMEOUT = 60

RQ_WORKER = """
import logging, sys
from redis import Redis
from rq import Queue
import rq.worker as w
cls = {"simple": w.SimpleWorker, "fork": w.Worker}[sys.argv[1]]
conn = Redis.from_url(sys.argv[2])
worker = cls([Queue(sys.argv[3], connection=conn)], connection=conn)
worker.work(logging_level="WARNING", with_scheduler=False)
"""

ARQ_WORKER = """
from arq.worker import run_worker
import _arq_tasks
run_worker(_arq_tasks.WorkerSettings)
"""


class Peer(ABC):
    label = "?"

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="balloons-bench-peer-"))

    def spawn(self, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        """A worker process in a session of its own; its output goes to a log file that
        :meth:`check_alive` shows if it dies."""
        full = dict(os.environ)
        path = os.pathsep.join([str(BENCH_DIR), full.get("PYTHONPATH", "")]).rstrip(":")
        full.update(env, PYTHONPATH=path)
        with open(self.logs / f"worker-{len(self.procs)}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                env=full,
                cwd=BENCH_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def one(self) -> None: ...

    @abstractmethod
    def batch(self, n: int) -> None: ...

    def timed(self) -> Callable[[int], float]:
        """``batch`` as a function of ``n`` returning its wall time in seconds."""

        def run(n: int) -> float:
            t0 = time.perf_counter()
            self.batch(n)
            return time.perf_counter() - t0

        return run

    def stop(self) -> None:
        for proc in self.procs:
            stop_process_group(proc)
        self.procs.clear()
        for log in self.logs.iterdir():
            log.unlink()
        self.logs.rmdir()

    def check_alive(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                tail = (self.logs / f"worker-{i}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{self.label}: worker {i} exited with code {proc.returncode}:\n{tail}"
                )


class RQPeer(Peer):
    """RQ ``SimpleWorker`` (runs jobs in the worker process) or ``Worker`` (forks a work horse
    per job); results waited for with ``job.latest_result(timeout=...)``, a blocking read."""

    def __init__(self, url: str, workers: int = 1, kind: str = "simple") -> None:
        super().__init__()
        self.url, self.workers, self.kind = url, workers, kind
        cls = "SimpleWorker" if kind == "simple" else "Worker (fork)"
        self.label = f"rq {cls} x{workers}" if workers > 1 else f"rq {cls}"

    def start(self) -> None:
        import _rq_tasks
        from redis import Redis
        from rq import Queue

        self.fn = _rq_tasks.noop
        self.queue = Queue("bench", connection=Redis.from_url(self.url))
        for _ in range(self.workers):
            self.spawn(["-c", RQ_WORKER, self.kind, self.url, "bench"])
        self.batch(2 * self.workers)

    def _wait(self, job: Any) -> None:
        res = job.latest_result(timeout=RESULT_TIMEOUT)
        if res is None or res.type != res.Type.SUCCESSFUL:
            self.check_alive()
            raise RuntimeError(f"RQ job {job.id} did not succeed: {res!r}")

    def one(self) -> None:
        self._wait(self.queue.enqueue(self.fn))

    def batch(self, n: int) -> None:
        enqueue, fn = self.queue.enqueue, self.fn
        jobs = [enqueue(fn) for _ in range(n)]
        for job in jobs:
            self._wait(job)


class CeleryPeer(Peer):
    """Celery's prefork pool (``-c N``), Redis as broker and result backend on one Valkey;
    results waited for with ``AsyncResult.get()`` (pub/sub, no polling)."""

    def __init__(self, url: str, concurrency: int = 1) -> None:
        super().__init__()
        self.url, self.concurrency = url, concurrency
        self.label = f"celery prefork -c {concurrency}"

    def start(self) -> None:
        import _celery_tasks

        self.app = _celery_tasks.make_app(self.url)
        self.name = _celery_tasks.NOOP
        argv = ["-m", "celery", "-A", "_celery_tasks", "worker", "--pool", "prefork"]
        argv += ["-c", str(self.concurrency), "--loglevel", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.spawn(argv, BENCH_CELERY_URL=self.url)
        self.batch(4 * self.concurrency)

    # A finished AsyncResult unsubscribes from its result channel when it is collected; if
    # the collector runs inside a call that already holds the pub/sub connection, the client
    # deadlocks (celery 5.5). So the collector is paused during Celery's calls, and a batch
    # collects its own garbage at the end (inside its timed span).
    def one(self) -> None:
        gc.disable()
        try:
            self.app.send_task(self.name).get(timeout=RESULT_TIMEOUT)
        finally:
            gc.enable()

    def batch(self, n: int) -> None:
        gc.disable()
        try:
            send, name = self.app.send_task, self.name
            results = [send(name) for _ in range(n)]
            for r in results:
                r.get(timeout=RESULT_TIMEOUT)
            del results
            gc.collect()
        finally:
            gc.enable()

    def stop(self) -> None:
        # Finished AsyncResults unsubscribe when collected: do it while Valkey is still up.
        gc.collect()
        super().stop()
        if hasattr(self, "app"):
            self.app.close()


class ArqPeer(Peer):
    """arq with its queue polled every 10 ms; results waited for with ``job.result()``, which
    polls too (every 10 ms here)."""

    def __init__(self, url: str, workers: int = 1) -> None:
        super().__init__()
        self.url, self.workers = url, workers
        self.label = "arq poll 10 ms" + (f" x{workers}" if workers > 1 else "")
        self.loop = asyncio.new_event_loop()

    def start(self) -> None:
        import _arq_tasks
        from arq import create_pool
        from arq.connections import RedisSettings

        self.poll = _arq_tasks.POLL_DELAY
        self.pool = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(self.url)))
        for _ in range(self.workers):
            self.spawn(["-c", ARQ_WORKER], BENCH_ARQ_URL=self.url)
        self.batch(4)

    async def _batch(self, n: int) -> None:
        enqueue = self.pool.enqueue_job
        jobs = [await enqueue("noop") for _ in range(n)]
        for job in jobs:
            await job.result(timeout=RESULT_TIMEOUT, poll_delay=self.poll)

    def one(self) -> None:
        self.loop.run_until_complete(self._batch(1))

    def batch(self, n: int) -> None:
        self.loop.run_until_complete(self._batch(n))

    def stop(self) -> None:
        super().stop()
        if hasattr(self, "pool"):
            self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()
