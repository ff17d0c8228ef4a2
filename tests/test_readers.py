"""Readers of records altered in Redis, machines bigger than any price preset, and text from
tasks shown as text: the library, the command line and the dashboard (a real server)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from click.testing import CliRunner

import balloons
from balloons import JobFailed, JobStatus
from balloons.cli import main as cli
from balloons.dashboard import create_app
from balloons.store.keys import PoolKeys
from balloons.untrusted import shown
from tests import tasks
from tests.dashboard.conftest import ServerThread
from tests.test_worker import job_key
from tests.waiting import wait_for

pytestmark = pytest.mark.machines

TOKEN = "readers-test-token-" + "y" * 16
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web() -> Iterator[httpx.Client]:
    """The dashboard of ``tests.tasks.app``, served by uvicorn on 127.0.0.1."""
    served = ServerThread(create_app(tasks.app, token=TOKEN))
    served.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", headers=AUTH, timeout=30) as c:
        yield c
    served.stop()


def cli_ok(*args: str) -> str:
    """Run a command in this process; it must end normally. Its stdout and stderr."""
    out = CliRunner().invoke(cli, list(args))
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert out.exit_code == 0, (args, out.output)
    return out.output


def ended(job: balloons.Job[object]) -> None:
    try:
        job.result(timeout=30)
    except JobFailed:
        pass


def test_one_record_with_an_unknown_status_is_shown_invalid_and_breaks_no_listing(
    r: redis.Redis, web: httpx.Client
) -> None:
    good, bad = tasks.add.submit(1, 2), tasks.add.submit(2, 3)
    assert good.result(timeout=30) == 3 and bad.result(timeout=30) == 5
    r.hset(job_key(bad.id), "status", "PWNED")

    listed = {info.id: info for info in tasks.app.jobs()}
    assert listed[good.id].status is JobStatus.SUCCEEDED and not listed[good.id].invalid
    assert listed[bad.id].status is JobStatus.INVALID and listed[bad.id].invalid
    assert bad.status() is JobStatus.INVALID
    assert bad.info().problems == ("status 'PWNED' is not a job status",)
    with pytest.raises(JobFailed) as failed:
        bad.result(timeout=5)
    assert failed.value.reason == "record_invalid" and failed.value.status == "INVALID"
    assert "'PWNED' is not a job status" in str(failed.value)

    table = cli_ok("jobs")
    assert "INVALID" in table and "SUCCEEDED" in table
    rows = {row["id"]: row for row in json.loads(cli_ok("jobs", "--json"))}
    assert rows[bad.id]["status"] == "INVALID" and rows[bad.id]["problems"]
    assert json.loads(cli_ok("pools", "--json"))[0]["jobs"]["INVALID"] == 1
    assert "record invalid" in cli_ok("status", bad.id)
    cli_ok("cost")
    assert json.loads(cli_ok("jobs", "--status", "invalid", "--json"))[0]["id"] == bad.id

    for path in ("/jobs", "/jobs?status=INVALID", "/pools", "/cost", f"/jobs/{bad.id}"):
        page = web.get(path)
        assert page.status_code == 200, (path, page.text[:500])
    assert "is not a job status" in web.get(f"/jobs/{bad.id}").text
    metrics = web.get("/metrics")
    assert metrics.status_code == 200
    # /metrics reads the aggregates the scripts kept, not the records: both jobs ended well.
    assert 'status="SUCCEEDED",task="tests.tasks:add"} 2.0' in metrics.text

    # An attempt record that is not JSON: the job reads on, its attempt is named invalid.
    r.hset(job_key(good.id).replace(":job:", ":attempts:"), "1", b"{not json")
    assert good.status() is JobStatus.SUCCEEDED and good.result(timeout=5) == 3
    assert good.info().all_problems == ("attempt 1: its record is not a JSON object",)
    assert "attempt 1: its record is not a JSON object" in cli_ok("status", good.id)
    # (/metrics reads no job record now: the cost report counts the unreadable attempt.)
    assert tasks.app.costs().invalid[("default", "attempts")] == 1
    assert web.get("/metrics").status_code == 200


def test_a_machine_bigger_than_any_price_preset_is_priced_by_the_rates(
    r: redis.Redis, web: httpx.Client
) -> None:
    """12 CPUs on the local backend (the shared presets stop at 8): the job, its pool's idle
    time and every reader of cost are priced per CPU and per GB beyond the largest preset."""
    job = tasks.add.options(cpus=12).submit(20, 22)
    assert job.result(timeout=30) == 42
    per_cpu = 17.553024 / 8 / tasks.app.prices.seconds_per_month  # shared-cpu-8x per CPU
    assert tasks.app.prices.per_second(12, 256) == pytest.approx(12 * per_cpu)
    cost = job.cost()
    assert cost.attempts[0].cpus == 12 and cost.usd > 0
    # The machine idles out (BALLOONS_IDLE_TIMEOUT=1): its idle time is its pool's, at 12 CPUs.
    usage = PoolKeys("balloons", "default").usage
    wait_for(lambda: r.hexists(usage, "idle:12:256"), "the machine's idle time at 12 CPUs")

    def readers() -> None:
        report = json.loads(cli_ok("cost", "--json"))
        assert report["idle_usd"]["default"] > 0
        for path in ("/metrics", "/cost"):
            assert web.get(path).status_code == 200, path
        assert "balloons_idle_cost_usd" in web.get("/metrics").text

    readers()
    assert "cost: $" in cli_ok("status", job.id)
    assert web.get(f"/jobs/{job.id}").status_code == 200
    job.forget()  # the pool's usage entry stays, and is priced
    readers()


HOSTILE_NOTE = "copying [/data] to [bold]"
HOSTILE_TEXT = "[link=http://evil.test]see[/link] \x1b[2J\x1b]52;c;aGk=\x07 \u202eend"


def test_text_from_tasks_is_shown_as_text_in_the_cli(web: httpx.Client) -> None:
    """A progress note and an error message with rich markup (broken and valid) and terminal
    escapes (clear screen, an OSC 52 clipboard write, a bell, a bidi override): every command
    shows them literally, their control characters replaced, and none crashes."""
    job = tasks.say.submit(HOSTILE_NOTE, HOSTILE_TEXT)
    ended(job)
    safe = shown(HOSTILE_TEXT)
    assert "\x1b" not in safe and "\x07" not in safe and "\u202e" not in safe

    status = cli_ok("status", job.id)
    assert f"progress: 50% {HOSTILE_NOTE}" in status
    assert safe in status and "[link=http://evil.test]see[/link]" in status
    for args in (["wait", job.id], ["result", job.id]):
        out = CliRunner().invoke(cli, args)
        assert isinstance(out.exception, SystemExit) and out.exit_code == 1, out.exception
        assert safe in out.output, out.output
        assert "\x1b" not in out.output and "\x07" not in out.output
    logs = cli_ok("logs", job.id)
    assert safe in logs
    assert json.loads(cli_ok("logs", job.id, "--json"))["text"] == HOSTILE_TEXT
    for text in (status, logs, cli_ok("jobs")):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text

    page = web.get(f"/jobs/{job.id}").text
    assert "\x1b" not in page and "\x07" not in page and "\u202e" not in page
    assert "␛[2J" in page and "copying [/data] to [bold]" in page


def test_shown_replaces_control_characters_but_newline_and_tab() -> None:
    assert shown("a\tb\nc") == "a\tb\nc"
    assert shown("\x1b[2J\r\x00\x7f") == "␛[2J␍␀␡"
    assert shown("\x9b31m \u2028 \ufeff \ud800") == "\\x9b31m \\u2028 \\ufeff \\ud800"
    assert shown("naïve café, 東京 ✓") == "naïve café, 東京 ✓"
