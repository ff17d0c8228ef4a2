"""The HTTP worker protocol: attempt routes served by uvicorn, driven against real jobs.

A command job on a local machine gets its attempt's URL and token; these tests read them
from a file the command writes, then speak the protocol as a machine would, including every
violation the protocol documents."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import balloons
from balloons.errors import JobFailed
from balloons.service import tokens
from balloons.service.attempts import MAX_LOG_BATCH
from tests.asgiserver import ServerThread
from tests.attemptserver import attempt_server
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


@pytest.fixture
def server(app: balloons.App) -> Iterator[ServerThread]:
    with attempt_server(app) as s:
        yield s


class Machine:
    """What a protocol machine holds: its attempt URL and token (read from the command)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.http = httpx.Client(timeout=30)

    def call(
        self, method: str, path: str = "", token: str | None = None, **kw: Any
    ) -> httpx.Response:
        tok = token if token is not None else self.token
        headers = {"authorization": f"Bearer {tok}"} if tok else {}
        headers.update(kw.pop("headers", {}))
        return self.http.request(method, self.url + path, headers=headers, **kw)


def _start(
    app: balloons.App, server: ServerThread, tmp_path: Path, **kw: Any
) -> tuple[balloons.Job[Any], Machine]:
    """A running command job that writes its attempt URL and token, then waits for its end."""
    out = tmp_path / f"attempt-{time.monotonic_ns()}"
    script = (
        f'printf "%s\\n%s\\n" "$BALLOONS_ATTEMPT_URL" "$BALLOONS_ATTEMPT_TOKEN" > {out}.tmp; '
        f"mv {out}.tmp {out}; sleep 120"
    )
    job = app.submit_command(
        ["sh", "-c", script], service_url=server.url, input={"x": 1}, timeout=60, **kw
    )
    text = wait_for(lambda: out.exists() and out.read_text(), "the command's attempt URL")
    url, token = text.split()
    out.unlink()
    return job, Machine(url, token)


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    return body


def test_a_machine_runs_its_attempt_over_http(
    app: balloons.App, server: ServerThread, tmp_path: Path
) -> None:
    job, m = _start(app, server, tmp_path)
    assert m.url == f"{server.url}/v1/attempts/{job.id}/1"
    got = m.call("GET").json()
    assert got["protocol"] == 1 and got["attempt"] == 1 and got["input"] == {"x": 1}
    assert got["command"]["cmd"][0] == "sh"
    assert got["deadline"] > time.time()
    beat = m.call("POST", "/heartbeat").json()
    assert beat == {"cancel": False, "deadline": got["deadline"]}
    assert m.call("POST", "/progress", json={"fraction": 0.5, "note": "half"}).status_code == 200
    batch = b'{"text": "one"}\n{"text": "two", "source": "err"}\n'
    assert m.call("POST", "/logs", content=batch).json() == {"stored": 2}
    done = m.call("POST", "/complete", json={"result": {"answer": 42}})
    assert done.json() == {"state": "succeeded"}
    assert job.result(timeout=30) == {"answer": 42}
    assert job.progress() == (0.5, "half")
    assert [(ln.source, ln.text) for ln in job.logs()][:2] == [("out", "one"), ("err", "two")]
    # complete is idempotent: a repeat answers as the first did and changes nothing
    again = m.call("POST", "/complete", json={"result": "other"})
    assert again.json() == {"state": "succeeded"}
    assert job.result(timeout=1) == {"answer": 42}


def test_a_failure_is_recorded_and_retried_when_retryable(
    app: balloons.App, server: ServerThread, tmp_path: Path
) -> None:
    job, m = _start(app, server, tmp_path, retries=1, retry_backoff=0)
    error = {"type": "IOError", "message": "disk full", "traceback": "at line 3"}
    resp = m.call("POST", "/fail", json={"error": error, "retryable": True})
    assert resp.json() == {"state": "retrying"}
    # the retried attempt runs (its own URL and token); attempt 1 is superseded
    _problem(m.call("POST", "/complete", json={"result": 1}), 409, "attempt-superseded")
    _problem(m.call("POST", "/heartbeat"), 409, "attempt-superseded")
    wait_for(lambda: job.info().attempt == 2 and job.info().status == "RUNNING")
    m2 = Machine(m.url[: -len("/1")] + "/2", tokens.mint(app.secret.encode(), job.id, 2,
                                                          time.time() + 60))  # fmt: skip
    resp = m2.call("POST", "/fail", json={"error": error, "retryable": True})
    assert resp.json() == {"state": "failed"}  # no retry left
    with pytest.raises(JobFailed) as err:
        job.result(timeout=30)
    assert err.value.reason == "task_error"
    assert err.value.error_type == "IOError" and err.value.error_message == "disk full"
    assert job.info().attempts[0].message == "disk full"


def test_protocol_violations_get_their_documented_errors(
    app: balloons.App, server: ServerThread, tmp_path: Path
) -> None:
    job, m = _start(app, server, tmp_path)
    key = app.secret.encode()
    # no token, a wrong token, one signed with another key
    _problem(m.call("GET", token=""), 401, "token-invalid")
    _problem(m.call("GET", token="bat1.x.y"), 401, "token-invalid")
    other = tokens.mint(b"k" * 32, job.id, 1, time.time() + 60)
    _problem(m.call("GET", token=other), 401, "token-invalid")
    # an expired token; another attempt's token; another job's token
    expired = tokens.mint(key, job.id, 1, time.time() - 1)
    _problem(m.call("POST", "/complete", token=expired, json={"result": 1}), 401, "token-expired")
    second = tokens.mint(key, job.id, 2, time.time() + 60)
    _problem(m.call("POST", "/complete", token=second, json={"result": 1}), 403, "token-scope")
    # malformed JSON, a body of the wrong shape, NaN
    _problem(m.call("POST", "/complete", content=b"{not json"), 400, "invalid-json")
    _problem(m.call("POST", "/complete", content=b"[1]"), 400, "invalid-json")
    _problem(m.call("POST", "/progress", content=b'{"fraction": NaN}'), 400, "invalid-json")
    _problem(m.call("POST", "/progress", json={"fraction": 2}), 400, "invalid")
    _problem(m.call("POST", "/logs", content=b'{"text": "ok"}\n{"text": '), 400, "invalid-json")
    # a huge log batch is refused whole
    huge = b'{"text": "x"}\n' * (MAX_LOG_BATCH // 14 + 1)
    _problem(m.call("POST", "/logs", content=huge), 413, "payload-too-large")
    many = b'{"text": "x"}\n' * 1001
    _problem(m.call("POST", "/logs", content=many), 413, "too-many-lines")
    assert job.logs() == []
    info = job.info()
    assert info.status == "RUNNING" and info.attempt == 1
    # complete after cancel: refused, nothing recorded
    assert app.cancel(job.id)
    beat = m.call("POST", "/heartbeat").json()
    assert beat["cancel"] is True
    body = _problem(m.call("POST", "/complete", json={"result": 1}), 409, "job-finished")
    assert body["job_id"] == job.id and body["state"] == "cancelled"
    with pytest.raises(JobFailed) as err:
        job.result(timeout=30)
    assert err.value.status == "CANCELLED"
    rec = app.store.redis.hgetall(f"{app.settings.namespace}:{{{job.id.split('.')[0]}}}:job:"
                                  f"{job.id.split('.')[1]}")  # fmt: skip
    assert b"result" not in rec
    for problem in (m.call("GET", token=t) for t in ("", other, expired)):
        assert m.token not in problem.text and key.decode() not in problem.text


def test_a_token_never_verifies_for_another_job(app: balloons.App) -> None:
    key = app.secret.encode()
    tok = tokens.mint(key, "default.01J0000000000000000000000A", 1, time.time() + 60)
    with pytest.raises(tokens.TokenError) as err:
        tokens.check(key, tok, "default.01J0000000000000000000000B", 1, time.time())
    assert err.value.code == "token-scope"
    tampered = tok[:-2] + ("AA" if not tok.endswith("AA") else "BB")
    with pytest.raises(tokens.TokenError) as err:
        tokens.check(key, tampered, "default.01J0000000000000000000000A", 1, time.time())
    assert err.value.code == "token-invalid"
    assert json.dumps(tokens.check(key, tok, "default.01J0000000000000000000000A", 1, 0.0))


def test_an_outcome_reported_over_http_stands_whatever_the_exit(
    app: balloons.App, server: ServerThread
) -> None:
    # The command completes, then exits 3 (listed for retry): the first outcome wins, once.
    script = (
        'curl -sS -X POST -H "Authorization: Bearer $BALLOONS_ATTEMPT_TOKEN" '
        '-H "Content-Type: application/json" --data \'{"result": "done"}\' '
        '"$BALLOONS_ATTEMPT_URL/complete" >/dev/null && exit 3'
    )
    job = app.submit_command(
        ["sh", "-c", script], service_url=server.url, retries=2, retry_on_exit_codes=[3],
        timeout=60,
    )  # fmt: skip
    assert job.result(timeout=30) == "done"
    # the machine's worker is past the command's exit (its own verdict refused by then)
    wait_for(lambda: app.store.pool_stats("default")["running"] == 0, "the machine to move on")
    info = job.info()
    assert [(a.outcome, a.reason) for a in info.attempts] == [("SUCCEEDED", None)]
