"""Filtered listings and pool summaries over real job records."""

from __future__ import annotations

import json
import time

import pytest

from balloons import JobStatus
from balloons.listing import Filters, find_jobs, pool_summaries
from balloons.store.writes import SubmitRequest
from tests import tasks
from tests.dashboard.conftest import machines_settled

pytestmark = pytest.mark.machines


def test_filters_parse_user_input_and_explain_bad_values() -> None:
    f = Filters.parse("failed", "add", "other")
    assert f == Filters(JobStatus.FAILED, "add", "other")
    assert Filters.parse(None, "", "") == Filters()
    with pytest.raises(ValueError, match="unknown status 'DONE': expected one of QUEUED"):
        Filters.parse("DONE", None, None)
    with pytest.raises(ValueError, match="'Bad Pool' is not a pool name"):
        Filters.parse(None, None, "Bad Pool")


def test_find_jobs_pages_newest_first_across_pools() -> None:
    jobs = [tasks.add.submit(i, i) for i in range(3)]
    jobs.append(tasks.add.options(pool="other").submit(9, 9))
    for j in jobs:
        j.result(timeout=30)
    store = tasks.app.store
    first = find_jobs(store, Filters(), page=1, per_page=2)
    assert [r.id for r in first.rows] == [jobs[3].id, jobs[2].id]
    assert first.has_next and first.scanned == 3 and not first.truncated
    second = find_jobs(store, Filters(), page=2, per_page=2)
    assert [r.id for r in second.rows] == [jobs[1].id, jobs[0].id] and not second.has_next
    assert second.tasks == ["tests.tasks:add"]
    only_other = find_jobs(store, Filters(pool="other"))
    assert [r.id for r in only_other.rows] == [jobs[3].id]
    assert find_jobs(store, Filters(status=JobStatus.FAILED)).rows == []
    assert [r.id for r in find_jobs(store, Filters(task="tests.tasks:add")).rows][-1] == jobs[0].id
    for page, per_page in ((0, 50), (10**20, 50), (1, 0), (1, 10**9)):
        with pytest.raises(ValueError, match="page must be from 1 to 1000000 and per_page"):
            find_jobs(store, Filters(), page=page, per_page=per_page)


def test_pool_summaries_count_jobs_and_machines() -> None:
    # Submitted together, so that each gets a machine of its own (no warm reuse).
    ok, bad = tasks.add.submit(1, 1), tasks.fail.submit("no")
    ok.result(timeout=30)
    with pytest.raises(Exception, match="no"):
        bad.result(timeout=30)
    tasks.add.options(pool="other").submit(1, 1).result(timeout=30)
    machines_settled(2)
    found = {p.name: p for p in pool_summaries(tasks.app.store)}
    assert set(found) == {"default", "other"}
    d = found["default"]
    assert d.jobs == {JobStatus.SUCCEEDED: 1, JobStatus.FAILED: 1} and d.total == 2
    assert dict(d.by_status)["FAILED"] == 1 and d.queued == 0
    assert d.machines == {"stopped": 2} and d.machines_running == 0
    assert found["other"].jobs == {JobStatus.SUCCEEDED: 1}


def test_scans_merge_pools_newest_first_across_windows() -> None:
    from balloons.ids import ulid
    from balloons.listing import scan

    store = tasks.app.store
    base = time.time() - 1000
    expected = []
    for i in range(150):  # records only: nothing is launched
        pool = "a" if i % 3 else "b"
        created = base + i
        jid = f"{pool}.{ulid(created)}"
        payload = json.dumps({"task": f"m:t{i % 4}", "id": jid}).encode()
        store.submit(store.keys(jid), _request(payload, created))
        expected.append(jid)
    expected.reverse()
    assert [j.id for j in scan(store, ["a", "b"], first=4)] == expected
    limited = [j.id for j in scan(store, ["a", "b"], limit=10, first=3)]
    assert sorted(limited) == sorted(
        [j for j in expected if j.startswith("a.")][:10]
        + [j for j in expected if j.startswith("b.")][:10]
    )
    page = find_jobs(store, Filters(task="t1"), page=2, per_page=10)
    assert [r.id for r in page.rows] == [
        j for i, j in zip(range(149, -1, -1), expected, strict=True) if i % 4 == 1
    ][10:20]
    assert page.has_next


def _request(payload: bytes, created: float) -> SubmitRequest:
    """A job record that waits in the queue of a pool whose cap is 0: nothing is launched."""
    return SubmitRequest(
        payload=payload,
        args=b"{}",
        sig="sig",
        created=created,
        ttl=3600,
        pool_config="cap 0",
        due=None,
        priority=0,
        cpus=1,
        memory_mb=256,
        key_digest="",
    )
