"""The dashboard over real HTTP: access, pages, filters, actions, live streams, metrics."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import httpx
import pytest
import redis

from balloons.listing import SCAN_LIMIT
from tests import tasks
from tests.dashboard import tasks as dtasks
from tests.dashboard.conftest import Dashboard, machines_settled

pytestmark = pytest.mark.machines

HTML = {"accept": "text/html"}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def test_requests_without_the_token_are_refused(dashboard: Dashboard) -> None:
    with dashboard.client() as c:
        page = c.get("/jobs", headers=HTML)
        assert page.status_code == 303
        assert page.headers["location"].endswith("/login?next=%2Fjobs")
        for path in ("/jobs", "/pools", "/metrics", "/jobs/live", "/"):
            resp = c.get(path)
            assert resp.status_code == 401, path
            assert resp.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/metrics", headers={"authorization": "Bearer wrong-token"}).status_code == 401
        assert c.get("/jobs", headers={"authorization": "Basic x"}).status_code == 401
        c.cookies.set("balloons_dashboard", "abc.123.def")
        assert c.get("/jobs").status_code == 401
        c.cookies.clear()
        login = c.get("/login")
        assert login.status_code == 200 and 'name="token"' in login.text


def test_login_sets_a_strict_httponly_cookie_and_never_shows_the_token(
    dashboard: Dashboard,
) -> None:
    job = tasks.add.submit(1, 2)
    job.result(timeout=30)
    with dashboard.client() as c:
        wrong = c.post("/login", data={"token": "nope"}, headers={"origin": dashboard.url})
        assert wrong.status_code == 401 and "not the dashboard's token" in wrong.text
        foreign = c.post(
            "/login", data={"token": dashboard.token}, headers={"origin": "http://evil.test"}
        )
        assert foreign.status_code == 403 and "Origin" in foreign.text
        assert c.post("/login", data={"token": dashboard.token}).status_code == 403
        ok = c.post(
            "/login",
            data={"token": dashboard.token, "next": "/jobs?status=SUCCEEDED"},
            headers={"origin": dashboard.url},
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/jobs?status=SUCCEEDED"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert dashboard.token not in cookie
        bodies = [c.get(p).text for p in ("/jobs", f"/jobs/{job.id}", "/pools")]
        assert all(dashboard.token not in b for b in bodies)
        assert job.id in bodies[0]
        # a login never sends anyone to another site
        away = c.post(
            "/login",
            data={"token": dashboard.token, "next": "//evil.test/x"},
            headers={"origin": dashboard.url},
        )
        assert away.headers["location"] == "/jobs"
        page = c.get("/jobs")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        out = c.post(
            "/logout", data={"csrf": csrf_of(page.text)}, headers={"origin": dashboard.url}
        )
        assert out.status_code == 303 and 'balloons_dashboard=""' in out.headers["set-cookie"]


def test_jobs_page_filters_by_status_task_and_pool(dashboard: Dashboard) -> None:
    ok = tasks.add.submit(2, 3)
    bad = tasks.fail.submit("boom")
    other = tasks.add.options(pool="other").submit(5, 5)
    ok.result(timeout=30)
    other.result(timeout=30)
    with pytest.raises(Exception, match="boom"):
        bad.result(timeout=30)
    with dashboard.login() as c:
        everything = c.get("/jobs").text
        assert all(j.id in everything for j in (ok, bad, other))
        failed = c.get("/jobs", params={"status": "failed"}).text
        assert bad.id in failed and ok.id not in failed and other.id not in failed
        by_task = c.get("/jobs", params={"task": "add"}).text
        assert ok.id in by_task and other.id in by_task and bad.id not in by_task
        full_name = c.get("/jobs", params={"task": "tests.tasks:fail"}).text
        assert bad.id in full_name and ok.id not in full_name
        pool = c.get("/jobs", params={"pool": "other"}).text
        assert other.id in pool and ok.id not in pool
        none = c.get("/jobs", params={"pool": "other", "status": "FAILED"}).text
        assert "No jobs match these filters" in none
        bad_status = c.get("/jobs", params={"status": "DONE"})
        assert bad_status.status_code == 400
        assert "unknown status 'DONE': expected one of QUEUED" in unescape(bad_status.text)
        bad_pool = c.get("/jobs", params={"pool": "Not A Pool"})
        assert bad_pool.status_code == 400
        assert "'Not A Pool' is not a pool name" in unescape(bad_pool.text)
        bad_page = c.get("/jobs", params={"page": "0"})
        assert bad_page.status_code == 400 and "page must be" in bad_page.text
        empty_page = c.get("/jobs", params={"page": "2"}).text
        assert "page 2" in empty_page and "newer" in empty_page and ok.id not in empty_page


def test_jobs_page_searches_ids_tasks_statuses_reasons_and_error_text(
    dashboard: Dashboard, r: redis.Redis
) -> None:
    ok = tasks.add.submit(2, 3)
    bad = tasks.fail.submit("a needle in the stack")
    other = tasks.echo.options(pool="other").submit("needle")  # in its arguments only
    forged = tasks.fail.submit("plain")
    ok.result(timeout=30)
    other.result(timeout=30)
    for job in (bad, forged):
        with pytest.raises(Exception, match=r"needle|plain"):
            job.result(timeout=30)
    # An error altered in Redis (its tag no longer verifies) is not searched.
    key = tasks.app.store.keys(forged.id).job
    r.hset(key, "error", r.hget(key, "error").replace(b"plain", b"needle"))  # type: ignore[union-attr]

    def found(q: str, **more: str) -> set[str]:
        page = c.get("/jobs", params={"q": q, **more})
        assert page.status_code == 200, page.text
        return {j.id for j in (ok, bad, other, forged)} & set(
            re.findall(r'data-job="([^"]+)"', page.text)
        )

    with dashboard.login() as c:
        assert found("needle") == {bad.id}
        assert found("error:NEEDLE") == {bad.id}
        assert found(ok.id.rpartition(".")[2][:20]) == {ok.id}  # an id prefix
        assert found(f"id:{other.id[:12]}") == {other.id}
        assert found("task:add") == {ok.id}
        assert found("tests.tasks:echo") == {other.id}
        assert found("status:failed") == {bad.id, forged.id}
        assert found("reason:task_error task:fail") == {bad.id, forged.id}
        assert found("status:failed needle") == {bad.id}
        assert found("needle", status="SUCCEEDED") == set()
        assert found("pool:other") == {other.id}
        page = c.get("/jobs", params={"q": "needle"}).text
        assert 'value="needle"' in page and "q=needle" in page  # kept in the box and the stream
        assert found("pool:other pool:default") == set()
        for q, says in (
            ("status:", "names nothing after status:"),
            ("x" * 201, "at most 200"),
            ("pool:Evil", "'Evil' is not a pool name"),
        ):
            refused = c.get("/jobs", params={"q": q})
            assert refused.status_code == 400 and says in unescape(refused.text)


def test_jobs_page_searches_labels_of_jobs_submitted_through_the_service(
    dashboard: Dashboard, r: redis.Redis
) -> None:
    from tests.servicehttp import serving

    with serving() as service, service.client() as api:

        def submit(labels: dict[str, str]) -> str:
            body = {"task": "tests.tasks:add", "args": [1, 2], "delay": 3600, "labels": labels}
            made = api.post("/v1/jobs", json=body)
            assert made.status_code == 201, made.text
            return str(made.json()["id"])

        blue = submit({"team": "blue", "env": "prod"})
        red = submit({"team": "red", "env": "prod"})
        none = submit({})
    plain = tasks.add.options(delay=3600).submit(1, 2)  # the library's: no labels
    forged = tasks.add.options(delay=3600).submit(3, 4)
    r.set(tasks.app.store.keys(forged.id).meta, b'{"labels": ["team", "blue"]}')  # unreadable

    def found(q: str) -> set[str]:
        page = c.get("/jobs", params={"q": q})
        assert page.status_code == 200, page.text
        ids = {blue, red, none, plain.id, forged.id}
        return ids & set(re.findall(r'data-job="([^"]+)"', page.text))

    with dashboard.login() as c:
        assert found("label:team=blue") == {blue}
        assert found("label:team") == {blue, red}
        assert found("label:env=prod label:team=red") == {red}
        assert found("label:env=prod task:add") == {blue, red}
        assert found("label:team=Blue") == set()  # a value matches exactly
        assert found("label:team=") == set()  # no job has an empty team
        refused = c.get("/jobs", params={"q": "label:=blue"})
        assert refused.status_code == 400 and "names no label" in unescape(refused.text)


def test_job_page_shows_arguments_truncated_attempts_and_result(dashboard: Dashboard) -> None:
    job = dtasks.big.submit({"small": "tiny value", "large": "y" * 10_000})
    assert job.result(timeout=30) == 10_010
    with dashboard.login() as c:
        html = c.get(f"/jobs/{job.id}").text
        assert "tiny value" in html
        assert "y" * 1900 in html and "y" * 10_000 not in html
        assert re.search(r"first 2000 of 100\d\d characters", html)
        info = job.info()
        assert info.machine_id and info.machine_id in html
        assert "1 cpu" in html and "256 MB" in html
        assert 'id="result">10010<' in html
        assert 'id="retry"' in html and 'id="cancel"' not in html
        assert "SUCCEEDED" in html


def test_failed_job_page_shows_the_remote_traceback(dashboard: Dashboard) -> None:
    job = tasks.fail.submit("it broke <badly>")
    with pytest.raises(Exception, match="it broke"):
        job.result(timeout=30)
    with dashboard.login() as c:
        html = c.get(f"/jobs/{job.id}").text
        assert "ValueError" in html and "it broke &lt;badly&gt;" in html
        assert "Traceback (most recent call last)" in html and "task_error" in html
        assert c.get("/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh").status_code == 404
        missing = c.get("/jobs/not-a-job")
        assert missing.status_code == 404 and "is not a job id" in missing.text


def test_each_failed_attempt_shows_its_reason_and_message(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    job = tasks.flaky.submit(str(tmp_path / "n"), 1)
    assert job.result(timeout=60) == 2
    with dashboard.login() as c:
        html = c.get(f"/jobs/{job.id}").text
        assert '<td>task_error<div class="note">attempt 1 fails</div></td>' in html


def test_bulk_cancel_and_retry_act_on_the_filtered_selection(dashboard: Dashboard) -> None:
    waiting = [tasks.sleep.options(delay=600).submit(1) for _ in range(3)]
    failed = [tasks.fail.submit(f"bulk {i}") for i in range(2)]
    done = tasks.add.submit(1, 1)
    done.result(timeout=30)
    for job in failed:
        with pytest.raises(Exception, match="bulk"):
            job.result(timeout=30)
    with dashboard.login() as c:
        page = c.get("/jobs", params={"q": "task:sleep"}).text
        assert 'id="bulk"' in page and 'name="q" value="task:sleep"' in page
        assert 'id="bulk"' not in c.get("/jobs").text  # no selection, no bulk action
        origin = {"origin": dashboard.url}

        def bulk(**form: str) -> httpx.Response:
            return c.post("/jobs/bulk", data={"csrf": csrf_of(page), **form}, headers=origin)

        no_csrf = c.post("/jobs/bulk", data={"action": "cancel", "q": "task:sleep"}, headers=origin)
        assert no_csrf.status_code == 403
        foreign = c.post(
            "/jobs/bulk",
            data={"csrf": csrf_of(page), "action": "cancel", "q": "task:sleep"},
            headers={"origin": "http://evil.test"},
        )
        assert foreign.status_code == 403
        assert all(j.status().value == "QUEUED" for j in waiting)
        refused = bulk(action="cancel")
        assert refused.status_code == 400 and "needs a filter" in refused.text
        assert bulk(action="explode", q="x").status_code == 400

        out = bulk(action="cancel", q="task:sleep")
        assert out.status_code == 200, out.text
        assert "3 of 3 selected jobs cancelled" in out.text
        assert all(j.status().value == "CANCELLED" for j in waiting)
        assert done.status().value == "SUCCEEDED" and all(
            j.status().value == "FAILED" for j in failed
        )
        again = bulk(action="cancel", q="task:sleep")  # nothing left to cancel: none twice
        assert "0 of 0 selected jobs cancelled" in again.text

        out = bulk(action="retry", status="FAILED", task="fail")
        assert "2 of 2 selected jobs retried" in out.text
        rows = re.findall(r'data-outcome="retried">(.*?)</tr>', out.text, re.S)
        new = [re.findall(r'/jobs/([^"]+)"', row)[-1] for row in rows]
        assert len(new) == 2 and not set(new) & {j.id for j in failed}
        for job_id in new:
            with pytest.raises(Exception, match="bulk"):
                tasks.app.job(job_id).result(timeout=30)
        assert all(j.status().value == "FAILED" for j in failed)  # the originals are kept


def test_retry_button_submits_the_same_call_again(dashboard: Dashboard) -> None:
    job = tasks.add.submit(20, 22)
    job.result(timeout=30)
    with dashboard.login() as c:
        page = c.get(f"/jobs/{job.id}").text
        no_csrf = c.post(f"/jobs/{job.id}/retry", headers={"origin": dashboard.url})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        foreign = c.post(
            f"/jobs/{job.id}/retry",
            data={"csrf": csrf_of(page)},
            headers={"origin": "http://evil.test"},
        )
        assert foreign.status_code == 403
        resp = c.post(
            f"/jobs/{job.id}/retry", data={"csrf": csrf_of(page)}, headers={"origin": dashboard.url}
        )
        assert resp.status_code == 303
        new_id = resp.headers["location"].rsplit("/", 1)[1]
        assert new_id != job.id
        assert tasks.app.job(new_id).result(timeout=30) == 42
        assert tasks.app.job(new_id).info().task == "tests.tasks:add"
    # a bearer request carries its credential explicitly: no cookie, no CSRF to check
    with dashboard.client(headers={"authorization": f"Bearer {dashboard.token}"}) as c:
        resp = c.post(f"/jobs/{job.id}/retry")
        assert resp.status_code == 303
        assert tasks.app.job(resp.headers["location"].rsplit("/", 1)[1]).result(timeout=30) == 42


def test_live_stream_sends_the_job_region_then_ends(dashboard: Dashboard) -> None:
    job = tasks.add.submit(1, 1)
    job.result(timeout=30)
    with dashboard.login() as c:
        with c.stream("GET", f"/jobs/{job.id}/live") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = []
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                if events[-1:] == ["end"]:
                    break
        assert events == ["update", "end"]


def test_pools_page_counts_jobs_by_status(dashboard: Dashboard) -> None:
    tasks.add.submit(1, 2).result(timeout=30)
    tasks.add.options(pool="reports").submit(1, 2).result(timeout=30)
    with dashboard.login() as c:
        html = c.get("/pools").text
        for pool in ("default", "reports"):
            row = re.search(rf'<tr data-pool="{pool}">(.*?)</tr>', html, re.S)
            assert row, pool
            assert f'pool={pool}&amp;status=SUCCEEDED">1<' in row.group(1)
            # The pool's cap and its machines and queue, from its slot table.
            assert '<td class="num" data-cap>10</td>' in row.group(1)
            assert "data-queued>0</td>" in row.group(1)
            assert '<td class="num" data-standby>0/0</td>' in row.group(1)  # none kept stopped


def test_metrics_read_redis_at_scrape_time(
    dashboard: Dashboard, r: redis.Redis, tmp_path: Path
) -> None:
    # Each job gets a machine of its own (no warm reuse): the first holds its machine until
    # the second is placed. (Submitted one after the other, the first could have run on a
    # machine forked ahead and be idling there by the second's submit, which would take it.)
    flag = tmp_path / "placed"
    ok = tasks.add_after.submit(str(flag), 1, 2)
    bad = tasks.fail.submit("x")
    flag.touch()
    ok.result(timeout=30)
    with pytest.raises(Exception, match="x"):
        bad.result(timeout=30)
    machines_settled(2)
    auth = {"authorization": f"Bearer {dashboard.token}"}
    with dashboard.client(headers=auth) as c:
        text = c.get("/metrics").text
        add = 'pool="default",task="tests.tasks:add_after"'
        assert (
            'balloons_jobs_ended_total{pool="default",reason="",status="SUCCEEDED",'
            'task="tests.tasks:add_after"} 1.0' in text
        )
        assert (
            'balloons_jobs_ended_total{pool="default",reason="task_error",status="FAILED",'
            'task="tests.tasks:fail"} 1.0' in text
        )
        for name in ("queue_wait", "run", "end_to_end"):
            assert f"balloons_job_{name}_seconds_count{{{add}}} 1.0" in text
        # Each job got a machine of its own: two boots, each launch to claim.
        boots = re.findall(
            r'balloons_machine_boot_seconds_count\{pool="default",[^}]*\} (\S+)', text
        )
        assert sum(float(n) for n in boots) == 2.0
        assert 'balloons_pool_queued_jobs{pool="default"} 0.0' in text
        assert 'balloons_machines{pool="default",state="stopped"} 2.0' in text
        assert 'balloons_pool_running_machines{pool="default"} 0.0' in text
        assert 'balloons_pool_machines{pool="default",state="running"} 0.0' in text
        tasks.add_after.submit(str(flag), 3, 4).result(timeout=30)
        again = c.get("/metrics").text
        assert 'status="SUCCEEDED",task="tests.tasks:add_after"} 2.0' in again
        assert f"balloons_job_run_seconds_count{{{add}}} 2.0" in again
        r.flushall()
        assert "balloons_jobs_ended_total{" not in c.get("/metrics").text


def test_listing_notes_when_it_stops_scanning(dashboard: Dashboard) -> None:
    assert SCAN_LIMIT >= 1000  # a listing looks through at least the index's trim threshold
    with dashboard.login() as c:
        assert "looked through" not in c.get("/jobs").text


def test_dashboard_refuses_a_missing_or_short_token() -> None:
    from balloons.dashboard import create_app
    from balloons.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a token"):
        create_app(tasks.app, token=None)
    with pytest.raises(ConfigError, match="expected at least 16"):
        create_app(tasks.app, token="short")


def test_static_files_need_no_login(dashboard: Dashboard) -> None:
    with httpx.Client(base_url=dashboard.url) as c:
        js = c.get("/static/live.js")
        assert js.status_code == 200 and "EventSource" in js.text
        assert c.get("/static/dashboard.css").status_code == 200
