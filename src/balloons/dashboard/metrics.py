"""``/metrics``: Prometheus metrics read from Redis at scrape time.

Nothing is counted in this process: a scrape reads the job index and machine records (the
same reads as ``balloons pools``), so every replica of a web app reports the same figures and
a restart loses nothing. Jobs are those still kept in Redis (within the record TTL).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..fly import stats as fly_stats
from ..info import MachineInfo
from ..listing import CHUNK, RUNNING_MACHINE_STATES, scan
from ..store.writes import Store
from ..untrusted import shown

if TYPE_CHECKING:
    from ..app import App
    from ..cost import CostReport

#: Newest jobs per pool a scrape reads.
METRICS_SCAN_LIMIT = 100_000
#: The record fields a scrape reads.
FIELDS = ("status", "payload", "created", "started", "finished")
#: Upper bounds (seconds) of the run-time histogram buckets.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)


class StoreCollector(Collector):
    """Reads the store on every ``collect()``."""

    def __init__(
        self, store: Store, scan_limit: int = METRICS_SCAN_LIMIT, app: App | None = None
    ) -> None:
        self.store = store
        self.scan_limit = scan_limit
        self.app = app

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # no metrics are known before a scrape reads Redis

    def collect(
        self,
    ) -> Iterator[GaugeMetricFamily | HistogramMetricFamily | CounterMetricFamily]:
        pools = self.store.pools()
        by_status: Counter[tuple[str, str, str]] = Counter()
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        invalid: Counter[tuple[str, str]] = Counter()  # (pool, kind of record)
        seen = []
        for info in scan(self.store, pools, self.scan_limit, CHUNK, FIELDS):
            seen.append(info)
            by_status[(info.pool, shown(info.task), info.status.value)] += 1
            if info.problems:
                invalid[(info.pool, "job")] += 1
            if info.duration is not None:
                durations[(info.pool, shown(info.task))].append(info.duration)

        jobs = GaugeMetricFamily(
            "balloons_jobs",
            "Jobs kept in Redis, by pool, task and status.",
            labels=["pool", "task", "status"],
        )
        for (pool, task, status), n in sorted(by_status.items()):
            jobs.add_metric([pool, task, status], n)
        yield jobs

        queued = GaugeMetricFamily(
            "balloons_pool_queued_jobs", "Jobs waiting for a machine, by pool.", labels=["pool"]
        )
        for pool in pools:
            n = sum(v for (p, _, s), v in by_status.items() if p == pool and s == "QUEUED")
            queued.add_metric([pool], n)
        yield queued

        hist = HistogramMetricFamily(
            "balloons_job_duration_seconds",
            "Run time (start to end) of finished jobs kept in Redis, by pool and task.",
            labels=["pool", "task"],
        )
        for (pool, task), values in sorted(durations.items()):
            buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in DURATION_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            hist.add_metric([pool, task], buckets, sum_value=sum(values))
        yield hist

        yield from self._machines(pools, invalid)
        yield from _fly_calls()
        if self.app is not None:
            report = self.app.costs(pools, jobs=seen)
            invalid.update(report.invalid)
            yield from _cost(report)
        bad = GaugeMetricFamily(
            "balloons_invalid_records",
            "Records in Redis that could not be read (altered?), by pool and kind: job, "
            "attempts (a job's attempt records), machine, usage (a pool's idle-time entry).",
            labels=["pool", "kind"],
        )
        for (pool, kind), n in sorted(invalid.items()):
            bad.add_metric([pool, kind], n)
        yield bad

    def _machines(
        self, pools: list[str], invalid: Counter[tuple[str, str]]
    ) -> Iterator[GaugeMetricFamily]:
        """Machines by pool and state, and those still running, from their records; a record
        that cannot be read is counted in ``invalid``."""
        machines = GaugeMetricFamily(
            "balloons_machines",
            "Machines with a record in Redis, by pool and state.",
            labels=["pool", "state"],
        )
        running = GaugeMetricFamily(
            "balloons_pool_running_machines", "Machines still running, by pool.", labels=["pool"]
        )
        states: Counter[tuple[str, str]] = Counter()
        for m in self.store.machine_records():
            found = MachineInfo.from_record(m["id"], m, "local")
            if found.problems or (m.get("pool") and found.pool is None):
                invalid[(found.pool or "", "machine")] += 1
                continue
            states[(found.pool or "", shown(found.state))] += 1
        for (pool, state), n in sorted(states.items()):
            machines.add_metric([pool, state], n)
        for pool in sorted(set(pools) | {p for p, _ in states}):
            n = sum(v for (p, s), v in states.items() if p == pool and s in RUNNING_MACHINE_STATES)
            running.add_metric([pool], n)
        yield machines
        yield running


def _fly_calls() -> Iterator[CounterMetricFamily]:
    """The Fly API calls this process made (its client and supervisor threads)."""
    calls = CounterMetricFamily(
        "balloons_fly_api_calls",
        "Fly Machines API calls made by this process, by action and outcome.",
        labels=["action", "outcome"],
    )
    errors = CounterMetricFamily(
        "balloons_fly_api_errors",
        "Fly Machines API calls of this process that failed (4xx, 429, 5xx, no answer).",
        labels=["action"],
    )
    failed: Counter[str] = Counter()
    for (action, outcome), n in sorted(fly_stats.snapshot().items()):
        calls.add_metric([action, outcome], n)
        if fly_stats.is_error(outcome):
            failed[action] += n
    for action, n in sorted(failed.items()):
        errors.add_metric([action], n)
    yield calls
    yield errors


def _cost(report: CostReport) -> Iterator[GaugeMetricFamily]:
    usd = GaugeMetricFamily(
        "balloons_cost_usd",
        "Estimated cost of the jobs kept in Redis (at the app's price table), by pool and task.",
        labels=["pool", "task"],
    )
    seconds = GaugeMetricFamily(
        "balloons_machine_seconds",
        "Billed machine-seconds of the jobs kept in Redis, by pool and task.",
        labels=["pool", "task"],
    )
    task_seconds = GaugeMetricFamily(
        "balloons_task_seconds",
        "Seconds the tasks of the jobs kept in Redis ran, by pool and task.",
        labels=["pool", "task"],
    )
    idle = GaugeMetricFamily(
        "balloons_idle_machine_seconds",
        "Seconds warm machines waited for work, by pool (not attributed to any job).",
        labels=["pool"],
    )
    idle_usd = GaugeMetricFamily(
        "balloons_idle_cost_usd",
        "Estimated cost of warm machines' idle time, by pool.",
        labels=["pool"],
    )
    rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for (pool, task), t in report.by_pool_task.items():
        row = rows[(pool, shown(task))]  # as the label shows it: one row per label
        row[0] += t.usd
        row[1] += t.machine_seconds
        row[2] += t.task_seconds
    for (pool, task), (dollars, machine_s, task_s) in sorted(rows.items()):
        usd.add_metric([pool, task], dollars)
        seconds.add_metric([pool, task], machine_s)
        task_seconds.add_metric([pool, task], task_s)
    for pool in sorted(report.idle_seconds):
        idle.add_metric([pool], report.idle_seconds[pool])
        idle_usd.add_metric([pool], report.idle_usd[pool])
    yield usd
    yield seconds
    yield task_seconds
    yield idle
    yield idle_usd


def registry_for(store: Store, app: App | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, app=app))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
