"""Whatever Redis holds, the service answers a job resource or a problem, never a 500: job
records, their attempts, service and callback records, log entries, index entries and idempotency
records altered in every way, read through a real service."""

from __future__ import annotations

import json

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.store.keys import JobKeys
from tests import tasks
from tests.servicehttp import Service
from tests.servicehttp import service as service

JOB_ID = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"
JK = JobKeys.of(tasks.app.settings.namespace, JOB_ID)

VALUES: list[bytes] = [
    b"", b"x", b"NaN", b"inf", b"-1", b"1e400", b"\xff\xfe", b"{}", b"[]", b"null",
    b'{"type": 5}', b"SUCCEEDED", b"FAILED", b"QUEUED", b"9" * 80, b"exit_code=999999",
    b"exit_code=7", b'{"kind": "command", "labels": {"a": 5, "b": "x"}}', b'{"labels": []}',
    b"[" * 100_000 + b"]" * 100_000,  # nested beyond the JSON parser's recursion limit
]  # fmt: skip
FIELDS = [
    "status", "payload", "args", "sig", "attempt", "machine", "created", "started", "finished",
    "result", "rsig", "error", "esig", "reason", "due", "progress", "note", "compat", "ttl",
]  # fmt: skip


def _check(resp: httpx.Response) -> None:
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json", resp.text
        assert isinstance(resp.json()["code"], str)


def _read_all(c: httpx.Client, wait: bool = False, more: bool = False) -> None:
    got = c.get(f"/v1/jobs/{JOB_ID}")
    _check(got)
    if got.status_code == 200:
        body = got.json()
        assert body["id"] == JOB_ID and body["state"] in (
            "scheduled", "queued", "starting", "running", "succeeded", "failed", "cancelled",
        )  # fmt: skip
    if wait:
        _check(c.get(f"/v1/jobs/{JOB_ID}?wait=0.05"))
    _check(c.get("/v1/jobs"))
    if more:
        _check(c.get("/v1/jobs", params={"state": "failed", "label": "a"}))
        _check(c.get("/v1/pools"))


def test_every_reader_survives_any_job_record(service: Service) -> None:
    r = tasks.app.store.redis
    ns = tasks.app.settings.namespace
    r.sadd(f"{ns}:pools", "default")
    r.zadd(JK.pool.jobs, {JK.ulid: 1.0})
    with service.client() as c:
        for field in FIELDS:
            for value in VALUES:
                r.delete(JK.job)
                r.hset(JK.job, mapping={"status": "SUCCEEDED", "created": "1", field: value})
                _read_all(c, wait=field == "status")
        for value in VALUES:
            r.set(JK.meta, value)
            r.hset(JK.attempts, "1", value)
            _read_all(c, more=True)
        for field in ("spec", "sig", "state", "n", "d:1", "d:2x"):  # the callback record
            for value in VALUES:
                r.hset(JK.hook, field, value)
                _read_all(c)
        r.delete(JK.hook)
        # Keys of the wrong type where the service expects a hash, a string, a zset.
        r.delete(JK.job, JK.meta, JK.attempts)
        r.set(JK.job, "a string")
        for path in (f"/v1/jobs/{JOB_ID}", "/v1/jobs", f"/v1/jobs/{JOB_ID}/logs"):
            resp = c.get(path)
            _check(resp)
            assert resp.json()["code"] == "record-invalid"
        r.delete(JK.job)
        r.hset(JK.job, "status", "RUNNING")
        r.hset(JK.meta, "a", "b")
        _check(c.get(f"/v1/jobs/{JOB_ID}"))
        _check(c.get("/v1/jobs"))
        r.zadd(JK.pool.jobs, {"not-a-ulid": 2.0, JK.ulid: float("inf")})
        _check(c.get("/v1/jobs"))


def test_log_entries_altered_in_redis_stream_as_text(service: Service) -> None:
    r = tasks.app.store.redis
    r.hset(JK.job, mapping={"status": "SUCCEEDED", "created": "1"})
    r.xadd(JK.logs, {"t": "NaN", "a": "x", "s": "evil", "m": b"\xff line\nwith newline"})
    r.xadd(JK.logs, {"other": "field"})
    with service.client() as c, c.stream("GET", f"/v1/jobs/{JOB_ID}/logs") as resp:
        assert resp.status_code == 200
        data = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert data[0] == {
        "time": None,
        "attempt": None,
        "source": "?",
        "text": "\ufffd line\nwith newline",
    }
    assert data[1]["text"] == "" and data[-1] == {"state": "succeeded"}


def test_an_idempotency_record_altered_in_redis_is_a_problem(service: Service) -> None:
    r = tasks.app.store.redis
    body = {"task": "tests.tasks:add", "args": [1, 1], "delay": 3600}
    with service.client() as c:
        assert c.post("/v1/jobs", json=body, headers={"idempotency-key": "k"}).status_code == 201
        (key,) = r.keys("*:service:idem:*")
        deep = b"[" * 100_000 + b"]" * 100_000
        for value in (b"garbage", deep, b"[]", b'{"body": 5}', b'{"body": "x"}'):
            r.set(key, value)
            resp = c.post("/v1/jobs", json=body, headers={"idempotency-key": "k"})
            _check(resp)
            assert resp.status_code in (409, 422)
        good = json.loads(r.get(key) or b"{}")
        for job in ("../../etc", 5, "default.nope"):
            r.set(key, json.dumps({"body": good.get("body", ""), "job": job}))
            _check(c.post("/v1/jobs", json=body, headers={"idempotency-key": "k"}))
