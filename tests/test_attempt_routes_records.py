"""The attempt routes against records altered in Redis and bodies a machine should not send:
each answer is the documented problem, names what was wrong, and records nothing. The launch
is held: the test speaks the protocol as the machine would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

import balloons
from balloons.service import tokens
from balloons.store.keys import JobKeys
from tests import tasks
from tests.attemptserver import attempt_server
from tests.test_worker import HoldBackend

pytestmark = pytest.mark.machines
POOL = "held-proto"


class Attempt:
    """A held job of the protocol's pool, and its machine's URL and token."""

    def __init__(self, app: balloons.App, job: balloons.Job[Any], env: dict[str, str]) -> None:
        self.app, self.job = app, job
        self.url, self.token = env["BALLOONS_ATTEMPT_URL"], env["BALLOONS_ATTEMPT_TOKEN"]
        self.http = httpx.Client(timeout=30)
        self.key = JobKeys.of(app.settings.namespace, job.id).job

    def call(self, method: str, path: str = "", token: str | None = None, **kw: Any) -> Any:
        headers = {"authorization": f"Bearer {self.token if token is None else token}"}
        return self.http.request(method, self.url + path, headers=headers, **kw)


@pytest.fixture
def attempt() -> Iterator[Attempt]:
    backend = HoldBackend()
    app = balloons.App(backend=backend)
    app.pool(POOL, protocol="http", idle_timeout=0)
    with attempt_server(app) as server:
        app.service_url = server.url
        job = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
        held = Attempt(app, job.options(pool=POOL).submit(2, 3), dict(backend.specs[-1].env))
        try:
            yield held
        finally:
            held.http.close()
            app.close()


def _problem(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code, body
    return str(body["detail"])


def test_bad_progress_logs_and_outcomes_are_refused_naming_the_value(attempt: Attempt) -> None:
    got = attempt.call("GET").json()
    assert got["call"] == {"args": [2, 3], "kwargs": {}} and got["task"] == "tests.tasks:add"
    post = attempt.call
    says = _problem(post("POST", "/progress", json={"fraction": True}), 400, "invalid")
    assert "got True" in says
    says = _problem(post("POST", "/progress", json={"fraction": 0.5, "note": 7}), 400, "invalid")
    assert "note must be a string, got 7" in says
    rows = b'{"text": "fine"}\n\n{"text": "x", "source": "stdin"}\n'
    assert "line 3: expected" in _problem(post("POST", "/logs", content=rows), 400, "invalid")
    says = _problem(post("POST", "/logs", content=b"[1]\n"), 400, "invalid-json")
    assert says == "line 1: expected a JSON object"
    assert 'expected {"result"' in _problem(post("POST", "/complete", json={}), 400, "invalid")
    error = {"type": "E", "message": "m", "traceback": ""}
    says = _problem(post("POST", "/fail", json={"error": error, "reason": "bored"}), 400, "invalid")
    assert "reason must be one of" in says and "'bored'" in says
    says = _problem(post("POST", "/fail", json={"error": "E", "retryable": True}), 400, "invalid")
    assert 'expected {"error"' in says
    bad = {"type": "E", "message": ["m"]}
    says = _problem(post("POST", "/fail", json={"error": bad}), 400, "invalid")
    assert "error.message must be a string, got ['m']" in says
    # A body larger than the limit, sent without its length, is refused as it streams in.
    chunks = iter([b'{"fraction": 0.5, "note": "', b"x" * (1 << 20), b'"}'])
    _problem(post("POST", "/progress", content=chunks), 413, "payload-too-large")
    # Nothing of it was kept, and the attempt runs on.
    assert attempt.job.logs() == [] and attempt.job.progress() is None
    assert post("POST", "/heartbeat").json()["cancel"] is False
    assert post("POST", "/complete", json={"result": 5}).json() == {"state": "succeeded"}
    assert attempt.job.result(timeout=10) == 5
    # The attempt ended: its heartbeat and its calls are told so.
    says = _problem(post("POST", "/heartbeat"), 409, "job-finished")
    assert "succeeded" in says
    _problem(post("GET"), 409, "job-finished")
    _problem(post("POST", "/fail", json={"error": error}), 409, "job-finished")


def test_an_altered_record_is_refused_and_nothing_is_recorded(
    attempt: Attempt, r: redis.Redis
) -> None:
    assert attempt.call("GET").status_code == 200
    sig = r.hget(attempt.key, "sig")
    r.hset(attempt.key, "sig", b"0" * len(sig or b"x"))
    says = _problem(attempt.call("POST", "/complete", json={"result": 1}), 409, "record-invalid")
    assert "does not verify" in says
    r.hset(attempt.key, "sig", sig or b"")
    r.hset(attempt.key, "attempt", "2")  # moved on, as a retry would
    says = _problem(attempt.call("POST", "/heartbeat"), 409, "attempt-superseded")
    assert "attempt 1" in says
    r.hset(attempt.key, "attempt", "1x")
    _problem(attempt.call("POST", "/progress", json={"fraction": 1}), 409, "attempt-superseded")
    r.delete(attempt.key)
    _problem(attempt.call("POST", "/complete", json={"result": 1}), 404, "not-found")
    assert r.hget(attempt.key, "result") is None


def test_a_token_for_no_job_or_an_attempt_out_of_range_finds_nothing(attempt: Attempt) -> None:
    key, later = attempt.app.secret.encode(), time.time() + 60
    base = attempt.url.rsplit("/v1/attempts/", 1)[0] + "/v1/attempts"
    for job_id, n, code in (
        ("not-a-job", 1, "no such job"),
        (attempt.job.id, 0, "attempt 0 is out of range"),
        (attempt.job.id, 1_000_001, "attempt 1000001 is out of range"),
    ):
        token = tokens.mint(key, job_id, n, later)
        resp = attempt.http.get(
            f"{base}/{job_id}/{n}", headers={"authorization": f"Bearer {token}"}
        )
        assert code in _problem(resp, 404, "not-found")
        assert token not in resp.text
    resp = attempt.http.get(attempt.url, headers={"authorization": f"Basic {attempt.token}"})
    _problem(resp, 401, "token-invalid")
