"""The running aggregates behind ``/metrics``: written by the scripts that end attempts and jobs,
read with bounded labels whatever the stats hash holds."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from balloons.dashboard import aggregates
from balloons.dashboard.aggregates import MAX_TASKS, OTHER, parse
from balloons.dashboard.metrics import exposition, registry_for
from balloons.store.keys import STAT_BUCKETS, PoolKeys
from tests import tasks
from tests.dashboard.conftest import Dashboard
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def stats(pool: str = "default") -> aggregates.PoolStats:
    return aggregates.read(tasks.app.store, [pool])[pool]


def test_a_job_adds_its_end_run_queue_and_boot_times() -> None:
    tasks.add.submit(1, 2).result(timeout=30)
    got = stats()
    t = "tests.tasks:add"
    assert got.ended[("SUCCEEDED", "", t)] == 1
    for kind in ("queue", "run", "e2e", "boot"):
        assert got.histograms[(kind, t)].count == 1, kind
    run = got.histograms[("run", t)]
    assert got.histograms[("e2e", t)].total >= run.total > 0
    assert got.task_seconds[t] == pytest.approx(run.total)
    ((cpus, mem, task), billed), *_ = got.machine_seconds.items()
    assert (cpus, mem, task) == (1, 256, t) and billed >= run.total
    assert got.invalid == 0


def test_retries_failures_and_cancels_are_counted_by_reason(tmp_path: Path) -> None:
    assert tasks.flaky.submit(str(tmp_path / "n"), 2).result(timeout=30) >= 0
    with pytest.raises(Exception, match="boom"):
        tasks.fail.submit("boom").result(timeout=30)
    queued = tasks.sleep.options(delay=60).submit(1)
    queued.cancel()
    got = stats()
    assert got.retried[("task_error", "tests.tasks:flaky")] == 2
    assert got.ended[("SUCCEEDED", "", "tests.tasks:flaky")] == 1
    assert got.histograms[("run", "tests.tasks:flaky")].count == 3  # each attempt
    assert got.ended[("FAILED", "task_error", "tests.tasks:fail")] == 1
    assert got.ended[("CANCELLED", "cancelled", "tests.tasks:sleep")] == 1
    assert got.histograms[("queue", "tests.tasks:sleep")].count == 0  # it never started


def test_an_altered_stats_hash_loses_figures_never_the_job(r: redis.Redis) -> None:
    pk = PoolKeys(tasks.app.settings.namespace, "default")
    r.set(pk.stats, "not a hash")
    assert tasks.add.submit(2, 3).result(timeout=30) == 5
    assert stats().invalid == 1  # not read
    assert "balloons_jobs_ended_total{" not in exposition(registry_for(tasks.app.store)).decode()
    r.delete(pk.stats)
    r.hset(pk.stats, mapping={"run:s:tests.tasks:add": "x", "n:SUCCEEDED::tests.tasks:add": "1.5"})
    assert tasks.add.submit(2, 4).result(timeout=30) == 6
    wait_for(lambda: stats().histograms[("run", "tests.tasks:add")].count == 1, "the run counted")


def test_hostile_fields_are_skipped_and_labels_bounded() -> None:
    raw = {
        b"n:SUCCEEDED::tests.tasks:add": b"3",
        b"n:PWNED::tests.tasks:add": b"1",  # no such status
        b"n:FAILED:made_up:tests.tasks:add": b"1",  # no such reason
        b"n:FAILED:oom:bad task\x1b[2J": b"2",  # no such task name: summed as OTHER
        b"run:0:t": b"1",  # buckets are 1-based
        f"run:{len(STAT_BUCKETS) + 2}:t".encode(): b"1",  # one past +Inf
        b"run:1:t": b"nan",
        b"run:2:t": b"1e400",
        b"run:3:t": b"2.5",  # a count is whole
        b"run:4:t": b"7",
        b"ms:0:256:t": b"1",
        b"ms:1:256:t": b"-1",
        b"ms:2:512:t": b"10000",  # milliseconds
        b"retry:x:t": b"1",
        b"queue:s": b"1",  # no task
        b"what:1:t": b"1",
        b"\xff\xfe": b"1",
    }
    got = parse(raw)
    assert got.ended[("SUCCEEDED", "", "tests.tasks:add")] == 3
    assert got.ended[("FAILED", "oom", OTHER)] == 2
    assert got.histograms[("run", "t")].counts[3] == 7
    assert got.histograms[("run", "t")].count == 7
    assert got.machine_seconds == {(2, 512, "t"): 10.0}
    assert got.invalid == 13
    for i in range(MAX_TASKS + 20):
        raw[f"n:SUCCEEDED::app.tasks:t{i:03d}".encode()] = str(1000 - i).encode()
    got = parse(raw)
    tasks_seen = {t for (_, _, t) in got.ended}
    assert len(tasks_seen) <= MAX_TASKS + 1 and OTHER in tasks_seen
    # Registered tasks are kept first, then the busiest; the rest are summed.
    assert "tests.tasks:add" in tasks_seen and "app.tasks:t000" in tasks_seen
    assert "app.tasks:t069" not in tasks_seen
    assert got.ended[("SUCCEEDED", "", OTHER)] == sum(1000 - i for i in range(MAX_TASKS - 1, 70))
    assert len({t for (_, t) in got.histograms}) <= MAX_TASKS + 1


def test_the_exposition_is_prometheus_own_text() -> None:
    tasks.add.submit(1, 2).result(timeout=30)
    with pytest.raises(Exception, match="no"):
        tasks.fail.submit('no "quote" \\ here\n').result(timeout=30)
    # One scrape, written both ways: two scrapes may differ, as the jobs' machines idle out
    # and exit between them (a gauge of machines or of idle seconds changes).
    scrape = list(registry_for(tasks.app.store, tasks.app).collect())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Scraped(scrape))
    ours = exposition(registry)
    assert ours == generate_latest(registry)
    assert b"balloons_job_run_seconds_bucket{" in ours
    assert b'balloons_jobs_ended_total{pool="default",reason="task_error"' in ours


class Scraped(Collector):
    """The metrics of one scrape, the same at every ``collect()``."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def test_a_stats_hash_too_large_is_not_read(r: redis.Redis) -> None:
    pk = PoolKeys(tasks.app.settings.namespace, "default")
    pipe = r.pipeline(transaction=False)
    for i in range(aggregates.MAX_FIELDS + 1):
        pipe.hset(pk.stats, f"ms:1:256:t{i}", 1)
    pipe.execute()
    got = stats()
    assert got.invalid == 1 and not got.machine_seconds


def test_charts_page_draws_throughput_waits_run_times_failures_and_cost(
    dashboard: Dashboard,
) -> None:
    ok = tasks.add.submit(1, 2)
    ok.result(timeout=30)
    failed = tasks.fail.submit("boom")
    with pytest.raises(Exception, match="boom"):
        failed.result(timeout=30)
    with dashboard.login() as c:
        before = time.time()
        page = c.get("/charts")
        after = time.time()
    assert page.status_code == 200
    html = page.text
    for section in ("throughput", "queue", "run", "failures", "cost"):
        assert f'id="chart-{section}"' in html
    assert "<script" not in html.split("<main", 1)[-1]  # drawn on the server
    assert "http" not in re.sub(r'href="[^"]*"|xmlns="[^"]*"', "", html.split("<main", 1)[-1])
    # Throughput: 48 hourly bars up to the page's hour, the jobs counted in the hours they
    # were submitted (the hour may have struck between a submit and the page).
    bars = re.findall(r'<svg[^>]*data-chart="jobs submitted per hour".*?</svg>', html, re.S)[0]
    assert len(re.findall(r'class="chart-bar"', bars)) == 48
    counted = re.findall(r"<title>([^<]*): (\d+) jobs</title>", bars)
    submitted = Counter(_hour(j.info().created_at) for j in (ok, failed))
    assert {hour: int(n) for hour, n in counted if n != "0"} == submitted
    assert counted[-1][0] in {_hour(before), _hour(after)}
    assert "2 observed; median" in html  # two runs, two queue waits
    assert "50.0% of 2 (1 failed)" in html  # the default pool's failure rate
    assert re.search(r"<title>default: \$[0-9.]+ \([0-9.]+ machine-s\)</title>", html)


def _hour(t: float) -> str:
    """The label of the throughput bar of the hour holding ``t``."""
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:00")


def test_machine_counts_read_pool_and_state_with_or_without_sort(r: redis.Redis) -> None:
    from balloons.dashboard.metrics import machine_states
    from balloons.store.keys import machine_key, machines_key
    from balloons.store.writes import Store

    ns = tasks.app.settings.namespace
    records = {
        "00000000000001": {"pool": "default", "state": "stopped", "pid": "1"},
        "00000000000002": {"pool": "other", "state": "started"},
        "00000000000003": {"pool": "Not A Pool!", "state": "started"},
        "00000000000004": {},  # gone: in the index, no record
        "00000000000005": {"state": "stopped"},
    }
    for i, (mid, fields) in enumerate(records.items()):
        r.zadd(machines_key(ns), {mid: 1000 + i})
        if fields:
            r.hset(machine_key(ns, mid), mapping=fields)
    newest_first = [
        (None, b"stopped"), (b"Not A Pool!", b"started"), (b"other", b"started"),
        (b"default", b"stopped"),
    ]  # fmt: skip
    assert machine_states(tasks.app.store) == newest_first
    assert machine_states(tasks.app.store, limit=3) == newest_first[:2]  # 4 is gone
    # A user refused SORT_RO (an ACL; also a server older than 7.0) reads them one by one.
    r.acl_setuser(
        "nosort", enabled=True, passwords=["+pw-nosort"], keys=["*"], commands=["+@all", "-sort_ro"]
    )
    try:
        url = tasks.app.store.url.replace("unix://", "unix://nosort:pw-nosort@", 1)
        refused = Store(url, ns)
        with pytest.raises(redis.ResponseError):
            refused.redis.execute_command("SORT_RO", machines_key(ns))
        assert machine_states(refused) == newest_first
        refused.close()
    finally:
        r.acl_deluser("nosort")
    text = exposition(registry_for(tasks.app.store)).decode()
    assert 'balloons_machines{pool="default",state="stopped"} 1.0' in text
    assert 'balloons_machines{pool="",state="stopped"} 1.0' in text
    assert 'balloons_invalid_records{kind="machine",pool=""} 1.0' in text
