"""The worker protocol at its edges, spoken as a machine of another language would: a token
kept after its attempt was superseded, a token carried to another attempt's URL, results
that are not plain JSON text; attempt routes served by uvicorn on 127.0.0.1, real commands on
real local machines, a real Valkey."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import balloons
from balloons.service import tokens
from tests.asgiserver import ServerThread
from tests.attemptserver import attempt_server
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


@pytest.fixture
def server(app: balloons.App) -> Iterator[ServerThread]:
    with attempt_server(app) as s:
        yield s


def _call(url: str, token: str, method: str = "GET", path: str = "", **kw: Any) -> httpx.Response:
    with httpx.Client(timeout=30) as c:
        return c.request(method, url + path, headers={"authorization": f"Bearer {token}"}, **kw)


def _code(resp: httpx.Response) -> tuple[int, str]:
    assert resp.headers["content-type"] == "application/problem+json", resp.text
    return resp.status_code, resp.json()["code"]


def _attempt_files(tmp_path: Path) -> str:
    """A command that writes its attempt's URL and token to ``tmp_path/N`` (N its attempt),
    then exits 3 on its first attempt and waits on the others."""
    return (
        f'n="${{BALLOONS_ATTEMPT_URL##*/}}"; '
        f'printf "%s\\n%s\\n" "$BALLOONS_ATTEMPT_URL" "$BALLOONS_ATTEMPT_TOKEN" > {tmp_path}/$n.tmp; '
        f"mv {tmp_path}/$n.tmp {tmp_path}/$n; "
        f'if [ "$n" = 1 ]; then exit 3; fi; sleep 120'
    )


def _read(path: Path) -> tuple[str, str]:
    text = wait_for(lambda: path.exists() and path.read_text(), f"{path.name}'s URL and token")
    url, token = text.split()
    return url, token


def test_a_superseded_attempts_token_records_nothing_and_no_token_crosses_attempts(
    app: balloons.App, server: ServerThread, tmp_path: Path
) -> None:
    job = app.submit_command(
        ["sh", "-c", _attempt_files(tmp_path)], service_url=server.url, retries=1,
        retry_on_exit_codes=[3], timeout=60,
    )  # fmt: skip
    url1, token1 = _read(tmp_path / "1")
    url2, token2 = _read(tmp_path / "2")
    wait_for(lambda: job.info().attempt == 2 and job.info().status == "RUNNING", "attempt 2")
    assert url1 != url2 and url2.endswith("/2")
    # Attempt 1's token, on its own URL: every call is void, nothing of it is recorded.
    for method, path, body in [
        ("GET", "", None), ("POST", "/heartbeat", None),
        ("POST", "/progress", {"fraction": 0.5, "note": "late"}),
        ("POST", "/logs", None), ("POST", "/complete", {"result": "stale"}),
        ("POST", "/fail", {"error": {"type": "E", "message": "stale"}, "retryable": True}),
    ]:  # fmt: skip
        content = b'{"text": "stale line"}\n' if path == "/logs" else None
        got = _call(url1, token1, method, path, json=body, content=content)
        assert _code(got) == (409, "attempt-superseded"), (path, got.text)
        assert got.json()["job_id"] == job.id
    # Each token on the other's URL is out of its scope.
    assert _code(_call(url2, token1, "POST", "/complete", json={"result": "x"})) == (
        403, "token-scope",
    )  # fmt: skip
    assert _code(_call(url1, token2, "GET")) == (403, "token-scope")
    # Attempt 2 finishes the job; attempt 1's result never shows.
    assert _call(url2, token2, "POST", "/complete", json={"result": "fresh"}).status_code == 200
    assert job.result(timeout=30) == "fresh"
    info = job.info()
    assert [(a.number, a.outcome) for a in info.attempts] == [
        (1, "FAILED"), (2, "SUCCEEDED"),
    ]  # fmt: skip
    assert all("stale" not in (line.text or "") for line in job.logs())
    assert job.progress() is None
    # After the end, attempt 1's complete is still void, and attempt 2's repeat is the same.
    assert _code(_call(url1, token1, "POST", "/complete", json={"result": "x"}))[0] == 409
    again = _call(url2, token2, "POST", "/complete", json={"result": "other"})
    assert again.json() == {"state": "succeeded"} and job.result(timeout=5) == "fresh"


def test_a_result_that_is_not_plain_json_text_is_refused_and_the_attempt_goes_on(
    app: balloons.App, server: ServerThread, tmp_path: Path
) -> None:
    script = (
        f'printf "%s\\n%s\\n" "$BALLOONS_ATTEMPT_URL" "$BALLOONS_ATTEMPT_TOKEN" > {tmp_path}/a.tmp; '
        f"mv {tmp_path}/a.tmp {tmp_path}/1; sleep 120"
    )
    job = app.submit_command(["sh", "-c", script], service_url=server.url, timeout=60)
    url, token = _read(tmp_path / "1")
    assert _call(url, token).status_code == 200
    for body in (
        b'{"result": "\\ud800"}',
        b'{"result": {"a": ["\\udfff"]}}',
        b'{"result": 1e400}',
        b'{"result": -Infinity}',
    ):
        got = _call(url, token, "POST", "/complete", content=body)
        assert got.status_code == 400, (body, got.text)
        assert job.info().status == "RUNNING"
    # A surrogate pair is text; the result is what was sent.
    done = _call(url, token, "POST", "/complete", content=b'{"result": "\\ud83d\\ude00"}')
    assert done.status_code == 200, done.text
    assert job.result(timeout=30) == "\U0001f600"


def test_a_token_at_the_end_of_its_grace_is_refused_by_the_service(
    app: balloons.App, server: ServerThread
) -> None:
    job_id = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"
    url = tokens.attempt_url(server.url, job_id, 1)
    key = app.secret.encode()
    past = tokens.mint(key, job_id, 1, time.time() - 1)
    assert _code(_call(url, past, "POST", "/heartbeat")) == (401, "token-expired")
    # A valid token for a job with no record: nothing to find.
    live = tokens.mint(key, job_id, 1, time.time() + 60)
    assert _code(_call(url, live)) == (404, "not-found")
