"""The job service under a busy world: many clients at once on one job, duplicates racing,
streams resumed at every point, and every documented route refusing a key without its scope;
a real service (uvicorn on 127.0.0.1), a real Valkey and real machines."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.service import openapi
from tests import tasks
from tests.servicehttp import Service
from tests.servicehttp import service as service
from tests.waiting import wait_for

SCOPES = ("jobs:read", "jobs:write")
JOB = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------- scopes
def _operations() -> list[tuple[str, str, list[str]]]:
    """``(method, path, scopes)`` of every operation the document gives a bearer scope."""
    ops = []
    for path, item in openapi.document()["paths"].items():
        for method, op in item.items():
            security = op.get("security", openapi.document().get("security", []))
            for requirement in security:
                for scope in requirement.get("bearer", ()):
                    ops.append((method.upper(), path.replace("{job_id}", JOB), [scope]))
    return ops


def test_every_documented_route_refuses_a_key_without_its_scope(service: Service) -> None:
    ops = _operations()
    assert {(m, p) for m, p, _ in ops} >= {
        ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{JOB}"),
        ("POST", f"/v1/jobs/{JOB}/cancel"), ("GET", f"/v1/jobs/{JOB}/logs"),
        ("GET", "/v1/tasks"), ("GET", "/v1/pools"),
    }  # fmt: skip
    # Every route the service serves is in the document (but the document itself, and the
    # worker protocol's, documented on their own page).
    web = service.served.server.config.app
    served = {r.path for r in web.routes if hasattr(r, "methods")} - {"/v1/openapi.json"}
    assert served == set(openapi.document()["paths"]), served
    keys = {scope: service.key("only-" + scope.replace(":", "-"), scope) for scope in SCOPES}
    body = {"task": "tests.tasks:add", "args": [1, 1], "delay": 3600}
    for method, path, (scope,) in ops:
        assert scope in SCOPES, (method, path, scope)
        for holder, key in keys.items():
            with service.client(key) as c:
                got = c.request(method, path, json=body if method == "POST" else None)
            if holder == scope:
                assert got.status_code not in (401, 403), (method, path, got.text)
            else:
                assert got.status_code == 403, (method, path, holder, got.text)
                assert got.json()["code"] == "insufficient-scope"
        with httpx.Client(base_url=service.url) as anon:
            for auth in (None, "Bearer", "Bearer bk_x", "Basic " + service.token, service.token):
                headers = {"authorization": auth} if auth is not None else {}
                got = anon.request(method, path, headers=headers)
                assert got.status_code == 401, (method, path, auth, got.text)
                assert got.headers["www-authenticate"] == 'Bearer realm="balloons"'
                assert service.token not in got.text
    # An API key, even an admin's, is no attempt token.
    with service.client() as c:
        got = c.get(f"/v1/attempts/{JOB}/1")
    assert got.status_code in (401, 404), got.text


# ---------------------------------------------------------------- idempotency
def test_twenty_identical_submits_at_once_make_one_job(service: Service) -> None:
    body = {"task": "tests.tasks:add", "args": [2, 2], "delay": 3600}
    start = threading.Barrier(20)
    answers: list[httpx.Response] = []

    def submit() -> None:
        with service.client() as c:
            start.wait()
            answers.append(c.post("/v1/jobs", json=body, headers={"idempotency-key": "twenty"}))

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in answers)
    assert len(codes) == 20 and codes.count(201) == 1 and set(codes) <= {200, 201, 409}, codes
    ids = {r.json()["id"] for r in answers if r.status_code in (200, 201)}
    assert len(ids) == 1
    for busy in (r for r in answers if r.status_code == 409):
        assert busy.json()["code"] == "idempotency-in-flight"
        assert busy.headers["retry-after"] == "1"
    assert [j.id for j in tasks.app.jobs(limit=50)] == list(ids)
    # Once settled, every retry gets the one job.
    with service.client() as c:
        again = c.post("/v1/jobs", json=body, headers={"idempotency-key": "twenty"})
    assert again.status_code == 200 and again.json()["id"] in ids


# ------------------------------------------------------------------ long-polls
async def _crowd(service: Service, job_id: str, n: int) -> list[httpx.Response]:
    """``n`` long-polls of ``job_id`` at once, the job cancelled once all are open."""
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    headers = {"authorization": f"Bearer {service.token}"}
    async with httpx.AsyncClient(
        base_url=service.url, headers=headers, limits=limits, timeout=60
    ) as c:
        polls = [asyncio.create_task(c.get(f"/v1/jobs/{job_id}?wait=30")) for _ in range(n)]

        def all_open() -> bool:
            ended = [p.result() for p in polls if p.done()]
            assert not ended, f"a long-poll ended before the job: {ended[0].text}"
            return bool(service.activity.active >= n)

        while not all_open():
            await asyncio.sleep(0.02)
        cancelled = await c.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        return list(await asyncio.gather(*polls))


@pytest.mark.parametrize("n", [200])
def test_two_hundred_long_polls_on_one_job_all_wake_and_leave_no_descriptor(
    service: Service, n: int
) -> None:
    counts = []
    for _ in range(2):
        with service.client() as c:
            body = {"task": "tests.tasks:add", "args": [1, 1], "delay": 3600}
            job_id = c.post("/v1/jobs", json=body).json()["id"]
        answers = asyncio.run(_crowd(service, job_id, n))
        assert [r.status_code for r in answers] == [200] * n
        assert {r.json()["state"] for r in answers} == {"cancelled"}
        wait_for(lambda: service.activity.active == 0, "every request to end")
        counts.append(_fds())
    # The second crowd reuses what the first opened (Redis connections kept for reuse); the
    # sockets of the requests are closed.
    wait_for(lambda: _fds() <= counts[0], f"descriptors back to {counts[0]}, not {_fds()}")


# ----------------------------------------------------------------------- logs
def _events(resp: httpx.Response) -> list[dict[str, str]]:
    out, event = [], {}
    for line in resp.iter_lines():
        if not line:
            if event:
                out.append(event)
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
    return out


@pytest.mark.machines
def test_a_log_stream_resumed_after_any_event_sends_the_rest_exactly_once(
    service: Service,
) -> None:
    with service.client() as c:
        body = {"task": "tests.tasks:chatty", "args": [1500]}
        job_id = c.post("/v1/jobs", json=body).json()["id"]
        assert c.get(f"/v1/jobs/{job_id}?wait=30").json()["state"] == "succeeded"
        with c.stream("GET", f"/v1/jobs/{job_id}/logs") as resp:
            whole = _events(resp)
        assert whole[-1] == {"event": "end", "data": '{"state": "succeeded"}'}
        logs = whole[:-1]
        texts = [json.loads(e["data"])["text"] for e in logs]
        assert texts[:1500] == [f"line {i}" for i in range(1500)]  # past one read's count
        ids = [e["id"] for e in logs]
        assert len(set(ids)) == len(ids) and all(e["event"] == "log" for e in logs)
        for cut in (0, 1, 999, 1000, 1001, len(logs) - 1):
            how: dict[str, Any] = {"headers": {"last-event-id": ids[cut]}}
            if cut % 2:
                how = {"params": {"after": ids[cut]}}
            with c.stream("GET", f"/v1/jobs/{job_id}/logs", **how) as resp:
                rest = _events(resp)
            assert rest[:-1] == logs[cut + 1 :], cut
            assert rest[-1]["event"] == "end"
        # An id past the last, or of another stream's numbers: the end, nothing resent.
        with c.stream(
            "GET", f"/v1/jobs/{job_id}/logs", headers={"last-event-id": "9" * 19 + "-0"}
        ) as resp:
            assert [e["event"] for e in _events(resp)] == ["end"]
        for bad in ("1-", "-1", "1-2-3", "a-b", "9" * 20 + "-0", "1-" + "9" * 20, "1-1\n"):
            got = c.get(f"/v1/jobs/{job_id}/logs", params={"after": bad})
            assert got.status_code == 400 and got.json()["code"] == "invalid-request", bad


def test_long_polls_whose_clients_went_away_end_with_them(service: Service) -> None:
    with service.client() as c:
        body = {"task": "tests.tasks:add", "args": [1, 1], "delay": 3600}
        job_id = c.post("/v1/jobs", json=body).json()["id"]

    async def abandon() -> None:
        headers = {"authorization": f"Bearer {service.token}"}
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=60) as ac:
            polls = [asyncio.create_task(ac.get(f"/v1/jobs/{job_id}?wait=30")) for _ in range(50)]
            while service.activity.active < 50:
                await asyncio.sleep(0.02)
            for p in polls:
                p.cancel()
            await asyncio.gather(*polls, return_exceptions=True)

    asyncio.run(abandon())
    # They held their places (a waiter's, a Redis connection, the idle exit) for their whole
    # wait of 30 s; now they end with their connection (a liveness margin, not a measure).
    wait_for(lambda: service.activity.active == 0, "the abandoned long-polls to end", 20)
    with service.client() as c:
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "scheduled"
