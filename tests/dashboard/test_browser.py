"""The dashboard in a real headless Chromium (Debian's, driven by Playwright).

``scripts/setup`` installs Chromium with apt-get when it runs as root; these tests skip only
where it could not (no root, no apt-get), and fail on CI, where it always can.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balloons import JobStatus
from balloons.dashboard.charts import HOURS
from balloons.store.keys import SPEND_HOURS
from tests import tasks
from tests.dashboard import tasks as dtasks
from tests.dashboard.conftest import Dashboard

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing on CI: scripts/setup should have installed it")
    pytest.skip(
        "chromium is not installed and could not be: scripts/setup installs it with apt-get "
        "only when run as root on Debian",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Browser, dashboard: Dashboard) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=dashboard.url)
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


def release(flag: Path, text: str) -> None:
    """Let a ``wait_for`` job finish: the file appears whole, at once."""
    if not flag.exists():
        part = flag.with_suffix(".part")
        part.write_text(text)
        part.rename(flag)


def log_in(page: Page, dashboard: Dashboard, path: str) -> None:
    page.goto(path)
    expect(page.locator("input[name=token]")).to_be_visible()
    page.fill("input[name=token]", dashboard.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def test_a_job_moves_from_running_to_succeeded_without_a_reload(
    context: BrowserContext, dashboard: Dashboard, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    job = dtasks.wait_for_file.submit(str(flag))
    try:
        page = context.new_page()
        log_in(page, dashboard, f"/jobs/{job.id}")
        status = page.locator("#job-status")
        expect(status).to_have_text("RUNNING")
        listing = context.new_page()
        listing.goto("/jobs")
        row = listing.locator(f'tr[data-job="{job.id}"] .status')
        expect(row).to_have_text("RUNNING")
        # marks that survive only as long as the documents are not reloaded
        page.evaluate("window.sameDocument = true")
        listing.evaluate("window.sameDocument = true")
        release(flag, "done on cue")
        expect(status).to_have_text("SUCCEEDED")
        expect(page.locator("#result")).to_have_text('"done on cue"')
        expect(page.locator("#section-attempts")).to_contain_text("SUCCEEDED")
        expect(row).to_have_text("SUCCEEDED")
        assert page.evaluate("window.sameDocument") is True
        assert listing.evaluate("window.sameDocument") is True
        expect(page.locator("#job")).to_have_attribute("data-ended", "true")
    finally:
        release(flag, "done on cue")
    assert job.result(timeout=30) == "done on cue"


def test_the_page_refuses_a_request_without_the_token(
    context: BrowserContext, dashboard: Dashboard
) -> None:
    job = tasks.add.submit(4, 5)
    job.result(timeout=30)
    page = context.new_page()
    resp = page.goto(f"/jobs/{job.id}")
    assert resp is not None
    assert "/login?next=" in page.url
    expect(page.locator("#job-status")).to_have_count(0)
    assert "tests.tasks:add" not in page.content()
    for path in ("/metrics", f"/jobs/{job.id}", "/jobs/live"):
        assert context.request.get(path).status == 401, path
    page.fill("input[name=token]", "not-the-token-at-all")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("#job-status")).to_have_count(0)
    page.fill("input[name=token]", dashboard.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/jobs/{job.id}")
    expect(page.locator("#job-status")).to_have_text("SUCCEEDED")
    assert dashboard.token not in page.content()
    cookie = next(c for c in context.cookies() if c["name"] == "balloons_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""


def test_cancel_from_the_page_cancels_a_running_job(
    context: BrowserContext, dashboard: Dashboard, tmp_path: Path
) -> None:
    flag = tmp_path / "never"
    job = dtasks.wait_for_file.submit(str(flag))
    try:
        page = context.new_page()
        log_in(page, dashboard, f"/jobs/{job.id}")
        expect(page.locator("#job-status")).to_have_text("RUNNING")
        page.click("#cancel")
        expect(page.locator("#job-status")).to_have_text("CANCELLED")
        assert job.status() is JobStatus.CANCELLED
        expect(page.locator("#cancel")).to_have_count(0)
    finally:
        release(flag, "")


def test_live_log_lines_appear_on_the_job_page(
    context: BrowserContext, dashboard: Dashboard, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    job = tasks.print_then_wait.submit(str(flag))
    try:
        page = context.new_page()
        log_in(page, dashboard, f"/jobs/{job.id}")
        expect(page.locator("#job-status")).to_have_text("RUNNING")
        page.evaluate("window.sameDocument = true")
        logs = page.locator("#logs")
        expect(logs).to_contain_text("waiting for the flag")
        expect(logs).not_to_contain_text("flag seen")
        assert job.status() is JobStatus.RUNNING
        release(flag, "")
        expect(logs).to_contain_text("flag seen")
        expect(page.locator("#job-status")).to_have_text("SUCCEEDED")
        assert page.evaluate("window.sameDocument") is True
    finally:
        release(flag, "")


def test_search_finds_a_job_by_its_error_text_and_id_prefix(
    context: BrowserContext, dashboard: Dashboard
) -> None:
    ok = tasks.add.submit(1, 1)
    bad = tasks.fail.submit("a rare needle")
    ok.result(timeout=30)
    with pytest.raises(Exception, match="needle"):
        bad.result(timeout=30)
    page = context.new_page()
    log_in(page, dashboard, "/jobs")
    expect(page.locator(f'tr[data-job="{ok.id}"]')).to_have_count(1)
    page.fill("form.filters input[name=q]", "needle")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/jobs?*q=needle*")
    expect(page.locator(f'tr[data-job="{bad.id}"]')).to_have_count(1)
    expect(page.locator("tr[data-job]")).to_have_count(1)
    expect(page.locator("form.filters input[name=q]")).to_have_value("needle")
    page.fill("form.filters input[name=q]", ok.id.rpartition(".")[2][:18])
    page.click("form.filters button[type=submit]")
    expect(page.locator(f'tr[data-job="{ok.id}"]')).to_have_count(1)
    expect(page.locator("tr[data-job]")).to_have_count(1)


def test_charts_are_drawn_inline_with_nothing_loaded_from_elsewhere(
    context: BrowserContext, dashboard: Dashboard
) -> None:
    tasks.add.submit(2, 2).result(timeout=30)
    page = context.new_page()
    log_in(page, dashboard, "/jobs")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto("/charts")
    for section in ("throughput", "queue", "run", "failures", "cost"):
        chart = page.locator(f"#chart-{section} svg.chart")
        expect(chart).to_be_visible()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 50, section
    # This hour's throughput bar is drawn, with a height.
    last = page.locator("#chart-throughput rect.chart-bar").last
    assert float(last.get_attribute("height") or 0) > 0
    assert all(u.startswith(dashboard.url) for u in requests), requests


def test_cost_over_time_is_drawn_from_the_pools_hourly_aggregate(
    context: BrowserContext, dashboard: Dashboard
) -> None:
    tasks.add.submit(2, 2).result(timeout=30)  # the pool is known, and its job billed
    # Three hours ago, 10 minutes of a 1x256MB machine that no job record tells of: only the
    # aggregate can draw it.
    pk = tasks.app.store.keys("default.01jd3x9k2m8vq4t7w0c5r6y1zh").pool
    hour = int(time.time() // 3600) - 3
    place = f"1:256:{hour % SPEND_HOURS}"
    tasks.app.store.redis.hset(pk.spend, mapping={place: 600_000, f"{place}:h": hour})
    page = context.new_page()
    log_in(page, dashboard, "/charts")
    chart = page.locator("#chart-cost-hours svg.chart")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 50
    bars = page.locator("#chart-cost-hours rect.chart-bar")
    expect(bars).to_have_count(HOURS)
    then = bars.nth(HOURS - 4)
    expect(then.locator("title")).to_contain_text("(600.0 machine-s)")
    heights = [float(h) for h in bars.evaluate_all("bs => bs.map(b => b.getAttribute('height'))")]
    assert max(heights) == heights[HOURS - 4] > 0
    # Nothing else but the job just run (this hour's bar, or the last hour's across the hour;
    # on a warm machine its few milliseconds may draw no height).
    assert not any(h for i, h in enumerate(heights) if i not in (HOURS - 4, HOURS - 2, HOURS - 1))


def test_bulk_cancel_from_a_search(context: BrowserContext, dashboard: Dashboard) -> None:
    waiting = [tasks.sleep.options(delay=600).submit(1) for _ in range(2)]
    kept = tasks.echo.options(delay=600).submit("stays")
    page = context.new_page()
    log_in(page, dashboard, "/jobs?q=task:sleep")
    expect(page.locator("tr[data-job]")).to_have_count(2)
    page.click("#bulk-cancel")
    expect(page.locator("#bulk-summary")).to_contain_text("2 of 2 selected jobs cancelled")
    expect(page.locator('tr[data-outcome="cancelled"]')).to_have_count(2)
    assert all(j.status() is JobStatus.CANCELLED for j in waiting)
    assert kept.status() is JobStatus.QUEUED
    kept.cancel()


def test_the_pools_page_fits_a_1280_pixel_window_with_grouped_headers(
    browser: Browser, dashboard: Dashboard
) -> None:
    tasks.add.submit(1, 2).result(timeout=30)
    tasks.add.options(pool="reports-and-invoices").submit(1, 2).result(timeout=30)
    ctx = browser.new_context(base_url=dashboard.url, viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        log_in(page, dashboard, "/pools")
        table = page.locator("table.pools")
        expect(table).to_be_visible()
        expect(page.locator("#pools-machines")).to_have_text("machines")
        expect(page.locator("#pools-jobs")).to_have_text("jobs")
        # Every column of the row under its group: 1 + 6 machine columns + the job columns.
        groups = page.eval_on_selector_all("tr.groups th", "ths => ths.map(t => t.colSpan)")
        cells = page.locator('tr[data-pool="default"] td').count()
        assert sum(groups) == cells
        width = page.evaluate("document.documentElement.scrollWidth")
        box = table.bounding_box()
        assert width <= 1280 and box is not None and box["x"] + box["width"] <= 1280, (width, box)
    finally:
        ctx.close()


def test_a_chain_is_one_item_with_its_members_and_schedules_have_a_page(
    context: BrowserContext, dashboard: Dashboard, tmp_path: Path
) -> None:
    import redis

    import balloons
    from balloons.store.keys import schedule_key, schedules_key

    flag = tmp_path / "go"
    job = balloons.chain(dtasks.wait_for_file.s(str(flag)), tasks.echo.s("then")).submit()
    try:
        page = context.new_page()
        log_in(page, dashboard, "/flows")
        row = page.locator(f'tr[data-flow="{job.id}"]')
        expect(row.locator(".status").first).to_have_text("RUNNING")
        expect(row.locator(".member")).to_have_count(2)
        row.locator("a").click()
        page.wait_for_url(f"**/flows/{job.id}")
        expect(page.locator("#flow-status")).to_have_text("RUNNING")
        members = page.locator("#flow-members tr.member")
        expect(members).to_have_count(2)
        expect(members.nth(0)).to_contain_text("RUNNING")
        expect(members.nth(1)).to_contain_text("not submitted")
        listing = context.new_page()
        listing.goto("/flows")
        listed = listing.locator(f'tr[data-flow="{job.id}"] .status').first
        expect(listed).to_have_text("RUNNING")
        # marks that survive only as long as the documents are not reloaded
        page.evaluate("window.sameDocument = true")
        listing.evaluate("window.sameDocument = true")
        release(flag, "done")
        expect(page.locator("#flow-status")).to_have_text("SUCCEEDED")
        expect(members.nth(1)).to_contain_text("SUCCEEDED")
        expect(listed).to_have_text("SUCCEEDED")
        expect(page.locator("#flow")).to_have_attribute("data-ended", "true")
        assert page.evaluate("window.sameDocument") is True
        assert listing.evaluate("window.sameDocument") is True
        assert job.result(timeout=60) == {"args": ["then", "done"], "kwargs": {}}
        members.nth(1).locator("a").click()
        expect(page.locator("#job-status")).to_have_text("SUCCEEDED")
    finally:
        release(flag, "done")
    r = redis.Redis.from_url(os.environ["BALLOONS_REDIS_URL"])
    try:
        r.sadd(schedules_key("balloons"), "nightly", "<b>odd</b>")
        r.hset(
            schedule_key("balloons", "nightly"),
            mapping={"last_due": "1700000000.0", "last_job": job.jobs()[0].id},
        )
        r.hset(schedule_key("balloons", "<b>odd</b>"), mapping={"last_due": "nan", "paused": "1"})
    finally:
        r.close()
    page.goto("/schedules")
    rows = page.locator("#schedules tr.schedule")
    expect(rows).to_have_count(2)
    page.evaluate("window.sameDocument = true")
    r = redis.Redis.from_url(os.environ["BALLOONS_REDIS_URL"])
    try:  # a schedule's state changes: the page shows it without a reload
        r.hset(schedule_key("balloons", "nightly"), "paused", "1")
    finally:
        r.close()
    expect(rows.nth(1)).to_contain_text("paused")
    assert page.evaluate("window.sameDocument") is True
    expect(rows.nth(1)).to_contain_text("nightly")
    expect(rows.nth(1)).to_contain_text("SUCCEEDED")
    expect(rows.nth(0)).to_contain_text("<b>odd</b>")  # shown as text, never markup
    expect(rows.nth(0)).to_contain_text("paused")
    assert page.locator("#schedules b").count() == 0
