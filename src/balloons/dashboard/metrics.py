"""``/metrics``: Prometheus metrics read from Redis at scrape time.

Nothing is counted in this process, and no job is read: the scripts that end attempts keep
running aggregates in each pool's ``stats`` hash (:mod:`.aggregates`), and a scrape reads those,
the pools' queue sizes and slot tables, and the machine records, so every replica of a web app
reports the same figures, a restart loses nothing, and a scrape costs the same at any number
of jobs. Counters only grow (Prometheus' ``rate()`` turns them into throughput).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..fly import stats as fly_stats
from ..listing import RUNNING_MACHINE_STATES
from ..store.keys import POOL_RE, PoolKeys, machine_key, machines_key
from ..store.writes import Store
from ..untrusted import json_object, shown, text
from . import aggregates
from .aggregates import KINDS, PoolStats
from .exposition import Counters, Histograms
from .exposition import exposition as exposition  # where the routes and tools import it

if TYPE_CHECKING:
    from ..app import App

#: Slot entries of one pool a scrape reads (a pool's cap bounds them; more were not written by
#: balloons).
MAX_SLOTS = 10_000
#: Machine records a scrape reads, newest first (as ``balloons machines`` lists them).
MAX_MACHINES = 1000
#: The states of a pool's machines, from its slot table and standby set.
SLOT_STATES = ("starting", "running", "idle", "standby")
#: Metric names of the histograms, by kind.
HISTOGRAMS = {
    "queue": "balloons_job_queue_wait_seconds",
    "boot": "balloons_machine_boot_seconds",
    "run": "balloons_job_run_seconds",
    "e2e": "balloons_job_end_to_end_seconds",
}


class StoreCollector(Collector):
    """Reads the store on every ``collect()``."""

    def __init__(self, store: Store, app: App | None = None) -> None:
        self.store = store
        self.app = app

    def describe(self) -> list[GaugeMetricFamily]:
        """Nothing: the metrics are known only when a scrape reads Redis."""
        return []  # no metrics are known before a scrape reads Redis

    def collect(
        self,
    ) -> Iterator[GaugeMetricFamily | Histograms | CounterMetricFamily]:
        """The metrics of this scrape: the pools' running aggregates, machines, cost, invalid
        records, and the Fly API calls of this process."""
        pools = self.store.pools()[: aggregates.MAX_POOLS]
        stats = aggregates.read(self.store, pools)
        invalid: Counter[tuple[str, str]] = Counter()  # (pool, kind of record)
        for pool, st in stats.items():
            if st.invalid:
                invalid[(pool, "stats")] += st.invalid
        yield from _jobs(stats)
        yield from _histograms(stats)
        yield from self._pools(pools, invalid)
        yield from self._machines(pools, invalid)
        yield from _fly_calls()
        if self.app is not None:
            yield from self._cost(pools, stats, invalid)
        bad = GaugeMetricFamily(
            "balloons_invalid_records",
            "Records in Redis that could not be read (altered?), by pool and kind: machine, "
            "slot (a pool's slot entry), usage (a pool's idle-time entry), stats (a field of a "
            "pool's aggregates).",
            labels=["pool", "kind"],
        )
        for (pool, kind), n in sorted(invalid.items()):
            bad.add_metric([pool, kind], n)
        yield bad

    def _pools(
        self, pools: Sequence[str], invalid: Counter[tuple[str, str]]
    ) -> Iterator[GaugeMetricFamily]:
        """Each pool's queue sizes and its machines by state, from its slot table."""
        ns = self.store.namespace
        with self.store.errors():
            pipe = self.store.redis.pipeline(transaction=False)
            for p in pools:
                pk = PoolKeys(ns, p)
                pipe.zcard(pk.queue)
                pipe.zcard(pk.delayed)
                pipe.hlen(pk.slot)
                pipe.hlen(pk.standby)
            sizes = pipe.execute()
            pipe = self.store.redis.pipeline(transaction=False)
            read = [p for i, p in enumerate(pools) if sizes[4 * i + 2] <= MAX_SLOTS]
            for p in read:
                pipe.hvals(PoolKeys(ns, p).slot)
            entries = dict(zip(read, pipe.execute(), strict=True))
        queued = GaugeMetricFamily(
            "balloons_pool_queued_jobs", "Jobs waiting for a machine, by pool.", labels=["pool"]
        )
        delayed = GaugeMetricFamily(
            "balloons_pool_delayed_jobs",
            "Jobs (and retries) waiting for their time, by pool.",
            labels=["pool"],
        )
        machines = GaugeMetricFamily(
            "balloons_pool_machines",
            "Machines holding a slot of the pool, by state (starting, running, idle), and its "
            "stopped standby machines.",
            labels=["pool", "state"],
        )
        for i, p in enumerate(pools):
            queued.add_metric([p], sizes[4 * i])
            delayed.add_metric([p], sizes[4 * i + 1])
            states = dict.fromkeys(SLOT_STATES, 0)
            states["standby"] = sizes[4 * i + 3]
            if p not in entries:
                invalid[(p, "slot")] += 1
            for raw in entries.get(p, []):
                state = _slot_state(raw)
                if state is None:
                    invalid[(p, "slot")] += 1
                else:
                    states[state] += 1
            for state, n in states.items():
                machines.add_metric([p, state], n)
        yield queued
        yield delayed
        yield machines

    def _cost(
        self, pools: Sequence[str], stats: dict[str, PoolStats], invalid: Counter[tuple[str, str]]
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        assert self.app is not None
        prices = self.app.prices
        usd = Counters(
            "balloons_cost_usd",
            "Estimated cost of the jobs' attempts (at the app's price table), by pool and task.",
            labels=["pool", "task"],
        )
        seconds = Counters(
            "balloons_machine_seconds",
            "Billed machine-seconds of the jobs' attempts (from launch to end, of machines that "
            "ran them), by pool and task.",
            labels=["pool", "task"],
        )
        task_seconds = Counters(
            "balloons_task_seconds",
            "Seconds the tasks ran, by pool and task.",
            labels=["pool", "task"],
        )
        for pool, st in sorted(stats.items()):
            rows: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for (cpus, mem, task), s in st.machine_seconds.items():
                rows[task][0] += s
                rows[task][1] += s * prices.per_second(cpus, mem)
            for task in sorted(set(rows) | set(st.task_seconds)):
                machine_s, dollars = rows.get(task, (0.0, 0.0))
                usd.add_row([pool, task], dollars)
                seconds.add_row([pool, task], machine_s)
                task_seconds.add_row([pool, task], st.task_seconds.get(task, 0.0))
        yield usd
        yield seconds
        yield task_seconds
        yield from _idle(self.store, pools, self.app, invalid)

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
        raw: Counter[tuple[object, object]] = Counter(machine_states(self.store))
        states: Counter[tuple[str, str]] = Counter()
        for (raw_pool, raw_state), n in raw.items():  # each distinct pair read once
            pool = text(raw_pool) or ""
            if pool and not POOL_RE.match(pool):
                invalid[("", "machine")] += n
                continue
            states[(pool, shown(text(raw_state) or "unknown"))] += n
        for (pool, state), n in sorted(states.items()):
            machines.add_metric([pool, state], n)
        for pool in sorted(set(pools) | {p for p, _ in states}):
            n = sum(v for (p, s), v in states.items() if p == pool and s in RUNNING_MACHINE_STATES)
            running.add_metric([pool], n)
        yield machines
        yield running


def machine_states(store: Store, limit: int = MAX_MACHINES) -> list[tuple[object, object]]:
    """The ``pool`` and ``state`` of the newest ``limit`` machine records, as read (hostile;
    ``None`` for a field or record that is gone): one ``SORT_RO ... GET`` on a single server,
    so Redis looks the records up rather than this process parsing a reply per machine; a
    pipeline of ``HMGET`` on a cluster (where the records' keys are on every node) or a server
    that refuses ``SORT_RO`` (older than 7.0, or an ACL)."""
    import redis

    ns = store.namespace
    with store.errors():
        client = store.redis
        if not isinstance(client, redis.cluster.RedisCluster):
            pattern = machine_key(ns, "*")
            try:
                flat = client.execute_command(
                    "SORT_RO", machines_key(ns), "BY", "nosort", "LIMIT", 0, limit,
                    "GET", f"{pattern}->pool", "GET", f"{pattern}->state", "DESC",
                )  # fmt: skip
            except redis.ResponseError:
                pass
            else:
                rows = zip(flat[::2], flat[1::2], strict=True)
                return [(p, st) for p, st in rows if p is not None or st is not None]
        ids = client.zrevrange(machines_key(ns), 0, limit - 1)
        pipe = client.pipeline(transaction=False)
        for mid in ids:
            pipe.hmget(machine_key(ns, text(mid) or ""), "pool", "state")
        return [(p, st) for p, st in pipe.execute() if p is not None or st is not None]


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


def _jobs(stats: dict[str, PoolStats]) -> Iterator[CounterMetricFamily]:
    ended = Counters(
        "balloons_jobs_ended",
        "Jobs ended, by pool, task, status (SUCCEEDED, FAILED, CANCELLED) and failure reason.",
        labels=["pool", "task", "status", "reason"],
    )
    retried = Counters(
        "balloons_attempts_retried",
        "Attempts that failed with a retry scheduled, by pool, task and reason.",
        labels=["pool", "task", "reason"],
    )
    for pool, st in sorted(stats.items()):
        for (status, reason, task), n in sorted(st.ended.items()):
            ended.add_row([pool, task, status, reason], n)
        for (reason, task), n in sorted(st.retried.items()):
            retried.add_row([pool, task, reason], n)
    yield ended
    yield retried


def _histograms(stats: dict[str, PoolStats]) -> Iterator[Histograms]:
    for kind, name in HISTOGRAMS.items():
        hist = Histograms(name, f"Seconds of {KINDS[kind]}, by pool and task.")
        for pool, st in sorted(stats.items()):
            for (k, task), h in sorted(st.histograms.items()):
                if k == kind:
                    hist.add_row(pool, task, h)
        yield hist


def _idle(
    store: Store, pools: Sequence[str], app: App, invalid: Counter[tuple[str, str]]
) -> Iterator[GaugeMetricFamily]:
    from ..cost import usage_size

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
    for pool, fields in sorted(store.usage(pools).items()):
        total = dollars = 0.0
        for name, s in fields.items():
            size = usage_size(name)
            if size is None or s is None:
                invalid[(pool, "usage")] += 1
                continue
            total += s
            dollars += s * app.prices.per_second(*size)
        idle.add_metric([pool], total)
        idle_usd.add_metric([pool], dollars)
    yield idle
    yield idle_usd


def _slot_state(raw: bytes) -> str | None:
    """The state of a slot entry as read (hostile): starting, running or idle, else None."""
    entry = json_object(raw)  # None for what is no JSON object, or nests too deep
    state = entry.get("state") if entry is not None else None
    return state if state in ("starting", "running", "idle") else None


def registry_for(store: Store, app: App | None = None) -> CollectorRegistry:
    """A registry holding only the store's collector, read at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, app=app))
    return registry
