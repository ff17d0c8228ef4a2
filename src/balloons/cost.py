"""What jobs cost: machine-seconds by guest size, priced with a table kept as data.

Every attempt is billed from its launch (the slot taken for a new machine, or the moment a warm
machine took the job) to its end, at the size of the machine that ran it; an attempt no machine
claimed before it ended (a launch that failed, a machine that never booted) is billed nothing.
A warm machine's idle time between jobs (and before it gives its slot back) belongs to its
pool, not to a job: the ``TAKE`` script adds it to the pool's ``usage`` hash, per size. Figures
are estimates at Fly's published prices (``prices.json``: the prices of Fly's lowest-priced
regions and each region's markup, with the source and date), whichever backend ran the job; an
app can override the table (``App(prices=PATH)``, ``BALLOONS_PRICES``).

The *efficiency* of a set of jobs is billed machine-seconds divided by task-seconds (the time
their tasks ran): 1.0 would mean no boot, queueing or idle time was paid for.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .info import AttemptInfo, JobInfo
from .untrusted import MAX_CPUS, MAX_MEMORY_MB, integer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .store.queries import Query

_MONTH = 30 * 24 * 3600


@dataclass(frozen=True)
class PriceTable:
    """Per-second prices of machine sizes. Load with :meth:`load`."""

    presets: dict[str, dict[str, Any]]
    ram_usd_per_gb_month: float
    region_multipliers: dict[str, float]
    seconds_per_month: float = _MONTH
    source: str = ""
    checked: str = ""
    cpu_kind: str = "shared"
    region: str | None = None

    @classmethod
    def load(
        cls,
        override: str | None = None,
        *,
        cpu_kind: str = "shared",
        region: str | None = None,
    ) -> PriceTable:
        """The packaged table, with the parts a JSON file at ``override`` names replaced."""
        data: dict[str, Any] = json.loads(
            resources.files("balloons").joinpath("prices.json").read_text()
        )
        if override:
            try:
                with open(override) as fh:
                    extra = json.load(fh)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read the price table {override!r}: {exc}") from None
            if not isinstance(extra, dict):
                raise ConfigError(f"price table {override!r} must hold a JSON object")
            data = _merge(data, extra)
        if cpu_kind not in ("shared", "performance"):
            raise ConfigError(f"cpu_kind must be 'shared' or 'performance', got {cpu_kind!r}")
        try:
            table = cls(
                presets={str(k): dict(v) for k, v in data["presets"].items()},
                ram_usd_per_gb_month=_figure(data.get("ram_usd_per_gb_month", 0)),
                region_multipliers={
                    str(k): _figure(v) for k, v in data.get("region_multipliers", {}).items()
                },
                seconds_per_month=float(data.get("seconds_per_month", _MONTH)),
                source=str(data.get("source", "")),
                checked=str(data.get("checked", "")),
                cpu_kind=cpu_kind,
                region=region,
            )
            table.check()
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ConfigError(
                f"malformed price table: {exc!r} (expected presets, ram_usd_per_gb_month and "
                "region_multipliers as in balloons/prices.json)"
            ) from None
        return table

    def check(self) -> None:
        """``ValueError`` unless every figure is a number in range and the table has a preset
        of its CPU kind (so that :meth:`per_second` prices any size)."""
        for name, p in self.presets.items():
            if not (
                _whole(p.get("cpus")) >= 1
                and _whole(p.get("memory_mb")) >= 0
                and _amount(p.get("usd_per_month"))
                and isinstance(p.get("cpu_kind"), str)
            ):
                raise ValueError(
                    f"preset {name!r} needs cpu_kind, cpus (>= 1), memory_mb and usd_per_month "
                    f"(numbers >= 0), got {p!r}"
                )
        if not any(p["cpu_kind"] == self.cpu_kind for p in self.presets.values()):
            raise ValueError(f"no {self.cpu_kind} preset")
        figures = [self.ram_usd_per_gb_month, *self.region_multipliers.values()]
        if not all(_amount(v) for v in figures) or not self.seconds_per_month > 0:
            raise ValueError("prices, markups and seconds_per_month must be finite numbers >= 0")

    def preset(self, cpus: int) -> tuple[str, dict[str, Any]]:
        """The preset of this table's CPU kind with ``cpus`` CPUs: the next larger if none has
        exactly that many, the largest if none has as many (see :meth:`per_second`)."""
        kind = sorted(
            (int(p["cpus"]), name, p)
            for name, p in self.presets.items()
            if p.get("cpu_kind") == self.cpu_kind
        )
        _, name, p = next((row for row in kind if row[0] >= cpus), kind[-1])
        return name, p

    def per_second(self, cpus: int, memory_mb: int, region: str | None = None) -> float:
        """USD per second of a started machine of this size, any size: up to the largest
        preset of the table's CPU kind, the price of the preset that fits (plus the RAM
        add-on beyond its memory); beyond it, that preset's price per CPU (with its memory
        per CPU included) times ``cpus``, plus the RAM add-on beyond the memory included."""
        _, p = self.preset(cpus)
        preset_cpus, preset_mb = int(p["cpus"]), int(p["memory_mb"])
        monthly, included_mb = float(p["usd_per_month"]), float(preset_mb)
        if cpus > preset_cpus:
            monthly *= cpus / preset_cpus
            included_mb *= cpus / preset_cpus
        extra_gb = max(0.0, memory_mb - included_mb) / 1024
        monthly += extra_gb * self.ram_usd_per_gb_month
        where = region or self.region or "default"
        mult = self.region_multipliers.get(where, self.region_multipliers.get("default", 1.0))
        return monthly * mult / self.seconds_per_month


def _whole(v: Any) -> int:
    """A whole number of the table, or -1."""
    return v if isinstance(v, int) and not isinstance(v, bool) else -1


def _amount(v: Any) -> bool:
    """Whether ``v`` is a finite number >= 0 (a price, a markup)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _figure(v: Any) -> float:
    """A number of the table, given bare or as ``{"value": number, "confirmed": ...}``."""
    return float(v["value"] if isinstance(v, dict) else v)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s values, objects merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        old = out.get(k)
        out[k] = _merge(old, v) if isinstance(v, dict) and isinstance(old, dict) else v
    return out


@dataclass(frozen=True)
class AttemptCost:
    """What one attempt cost: its machine's size, billed machine-seconds (launch to end),
    task-seconds (start to end), estimated USD, and whether a warm machine ran it."""

    number: int
    cpus: int
    memory_mb: int
    machine_seconds: float
    task_seconds: float
    usd: float
    warm: bool


@dataclass(frozen=True)
class JobCost:
    """What one job's attempts cost, as returned by ``job.cost()``."""

    job_id: str
    attempts: tuple[AttemptCost, ...]

    @property
    def machine_seconds(self) -> float:
        """Billed machine-seconds of every attempt."""
        return sum(a.machine_seconds for a in self.attempts)

    @property
    def task_seconds(self) -> float:
        """Seconds the task ran, over every attempt."""
        return sum(a.task_seconds for a in self.attempts)

    @property
    def usd(self) -> float:
        """Estimated US dollars of every attempt."""
        return sum(a.usd for a in self.attempts)

    @property
    def efficiency(self) -> float | None:
        """Billed machine-seconds per task-second (None before a task ran)."""
        return self.machine_seconds / self.task_seconds if self.task_seconds > 0 else None


def attempt_cost(
    a: AttemptInfo, prices: PriceTable, now: float, default_size: tuple[int, int]
) -> AttemptCost:
    """What attempt ``a`` cost at ``prices``, an attempt still running counted up to ``now``;
    ``default_size`` (cpus, memory_mb) for one recorded without its size."""
    cpus = a.cpus or default_size[0]
    mem = a.memory_mb or default_size[1]
    start = a.launched_at or a.started_at
    end = a.ended_at or now
    # An attempt that ended with no machine ever claiming it (its launch failed, or its
    # machine never booted) had no machine to bill: it is charged nothing, however long its
    # slot waited. One still booting is billed from its launch, as its machine is.
    ran = a.started_at is not None or a.machine_id is not None or a.ended_at is None
    machine = max(0.0, end - start) if start and ran else 0.0
    task = max(0.0, end - a.started_at) if a.started_at else 0.0
    return AttemptCost(
        a.number, cpus, mem, machine, task, machine * prices.per_second(cpus, mem), a.warm
    )


def job_cost(info: JobInfo, prices: PriceTable, size: tuple[int, int], now: float) -> JobCost:
    """``size``: the job's (cpus, memory_mb), for attempts recorded without one."""
    return JobCost(info.id, tuple(attempt_cost(a, prices, now, size) for a in info.attempts))


@dataclass
class Total:
    """Totals of a group of jobs (a task, a pool, an hour)."""

    jobs: int = 0
    machine_seconds: float = 0.0
    task_seconds: float = 0.0
    usd: float = 0.0

    def add(self, c: JobCost) -> None:
        """Count job cost ``c`` in these totals."""
        self.jobs += 1
        self.machine_seconds += c.machine_seconds
        self.task_seconds += c.task_seconds
        self.usd += c.usd

    @property
    def efficiency(self) -> float | None:
        """Billed machine-seconds per task-second (None before a task ran)."""
        return self.machine_seconds / self.task_seconds if self.task_seconds > 0 else None


@dataclass
class CostReport:
    """Totals per task, per pool and per hour; pools' idle warm-machine time apart."""

    by_task: dict[str, Total] = field(default_factory=lambda: defaultdict(Total))
    by_pool: dict[str, Total] = field(default_factory=lambda: defaultdict(Total))
    by_hour: dict[float, Total] = field(default_factory=lambda: defaultdict(Total))
    by_pool_task: dict[tuple[str, str], Total] = field(default_factory=lambda: defaultdict(Total))
    idle_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    idle_usd: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    total: Total = field(default_factory=Total)
    #: Records left out or read in part because they could not be read (altered in Redis),
    #: by (pool, kind): ``attempts`` (jobs with an unreadable attempt record), ``usage``.
    invalid: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    @property
    def usd(self) -> float:
        """Estimated US dollars of the jobs and of the pools' idle warm machines."""
        return self.total.usd + sum(self.idle_usd.values())


def report(
    jobs: Iterable[tuple[JobInfo, tuple[int, int]]],
    usage: Mapping[str, Mapping[str, float | None]],
    prices: PriceTable,
    now: float,
) -> CostReport:
    """Totals of ``jobs`` (each with its size); ``usage``: each pool's ``idle:CPUS:MB`` seconds
    (None: not a number). Entries that cannot be read are counted in :attr:`CostReport.invalid`."""
    out = CostReport()
    for info, size in jobs:
        if any(a.problems for a in info.attempts):
            out.invalid[(info.pool, "attempts")] += 1
        c = job_cost(info, prices, size, now)
        if not c.attempts:
            continue
        out.by_task[info.task].add(c)
        out.by_pool[info.pool].add(c)
        out.by_pool_task[(info.pool, info.task)].add(c)
        out.by_hour[(info.created_at // 3600) * 3600].add(c)
        out.total.add(c)
    for pool, fields in usage.items():
        for name, seconds in fields.items():
            idle = usage_size(name)
            if idle is None or seconds is None:
                out.invalid[(pool, "usage")] += 1  # not an entry TAKE writes
                continue
            out.idle_seconds[pool] += seconds
            out.idle_usd[pool] += seconds * prices.per_second(*idle)
    return out


def usage_size(name: str) -> tuple[int, int] | None:
    """The machine size of a pool's usage entry ``idle:CPUS:MB``; None for any other name."""
    kind, _, dims = name.partition(":")
    cpus, _, mem = dims.partition(":")
    n, mb = integer(cpus, 1, MAX_CPUS), integer(mem, 1, MAX_MEMORY_MB)
    if kind != "idle" or n is None or mb is None:
        return None
    return n, mb


def prices_for(override: str | None, env: Mapping[str, str]) -> PriceTable:
    """An app's price table: ``prices.json``, with the parts named by ``override``
    (``App(prices=PATH)``) or ``BALLOONS_PRICES`` replaced, for its Fly CPU kind and region."""
    return PriceTable.load(
        override or env.get("BALLOONS_PRICES") or None,
        cpu_kind=env.get("BALLOONS_FLY_CPU_KIND") or "shared",
        region=env.get("BALLOONS_FLY_REGION") or env.get("FLY_REGION") or None,
    )


def stored_report(
    ns: str,
    pools: Sequence[str] | None,
    limit: int,
    jobs: Sequence[JobInfo] | None,
    prices: PriceTable,
) -> Query[CostReport]:
    """The cost report of the jobs kept in Redis (newest ``limit`` per pool, or ``jobs``: summaries
    already read, with ``created``, whose attempts are read here) and each pool's idle time, as
    a query for the sync or the asyncio client (see :mod:`balloons.store.queries`)."""
    import dataclasses
    import time

    from .store import queries
    from .store.writes import attempts_from, job_info

    names = list(pools) if pools is not None else (yield from queries.pools(ns))
    if jobs is None:
        ids = [jid for _, jid in (yield from queries.index(ns, names, limit))]
        fields = ("status", "payload", "created", "started", "finished")
        recs = yield from queries.fields(ns, ids, fields)
        jobs = [job_info(jid, rec, {}) for jid, rec in zip(ids, recs, strict=True) if rec]
    ids = [i.id for i in jobs]
    # What a first attempt's record may still be in (see store.attempts_from).
    firsts = yield from queries.fields(ns, ids, ("attempt", "slot", "created", "need"))
    raws = yield from queries.attempts_of(ns, ids)
    priced = []
    for info, rec, raw in zip(jobs, firsts, raws, strict=True):
        tries = attempts_from(info.id, rec, raw)
        priced.append((dataclasses.replace(info, attempts=tries), (1, 256)))
    used = yield from queries.usage(ns, names)
    return report(priced, used, prices, time.time())
