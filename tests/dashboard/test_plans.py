"""The dashboard's chains, groups and schedules pages, read from records altered in Redis:
never a 500, never markup from Redis."""

from __future__ import annotations

import pytest
import redis

import balloons
from balloons.store.keys import flow_index_key, flow_key, schedule_key, schedules_key
from tests import tasks
from tests.dashboard.conftest import Dashboard

pytestmark = pytest.mark.machines


def test_flow_pages_survive_altered_records(dashboard: Dashboard, r: redis.Redis) -> None:
    job = balloons.chain(tasks.add.s(1, 1), tasks.add.s(1)).submit()
    assert job.result(timeout=60) == 3
    ns = "balloons"
    bogus = "chain-" + "0" * 26
    r.zadd(flow_index_key(ns), {"<script>x</script>": 9e9, bogus: 9e9, "group-zz": 9e9})
    r.hset(flow_key(ns, bogus), mapping={"spec": b"\xff", "end": "[]", "job:0": "<b>x</b>"})
    with dashboard.login() as client:
        page = client.get("/flows")
        assert page.status_code == 200
        assert job.id in page.text and bogus in page.text
        assert "<script>x" not in page.text and "<b>x</b>" not in page.text
        one = client.get(f"/flows/{job.id}")
        assert one.status_code == 200 and one.text.count('class="member"') == 2
        bad = client.get(f"/flows/{bogus}")
        assert bad.status_code == 200 and "INVALID" in bad.text and "record invalid" in bad.text
        assert client.get("/flows/chain-nope").status_code == 404
        assert client.get("/flows/group-" + "1" * 26).status_code == 404


def test_the_schedules_page_reads_state_as_untrusted(dashboard: Dashboard, r: redis.Redis) -> None:
    ns = "balloons"
    r.sadd(schedules_key(ns), "nightly", "bad\x1b[2Jname")
    r.hset(schedule_key(ns, "nightly"), mapping={"last_due": "1e300", "last_job": "nope"})
    with dashboard.login() as client:
        page = client.get("/schedules")
    assert page.status_code == 200
    assert "nightly" in page.text and "\x1b" not in page.text
