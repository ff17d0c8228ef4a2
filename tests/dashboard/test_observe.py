"""The job page's progress, logs and cost sections, the cost page, and /metrics' cost and Fly
API figures, over real HTTP."""

from __future__ import annotations

import re
from html import unescape

import pytest

from balloons.fly import stats as fly_stats
from tests import tasks
from tests.dashboard.conftest import Dashboard

pytestmark = pytest.mark.machines


def test_job_page_shows_progress_logs_and_cost(dashboard: Dashboard) -> None:
    job = tasks.chatty.submit(3, 2)
    job.result(timeout=30)
    with dashboard.login() as c:
        html = c.get(f"/jobs/{job.id}").text
    assert 'id="section-progress"' in html and 'data-percent="100.0"' in html
    assert 'id="progress-note">step 2<' in html
    logs = unescape(re.search(r'<pre class="logs" id="logs">(.*?)</pre>', html, re.S).group(1))  # type: ignore[union-attr]
    assert "#1 out</span> line 0" in logs and "#1 err</span> to stderr" in logs
    assert 'id="section-cost"' in html
    usd = job.cost().usd
    assert f"total ${usd:.8f}" in html


def test_job_page_hides_empty_sections(dashboard: Dashboard) -> None:
    job = tasks.add.submit(1, 1)
    job.result(timeout=30)
    with dashboard.login() as c:
        html = c.get(f"/jobs/{job.id}").text
    assert 'id="section-progress"' not in html and 'id="section-logs"' not in html
    assert 'id="section-cost"' in html


def test_log_lines_are_escaped(dashboard: Dashboard) -> None:
    job = tasks.echo_print.submit("<script>alert(1)</script>")
    job.result(timeout=30)
    with dashboard.login() as c:
        html = c.get(f"/jobs/{job.id}").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_cost_page_totals_and_chart(dashboard: Dashboard) -> None:
    jobs = [tasks.add.submit(i, 1) for i in range(2)]
    for j in jobs:
        j.result(timeout=30)
    rep = tasks.app.costs()
    with dashboard.login() as c:
        resp = c.get("/cost")
    assert resp.status_code == 200
    html = resp.text
    usd = float(re.search(r'id="cost-usd">\$([0-9.]+)<', html).group(1))  # type: ignore[union-attr]
    assert usd >= round(rep.total.usd, 6)  # idle time of warm machines may have grown since
    assert (
        re.search(r'<td class="mono">tests.tasks:add</td><td>2</td>', html)
        and "https://fly.io/docs/about/pricing/" in html
    )
    bars = re.findall(r'<rect class="chart-bar"[^>]*height="([\d.]+)"', html)
    assert len(bars) == 48
    assert max(float(h) for h in bars) == pytest.approx(38.0)  # this hour's bar is the peak
    assert 'id="cost-efficiency"' in html


def test_metrics_show_cost_and_fly_api_calls(dashboard: Dashboard) -> None:
    job = tasks.add.submit(2, 2)
    job.result(timeout=30)
    before = fly_stats.snapshot()
    fly_stats.count("create", 201)
    fly_stats.count("create", 503)
    fly_stats.count("get", None)
    auth = {"authorization": f"Bearer {dashboard.token}"}
    with dashboard.client(headers=auth) as c:
        text = c.get("/metrics").text
    created_ok = before.get(("create", "2xx"), 0) + 1
    assert f'balloons_fly_api_calls_total{{action="create",outcome="2xx"}} {created_ok:.1f}' in text
    errors = sum(n for (a, o), n in before.items() if a == "create" and fly_stats.is_error(o)) + 1
    assert f'balloons_fly_api_errors_total{{action="create"}} {errors:.1f}' in text
    assert 'balloons_fly_api_calls_total{action="get",outcome="transport"}' in text
    # The end script adds machine-seconds in whole milliseconds, and a short job's machine
    # lives a few of them: the figures agree with job.cost() to the millisecond (0.5 ms of
    # rounding, and the attempt's times as the record keeps them), not to a ratio.
    cost = job.cost()
    (attempt,) = cost.attempts
    per_second = tasks.app.prices.per_second(attempt.cpus, attempt.memory_mb)
    usd = re.search(
        r'balloons_cost_usd_total\{pool="default",task="tests.tasks:add"\} ([0-9.e-]+)', text
    )
    assert usd and float(usd.group(1)) == pytest.approx(cost.usd, abs=0.001 * per_second)
    seconds = re.search(
        r'balloons_machine_seconds_total\{pool="default",task="tests.tasks:add"\} ([0-9.e-]+)',
        text,
    )
    assert seconds and float(seconds.group(1)) == pytest.approx(cost.machine_seconds, abs=0.001)
