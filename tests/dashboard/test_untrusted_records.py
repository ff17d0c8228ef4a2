"""The job page shows no result, error, attempt message or progress that a Redis writer without
the app's secret wrote: it says that what is stored does not verify."""

from __future__ import annotations

import json
from html import unescape

import pytest
import redis

from balloons import JobFailed
from balloons.store.keys import JobKeys
from tests import tasks
from tests.dashboard.conftest import Dashboard

pytestmark = pytest.mark.machines


def test_job_page_shows_nothing_forged(dashboard: Dashboard, r: redis.Redis) -> None:
    ok = tasks.chatty.submit(1, 2)
    ok.result(timeout=30)
    bad = tasks.fail.submit("the real message")
    with pytest.raises(JobFailed):
        bad.result(timeout=30)
    with dashboard.login() as c:
        before = unescape(c.get(f"/jobs/{ok.id}").text + c.get(f"/jobs/{bad.id}").text)
    assert "step 2" in before and "the real message" in before

    okk, badk = JobKeys.of("balloons", ok.id), JobKeys.of("balloons", bad.id)
    r.hset(okk.job, mapping={"result": b'"FORGED result"', "note": "FORGED note"})
    error = json.loads(r.hget(badk.job, "error"))  # type: ignore[arg-type]
    error.update(message="FORGED error", traceback="FORGED traceback")
    r.hset(badk.job, "error", json.dumps(error))
    r.hset(badk.attempts, "1", json.dumps({"n": 1, "outcome": "FAILED", "message": "FORGED"}))
    with dashboard.login() as c:
        page_ok, page_bad = c.get(f"/jobs/{ok.id}").text, c.get(f"/jobs/{bad.id}").text
    shown = unescape(page_ok + page_bad)
    assert "FORGED" not in shown
    assert "not shown: it does not verify with this app's secret" in unescape(page_ok)
    assert "[progress not shown: it does not verify" in unescape(page_ok)
    assert "the error stored for this job does not verify" in unescape(page_bad)
    assert "[message not shown: it does not verify" in unescape(page_bad)
