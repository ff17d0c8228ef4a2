"""The job service's producer API against a real service (uvicorn on 127.0.0.1), a real Valkey
and real local machines, through httpx."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.service.idempotency import Idempotency, body_digest
from tests import tasks
from tests.servicehttp import PROBLEM, Service, problem, serving
from tests.servicehttp import client as client
from tests.servicehttp import service as service
from tests.waiting import wait_for


# ------------------------------------------------------------------ submit and read
@pytest.mark.machines
def test_a_task_job_is_submitted_waited_for_and_read(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/jobs", json={"task": "tests.tasks:add", "args": [2], "kwargs": {"b": 3}}
    )
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "task" and job["task"] == "tests.tasks:add"
    assert job["state"] in ("queued", "starting", "running", "succeeded")
    assert job["max_attempts"] == 1 and job["labels"] == {}
    done = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
    assert done["state"] == "succeeded" and done["result"] == 5 and done["error"] is None
    assert done["created_at"].endswith("Z") and done["ended_at"] and done["machine_id"]
    # The same job, read by the library, says the same.
    assert tasks.app.job(job["id"]).result(timeout=5) == 5


@pytest.mark.machines
def test_a_failed_job_carries_its_remote_error(client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"task": "tests.tasks:fail", "args": ["no luck"]}).json()
    done = client.get(f"/v1/jobs/{job['id']}?wait=30").json()
    assert done["state"] == "failed" and done["reason"] == "task_error"
    assert done["error"]["type"] == "ValueError" and done["error"]["message"] == "no luck"
    assert "Traceback" in done["error"]["traceback"]


@pytest.mark.machines
def test_options_labels_and_input_reach_the_job(client: httpx.Client) -> None:
    body = {
        "task": "tests.tasks:echo",
        "args": [1],
        "input": {"x": [1, 2]},
        "pool": "svcpool",
        "timeout": 20,
        "retries": 2,
        "machine": {"cpus": 1, "memory_mb": 256},
        "labels": {"team": "a", "env": "test"},
    }
    job = client.post("/v1/jobs", json=body).json()
    assert job["pool"] == "svcpool" and job["id"].startswith("svcpool.")
    assert job["max_attempts"] == 3 and job["labels"] == {"team": "a", "env": "test"}
    done = client.get(f"/v1/jobs/{job['id']}?wait=30").json()
    assert done["result"] == {"args": [1], "kwargs": {"input": {"x": [1, 2]}}}


def test_a_delayed_job_is_scheduled(client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"task": "tests.tasks:add", "args": [1, 1], "delay": 3600})
    assert job.status_code == 201, job.text
    assert job.json()["state"] == "scheduled" and job.json()["scheduled_at"]
    at = client.post(
        "/v1/jobs", json={"task": "tests.tasks:add", "args": [1, 1], "at": "2099-01-01T00:00:00Z"}
    )
    problem(at, 422, "invalid-options")  # past the record TTL: the library's own check


@pytest.mark.parametrize(
    "extra",
    [
        {"task": "tests.tasks:add", "args": [1, 2], "delay": 3600},
        {
            "task": "tests.tasks:echo",
            "args": [1, "zwei"],
            "input": {"x": [1, 2]},
            "pool": "svcpool",
            "timeout": 20,
            "retries": 2,
            "machine": {"cpus": 1, "memory_mb": 256},
            "labels": {"team": "a", "env": "test"},
            "delay": 60,
        },
    ],
)
def test_the_201_is_the_resource_a_get_gives_right_after(
    client: httpx.Client, extra: dict[str, object]
) -> None:
    made = client.post("/v1/jobs", json=extra)
    assert made.status_code == 201, made.text
    read = client.get(made.headers["location"])
    assert read.status_code == 200, read.text
    assert made.content == read.content  # byte for byte
    assert made.headers["content-type"] == read.headers["content-type"] == "application/json"
    assert made.json()["state"] == "scheduled"


def test_a_submit_is_one_round_trip_to_redis(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job is stored, placed and read back for the answer in one write to Redis, on the
    service's own RESP client; redis-py's asyncio client is not used."""
    import redis.asyncio.client as redis_async

    from balloons.store import aresp

    body = {"task": "tests.tasks:add", "args": [1, 2], "delay": 3600}
    assert client.post("/v1/jobs", json=body).status_code == 201  # connections made
    writes: list[int] = []
    redis_py: list[str] = []
    call, execute, command = (
        aresp._Connection.call,
        redis_async.Pipeline.execute,
        redis_async.Redis.execute_command,
    )

    def counted(self: aresp._Connection, data: bytes, n: int) -> object:
        writes.append(n)
        return call(self, data, n)

    async def pipeline(self: redis_async.Pipeline, *a: object, **k: object) -> object:
        redis_py.append("pipeline")
        return await execute(self, *a, **k)

    async def single(self: redis_async.Redis, *a: object, **k: object) -> object:
        redis_py.append(str(a[0]))
        return await command(self, *a, **k)

    monkeypatch.setattr(aresp._Connection, "call", counted)
    monkeypatch.setattr(redis_async.Pipeline, "execute", pipeline)
    monkeypatch.setattr(redis_async.Redis, "execute_command", single)
    made = client.post("/v1/jobs", json=body)
    assert made.status_code == 201, made.text
    assert len(writes) == 1 and redis_py == [], (writes, redis_py)
    assert made.json()["state"] == "scheduled"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ([1], 400, "invalid-request"),
        ({}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "command": {"cmd": ["x"]}}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "nope": 1}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "args": {"a": 1}}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "timeout": -1}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "timeout": True}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "retries": 1.5}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "pool": "Bad Pool"}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "at": "tomorrow"}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "at": "2030-01-01T00:00:00"}, 400, "invalid-request"),
        (
            {"task": "tests.tasks:add", "delay": 1, "at": "2030-01-01T00:00:00Z"},
            400,
            "invalid-request",
        ),
        ({"task": "tests.tasks:add", "labels": {"a": 1}}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "labels": {"no space": "x"}}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "machine": {"cpus": 0}}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "args": [{"$bytes": "!!"}]}, 400, "invalid-request"),
        ({"task": "tests.tasks:add", "machine": {"region": "ams"}}, 422, "option-unsupported"),
        ({"task": "tests.tasks:add", "callback": "http://x"}, 422, "callback-secret-required"),
        ({"task": "tests.tasks:add", "callback": "ftp://x"}, 400, "invalid-request"),
        ({"task": "tests.tasks:nothing_here"}, 422, "unknown-task"),
        ({"task": "os:system", "args": ["true"]}, 422, "unknown-task"),
        ({"task": "tests.tasks:add", "args": [1]}, 422, "invalid-arguments"),
        ({"task": "tests.tasks:add", "args": [{"$bytes": "aGk="}, 1]}, 422, "invalid-arguments"),
        ({"command": {"cmd": "true"}}, 400, "invalid-request"),
        ({"command": {"cmd": ["true"], "env": {"A=B": "x"}}}, 400, "invalid-request"),
        ({"command": {"cmd": ["true"]}, "retry_on_exit_codes": [0]}, 400, "invalid-request"),
    ],
)
def test_a_bad_body_is_a_problem_and_stores_nothing(
    client: httpx.Client, body: object, status: int, code: str
) -> None:
    problem(client.post("/v1/jobs", json=body), status, code)
    assert tasks.app.jobs(limit=10) == []


def test_a_command_job_is_checked_then_handed_to_the_command_job_code(
    client: httpx.Client,
) -> None:
    body = {
        "command": {"cmd": ["sh", "-c", "true"], "env": {"A": "1"}},
        "delay": 3600,
        "labels": {"k": "v"},
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["kind"] == "command" and job["labels"] == {"k": "v"}
    assert job["state"] == "scheduled" and job["task"] is None


def test_the_body_must_be_json_and_not_too_large(client: httpx.Client) -> None:
    problem(client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"}),
            400, "invalid-request")  # fmt: skip
    problem(client.post("/v1/jobs", content=b"task=x"), 415, "unsupported-media-type")
    deep = b"[" * 100_000 + b"]" * 100_000
    problem(client.post("/v1/jobs", content=deep, headers={"content-type": "application/json"}),
            400, "invalid-request")  # fmt: skip
    huge = json.dumps({"task": "tests.tasks:echo", "args": ["x" * 2_000_000]})
    problem(client.post("/v1/jobs", content=huge, headers={"content-type": "application/json"}),
            413, "body-too-large")  # fmt: skip


def test_unknown_jobs_and_routes_are_404_problems(client: httpx.Client) -> None:
    problem(client.get("/v1/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh"), 404, "job-not-found")
    problem(client.get("/v1/jobs/not-a-job-id"), 404, "job-not-found")
    problem(client.post("/v1/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh/cancel"), 404, "job-not-found")
    problem(client.get("/v1/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh/logs"), 404, "job-not-found")
    problem(client.get("/v1/elsewhere"), 404, "not-found")
    problem(client.delete("/v1/jobs"), 405, "method-not-allowed")
    for wait in ("-1", "31", "nan", "x"):
        problem(client.get(f"/v1/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh?wait={wait}"), 400,
                "invalid-request")  # fmt: skip


# ------------------------------------------------------------------ idempotency
def test_an_idempotency_key_replays_the_same_job_and_refuses_another_body(
    client: httpx.Client,
) -> None:
    body = {"task": "tests.tasks:add", "args": [1, 2], "delay": 3600}
    first = client.post("/v1/jobs", json=body, headers={"idempotency-key": "order-1"})
    assert first.status_code == 201, first.text
    # The same JSON spelled otherwise is the same body.
    spelled = json.dumps({"delay": 3600, "args": [1, 2], "task": "tests.tasks:add"}, indent=2)
    again = client.post(
        "/v1/jobs",
        content=spelled,
        headers={"idempotency-key": "order-1", "content-type": "application/json"},
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = client.post(
        "/v1/jobs", json={**body, "args": [2, 2]}, headers={"idempotency-key": "order-1"}
    )
    problem(other, 422, "idempotency-key-reused")
    assert [j.id for j in tasks.app.jobs(limit=10)] == [first.json()["id"]]
    ttl = tasks.app.store.redis.ttl(tasks.app.store.redis.keys("*:service:idem:*")[0])
    assert 23 * 3600 < ttl <= 24 * 3600


def test_a_concurrent_duplicate_gets_409_and_a_failed_submit_frees_the_key(
    client: httpx.Client, service: Service
) -> None:
    body = {"task": "tests.tasks:add", "args": [1, 2], "delay": 3600}
    # Another request holds the key, its submit under way (as the service itself takes it).
    idem = Idempotency(tasks.app.store, tasks.app.settings.namespace)

    async def take() -> object:
        return await idem.begin("bootstrap", "k-2", body_digest(body))

    import asyncio

    claim = asyncio.run(take())
    busy = client.post("/v1/jobs", json=body, headers={"idempotency-key": "k-2"})
    problem(busy, 409, "idempotency-in-flight")
    assert busy.headers["retry-after"] == "1"
    assert tasks.app.jobs(limit=10) == []
    asyncio.run(idem.abandon(claim))  # type: ignore[arg-type]
    assert client.post("/v1/jobs", json=body, headers={"idempotency-key": "k-2"}).status_code == 201
    # A submit that fails lets the key go: the corrected request may use it.
    bad = {"task": "tests.tasks:add", "args": [1]}
    problem(client.post("/v1/jobs", json=bad, headers={"idempotency-key": "k-3"}), 422,
            "invalid-arguments")  # fmt: skip
    good = client.post("/v1/jobs", json=body, headers={"idempotency-key": "k-3"})
    assert good.status_code == 201
    # Keys are per API key: another key's "k-3" is its own.
    other = service.key("other", "jobs:write", "jobs:read")
    with service.client(other) as c2:
        assert c2.post("/v1/jobs", json=body, headers={"idempotency-key": "k-3"}).status_code == 201
    problem(client.post("/v1/jobs", json=body, headers={"idempotency-key": "x" * 256}), 400,
            "invalid-idempotency-key")  # fmt: skip


def test_idempotent_submits_racing_store_one_job(client: httpx.Client, service: Service) -> None:
    body = {"task": "tests.tasks:add", "args": [5, 5], "delay": 3600}
    codes: list[int] = []
    ids: set[str] = set()

    def go() -> None:
        with service.client() as c:
            r = c.post("/v1/jobs", json=body, headers={"idempotency-key": "race"})
            codes.append(r.status_code)
            if r.status_code in (200, 201):
                ids.add(r.json()["id"])

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(201) == 1 and set(codes) <= {200, 201, 409}, codes
    assert len(ids) == 1 and [j.id for j in tasks.app.jobs(limit=20)] == list(ids)


# ------------------------------------------------------------------ list, cancel
def test_jobs_are_listed_newest_first_filtered_and_paged(client: httpx.Client) -> None:
    made = []
    for i in range(7):
        body = {
            "task": "tests.tasks:add",
            "args": [i, i],
            "delay": 3600,
            "pool": "lista" if i % 2 else "listb",
            "labels": {"n": str(i), **({"odd": "yes"} if i % 2 else {})},
        }
        made.append(client.post("/v1/jobs", json=body).json()["id"])
    newest_first = made[::-1]
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [j["id"] for j in page.json()["jobs"]]
        cursor = page.json()["next"]
        if cursor is None:
            break
    assert seen == newest_first
    odd = client.get("/v1/jobs", params={"label": "odd=yes"}).json()["jobs"]
    assert [j["id"] for j in odd] == [m for m in newest_first if m.startswith("lista.")]
    both = client.get("/v1/jobs", params=[("label", "odd"), ("label", "n=3")]).json()["jobs"]
    assert [j["id"] for j in both] == [made[3]]
    in_pool = client.get("/v1/jobs", params={"pool": "listb", "state": "scheduled"}).json()
    assert {j["id"] for j in in_pool["jobs"]} == {m for m in made if m.startswith("listb.")}
    assert client.get("/v1/jobs", params={"state": "running"}).json()["jobs"] == []
    for bad in ({"state": "done"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "garbage!"},
                {"pool": "No"}, {"label": "=x"}):  # fmt: skip
        got = client.get("/v1/jobs", params=bad)
        assert got.status_code == 400 and got.headers["content-type"] == PROBLEM, (bad, got.text)


def test_a_job_is_cancelled_once(client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"task": "tests.tasks:add", "args": [1, 1], "delay": 3600})
    jid = job.json()["id"]
    resp = client.post(f"/v1/jobs/{jid}/cancel")
    assert resp.status_code == 202 and resp.json()["state"] == "cancelled"
    problem(client.post(f"/v1/jobs/{jid}/cancel"), 409, "job-finished")
    assert client.get(f"/v1/jobs/{jid}?wait=1").json()["state"] == "cancelled"


# ------------------------------------------------------------------ logs (SSE)
def _events(resp: httpx.Response) -> Iterator[dict[str, str]]:
    event: dict[str, str] = {}
    for line in resp.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


@pytest.mark.machines
def test_logs_stream_as_events_and_resume_after_the_last_event_id(
    client: httpx.Client, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    job = client.post(
        "/v1/jobs", json={"task": "tests.tasks:print_then_wait", "args": [str(flag)]}
    ).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/logs") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _events(resp)
        first = next(events)
        assert first["event"] == "log"
        assert json.loads(first["data"])["text"] == "waiting for the flag"
        first_id = first["id"]
    flag.write_text("go")
    client.get(f"/v1/jobs/{job['id']}?wait=30")
    with client.stream(
        "GET", f"/v1/jobs/{job['id']}/logs", headers={"last-event-id": first_id}
    ) as resp:
        rest = list(_events(resp))
    assert [json.loads(e["data"])["text"] for e in rest if e["event"] == "log"] == ["flag seen"]
    assert rest[-1]["event"] == "end" and json.loads(rest[-1]["data"]) == {"state": "succeeded"}
    assert rest[0]["id"] > first_id
    bad = client.get(f"/v1/jobs/{job['id']}/logs", headers={"last-event-id": "x-y"})
    problem(bad, 400, "invalid-request")


# ------------------------------------------------------------------ tasks, pools
def test_tasks_and_pools_are_listed(client: httpx.Client) -> None:
    names = {t["name"] for t in client.get("/v1/tasks").json()["tasks"]}
    assert {"tests.tasks:add", "tests.tasks:fail"} <= names
    client.post("/v1/jobs", json={"task": "tests.tasks:add", "args": [1, 1], "delay": 60})
    pools = client.get("/v1/pools").json()["pools"]
    assert [p["pool"] for p in pools] == ["default"] and pools[0]["delayed"] == 1


# ------------------------------------------------------------------ 429, 503
def test_long_polls_beyond_the_limit_get_429_with_retry_after() -> None:
    with serving(max_waiters=1) as s, s.client() as c:
        jid = c.post("/v1/jobs", json={"task": "tests.tasks:add", "args": [1, 1], "delay": 3600})
        jid = jid.json()["id"]
        held = threading.Thread(target=lambda: c.get(f"/v1/jobs/{jid}?wait=3"))
        held.start()
        wait_for(lambda: s.activity.active >= 1, "the first long-poll to be open")
        try:
            with s.client() as c2:

                def refused() -> bool:
                    r = c2.get(f"/v1/jobs/{jid}?wait=1")
                    return r.status_code == 429

                wait_for(refused, "the second long-poll to be refused")
                r = c2.get(f"/v1/jobs/{jid}/logs")
                if r.status_code == 429:
                    assert r.headers["retry-after"] == "1"
                    assert r.json()["code"] == "too-many-waiters"
        finally:
            held.join()


def test_an_unreachable_redis_is_503_with_retry_after() -> None:
    from balloons import App
    from balloons.service.api import create_app
    from tests.asgiserver import ServerThread
    from tests.ports import free_port

    dead = App(redis_url=f"redis://127.0.0.1:{free_port()}/0", secret="s" * 32)
    auth = {"authorization": "Bearer " + "t" * 20}
    with (
        ServerThread(create_app(dead, token="t" * 20)) as served,
        httpx.Client(base_url=served.url, headers=auth) as c,
    ):
        r = c.get("/v1/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh")
        problem(r, 503, "store-unavailable")
        assert r.headers["retry-after"] == "1"
        assert "s" * 32 not in r.text


def test_a_task_the_registry_holds_for_another_app_is_submitted_through_the_services(
    client: httpx.Client,
) -> None:
    from balloons import App, registry

    mine = registry.TASKS["tests.tasks:add"]
    other = App(redis_url="redis://127.0.0.1:1/0", secret="o" * 32)
    other.task(name="add")(tasks.add.fn)  # the same name, registered again by another app
    try:
        assert registry.TASKS["tests.tasks:add"].app is other
        resp = client.post(
            "/v1/jobs", json={"task": "tests.tasks:add", "args": [1, 1], "delay": 60}
        )
        assert resp.status_code == 201, resp.text
        assert [j.id for j in tasks.app.jobs(limit=5)] == [resp.json()["id"]]
        assert "tests.tasks:add" in {t["name"] for t in client.get("/v1/tasks").json()["tasks"]}
    finally:
        registry.TASKS["tests.tasks:add"] = mine
