"""Machine-seconds, the price table, job and pool totals, and the max_cost cap."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import balloons
from balloons import ConfigError, JobFailed, TaskOptions
from balloons.cost import PriceTable
from tests import tasks
from tests.waiting import wait_for

MONTH = 30 * 24 * 3600


def test_price_table_prices_presets_ram_and_regions() -> None:
    t = PriceTable.load()
    assert t.source == "https://fly.io/docs/about/pricing/" and t.checked
    assert t.per_second(1, 256) == pytest.approx(0.0000008465)  # Fly's per-second figure
    # 1 GB on a shared-cpu-1x: the preset plus 0.75 GB of RAM add-on
    assert t.per_second(1, 1024) == pytest.approx(
        (2.194128 + 0.75 * t.ram_usd_per_gb_month) / MONTH
    )
    assert t.preset(3)[0] == "shared-cpu-4x"  # the next larger preset
    perf = PriceTable.load(cpu_kind="performance")
    assert perf.per_second(2, 4096) == pytest.approx(2 * 0.000012732)
    sjc = PriceTable.load(region="sjc")
    assert sjc.per_second(1, 256) == pytest.approx(0.0000008465 * 1.192307692)
    # a region missing from the table is priced as the base regions
    assert PriceTable.load(region="xyz").per_second(1, 256) == t.per_second(1, 256)
    # Beyond the largest preset: its price per CPU (with its RAM per CPU), plus the add-on.
    assert t.preset(64)[0] == "shared-cpu-8x"
    assert t.per_second(64, 256) == pytest.approx(8 * 17.553024 / MONTH)
    assert t.per_second(12, 12 * 256 + 1024) == pytest.approx(
        (12 * 2.194128 + 1 * t.ram_usd_per_gb_month) / MONTH
    )
    assert perf_rate(20, 40960) == pytest.approx(20 * 0.000012732, rel=1e-4)
    with pytest.raises(ConfigError, match="cpu_kind must be"):
        PriceTable.load(cpu_kind="gpu")


def perf_rate(cpus: int, memory_mb: int) -> float:
    return PriceTable.load(cpu_kind="performance").per_second(cpus, memory_mb)


@pytest.mark.parametrize(
    ("cpu_kind", "cpus", "memory_mb", "region", "page_usd_per_month"),
    [
        ("shared", 1, 256, "iad", "2.19"),
        ("shared", 1, 512, "iad", "3.69"),
        ("shared", 1, 1024, "ewr", "6.70"),
        ("shared", 2, 2048, "iad", "13.39"),
        ("performance", 1, 2048, "iad", "33.00"),
        ("performance", 2, 4096, "iad", "66.00"),
        ("shared", 1, 1024, "fra", "7.73"),
        ("shared", 1, 1024, "sin", "8.50"),
    ],
)
def test_price_table_gives_the_rows_fly_states(
    cpu_kind: str, cpus: int, memory_mb: int, region: str, page_usd_per_month: str
) -> None:
    """The typed rows of Fly's pricing page, to the cent (``prices.json`` names the page)."""
    t = PriceTable.load(cpu_kind=cpu_kind, region=region)
    assert f"{t.per_second(cpus, memory_mb) * MONTH:.2f}" == page_usd_per_month


def test_price_table_is_overridable_and_bad_files_are_named(tmp_path: Path) -> None:
    override = tmp_path / "prices.json"
    override.write_text(
        json.dumps(
            {
                "presets": {"shared-cpu-1x": {"usd_per_month": 5.0}},
                "ram_usd_per_gb_month": 10,
                "region_multipliers": {"ams": 2.0, "lhr": {"value": 3.0, "confirmed": False}},
            }
        )
    )
    t = PriceTable.load(str(override), region="ams")
    assert t.per_second(1, 512) == pytest.approx((5.0 + 0.25 * 10) * 2.0 / MONTH)
    assert t.per_second(2, 512) == pytest.approx(4.388256 * 2.0 / MONTH)  # the rest kept
    lhr = PriceTable.load(str(override), region="lhr")
    assert lhr.per_second(1, 256) == pytest.approx(5.0 * 3.0 / MONTH)
    app = balloons.App(prices=str(override))
    assert app.prices.per_second(1, 256) == pytest.approx(5.0 / MONTH)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        PriceTable.load(str(bad))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        PriceTable.load(str(tmp_path / "list.json"))


def test_max_cost_is_validated() -> None:
    for bad in (0, -1, "1", True):
        with pytest.raises(ConfigError, match="max_cost must be a positive number"):
            TaskOptions(max_cost=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown task option"):
        tasks.add.options(max_costs=1)


@pytest.mark.machines
def test_a_job_whose_machine_never_launched_is_not_charged() -> None:
    from balloons.dashboard import aggregates
    from tests.test_supervisor import held_app

    app, add = held_app("never", max_machines=1, boot_timeout=1)
    job = add.submit(1, 2)
    sup = app.supervisor()
    wait_for(lambda: sup.step(gc=False).reclaimed, "the boot lease to lapse")
    with pytest.raises(JobFailed, match="boot_timeout"):
        job.result(timeout=5)
    (a,) = job.cost().attempts
    assert a.machine_seconds == 0 and a.usd == 0
    report = app.costs(["never"])
    assert report.total.jobs == 1 and report.total.machine_seconds == 0
    never = aggregates.read(app.store, ["never"])["never"]
    assert never.ended[("FAILED", "boot_timeout", tasks.add.name)] == 1
    assert not never.machine_seconds  # nor in /metrics


@pytest.mark.machines
def test_job_cost_counts_launch_to_end_at_the_machine_size() -> None:
    job = tasks.sleep.submit(0.3)
    job.result(timeout=30)
    c = job.cost()
    (a,) = c.attempts
    info = job.info().attempts[0]
    assert (a.cpus, a.memory_mb) == (info.cpus, info.memory_mb) == (1, 256)
    assert a.machine_seconds == pytest.approx(info.ended_at - info.launched_at)  # type: ignore[operator]
    assert a.task_seconds >= 0.3 and a.machine_seconds >= a.task_seconds
    assert a.usd == pytest.approx(a.machine_seconds * tasks.app.prices.per_second(1, 256))
    assert c.efficiency is not None and c.efficiency >= 1.0
    big = tasks.add.options(cpus=2, memory_mb=1024).submit(1, 1)
    big.result(timeout=30)
    (b,) = big.cost().attempts
    assert (b.cpus, b.memory_mb) == (2, 1024)
    assert b.usd == pytest.approx(b.machine_seconds * tasks.app.prices.per_second(2, 1024))


@pytest.mark.machines
def test_max_cost_stops_the_job_with_reason_cost_cap_and_no_retry() -> None:
    job = tasks.costly.options(retries=2).submit(20)
    began = time.monotonic()
    with pytest.raises(JobFailed) as err:
        job.result(timeout=30)
    assert err.value.reason == "cost_cap"
    assert "max_cost" in str(err.value)
    assert time.monotonic() - began < 15  # far sooner than the task's 20 s
    info = job.info()
    assert len(info.attempts) == 1 and info.attempts[0].reason == "cost_cap"
    cap = 0.0000005
    assert job.cost().usd <= cap * 1.5  # the cap, plus the time to stop and record


@pytest.mark.machines
def test_totals_per_task_and_pool_with_efficiency_and_idle_time() -> None:
    jobs = [tasks.add.submit(i, i) for i in range(3)] + [tasks.solo_chatty.submit(1)]
    for j in jobs:
        j.result(timeout=30)
    rep = tasks.app.costs()
    assert rep.by_task["tests.tasks:add"].jobs == 3
    assert rep.by_pool["logsolo"].jobs == 1
    assert rep.total.jobs == 4
    assert rep.total.usd == pytest.approx(sum(j.cost().usd for j in jobs), rel=0.05)
    eff = rep.total.efficiency
    assert eff is not None and eff >= 1.0
    # The logsolo machine idles (idle timeout 3 s) and gives its slot back: its idle time is
    # the pool's, not the job's.
    rep = wait_for(
        lambda: (c := tasks.app.costs()).idle_seconds.get("logsolo", 0) > 2.0 and c,
        "over 2 s of idle time in pool logsolo",
        interval=0.2,
    )
    assert rep.idle_usd["logsolo"] == pytest.approx(
        rep.idle_seconds["logsolo"] * tasks.app.prices.per_second(1, 256)
    )
    assert rep.usd > rep.total.usd


@pytest.mark.machines
def test_a_task_that_ignores_its_cost_cap_has_its_machine_killed() -> None:
    job = tasks.ignore_timeout.options(timeout=60, max_cost=0.0000005).submit(60)
    with pytest.raises(JobFailed) as err:
        job.result(timeout=40)
    assert err.value.reason == "cost_cap"
    assert "ignored its max_cost" in err.value.error_message
