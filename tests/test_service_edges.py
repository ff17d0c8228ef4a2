"""The job service from outside, as a hostile client would speak to it: raw bytes on a socket
and odd but well-formed HTTP against a real service (uvicorn on 127.0.0.1) and a real Valkey.
Every answer is a job or a problem, never a 500, and nothing is stored for a refused body."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.service import tokens
from balloons.store.keys import JobKeys
from tests import tasks
from tests.servicehttp import Service, problem
from tests.servicehttp import client as client
from tests.servicehttp import service as service
from tests.waiting import wait_for

JSON = {"content-type": "application/json"}
ADD = b'{"task": "tests.tasks:add", "args": [1, 2], "delay": 3600'


def _raw(url: str, request: bytes) -> bytes:
    """What the service answers to ``request`` sent as bytes on a fresh connection (read
    until it closes the connection or one whole answer is in)."""
    host, _, port = url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            length = [ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
            if sep and length and len(body) >= int(length[0].split(b":")[1]):
                break
    return out


# ------------------------------------------------------------------ request bodies
@pytest.mark.parametrize(
    ("body", "says"),
    [
        (ADD + b', "labels": {"a": "\\ud800"}}', "lone surrogate"),
        (ADD + b', "kwargs": {"\\udfff": 1}}', "lone surrogate"),
        (ADD + b', "delay": 60}', "'delay' twice"),
        (b'{"task": "tests.tasks:nope", "task": "tests.tasks:add", "args": [1, 2]}', "twice"),
        (ADD + b', "timeout": NaN}', "NaN"),
        (ADD + b', "timeout": -Infinity}', "Infinity"),
        (ADD + b', "timeout": 1e400}', "1e400"),
        ('{"task": "tests.tasks:add", "args": [1, 2]}'.encode("utf-16"), "not valid JSON"),
        (b"\xef\xbb\xbf" + ADD + b"}", "not valid JSON"),  # a UTF-8 byte order mark
        (ADD + b', "labels": {"a": "\xff"}}', "not valid JSON"),  # not UTF-8
        (ADD + b', "args": [' + b"9" * 5000 + b"]}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_a_body_that_is_not_plain_json_text_is_refused_and_stores_nothing(
    client: httpx.Client, body: bytes, says: str
) -> None:
    got = problem(client.post("/v1/jobs", content=body, headers=JSON), 400, "invalid-request")
    assert says in str(got["detail"])
    assert tasks.app.jobs(limit=5) == []


def test_escaped_text_that_is_unicode_is_accepted(client: httpx.Client) -> None:
    # A surrogate pair is one character; an escaped backslash before "ud800" is just text.
    body = ADD + b', "labels": {"a": "\\ud83d\\ude00", "b": "\\\\ud800"}}'
    got = client.post("/v1/jobs", content=body, headers=JSON)
    assert got.status_code == 201, got.text
    assert got.json()["labels"] == {"a": "\U0001f600", "b": "\\ud800"}


def test_a_body_declared_too_large_is_refused_unread(service: Service) -> None:
    auth = f"Authorization: Bearer {service.token}\r\n".encode()
    for length in (b"1048577", b"99999999999", b"9" * 5000):
        head = b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        # Only 10 bytes follow: an answer at all means the rest was never waited for.
        out = _raw(
            service.url, head + auth + b"Content-Length: " + length + b"\r\n\r\n" + b"x" * 10
        )
        status = out.split(b"\r\n", 1)[0]
        assert status in (b"HTTP/1.1 413 Request Entity Too Large", b"HTTP/1.1 400 Bad Request"), (
            out
        )
        if b"413" in status:
            assert b"body-too-large" in out
    assert tasks.app.jobs(limit=5) == []


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/jsonx", "", "multipart/form-data; boundary=x"]
)
def test_a_body_of_another_type_is_415(client: httpx.Client, ctype: str) -> None:
    resp = client.post("/v1/jobs", content=ADD + b"}", headers={"content-type": ctype})
    problem(resp, 415, "unsupported-media-type")


# ---------------------------------------------------------------- query strings
@pytest.mark.parametrize(
    "wait", ["-1", "nan", "NaN", "inf", "-inf", "1e9", "30.0001", "", "0x10", "9" * 400]
)
def test_a_wait_out_of_range_is_400(client: httpx.Client, wait: str) -> None:
    job = client.post("/v1/jobs", content=ADD + b"}", headers=JSON).json()
    got = problem(client.get(f"/v1/jobs/{job['id']}", params={"wait": wait}), 400,
                   "invalid-request")  # fmt: skip
    assert "wait must be a number of seconds from 0 to 30" in str(got["detail"])


@pytest.mark.parametrize(
    "cursor", ["x", "a" * 5000, "\x00", "%ff", "eyJ4IjoxfQ", "!!!", "\u202e", "\ud7ff"]
)
def test_a_cursor_the_service_never_gave_is_400(client: httpx.Client, cursor: str) -> None:
    problem(client.get("/v1/jobs", params={"cursor": cursor}), 400, "invalid-cursor")


@pytest.mark.parametrize("limit", ["0", "-1", "1e2", "100000", "\u0663", " 5", "0x10"])
def test_a_limit_out_of_range_is_400(client: httpx.Client, limit: str) -> None:
    problem(client.get("/v1/jobs", params={"limit": limit}), 400, "invalid-request")


def test_headers_answered_carry_nothing_a_request_sent(client: httpx.Client) -> None:
    # A pool name is checked before it can reach an id, hence Location; Retry-After is a number.
    bad = client.post("/v1/jobs", content=ADD + b', "pool": "a\\r\\nX-Evil: 1"}', headers=JSON)
    problem(bad, 400, "invalid-request")
    assert "x-evil" not in bad.headers
    made = client.post("/v1/jobs", content=ADD + b', "pool": "default"}', headers=JSON)
    assert made.headers["location"] == f"/v1/jobs/{made.json()['id']}"
    weird = client.get("/v1/jobs/%0d%0aX-Evil:%201")
    problem(weird, 404, "job-not-found")
    assert "x-evil" not in weird.headers and "\r" not in weird.text


def test_bytes_that_are_not_utf_8_in_the_path_and_headers_are_answered(service: Service) -> None:
    token = service.token.encode()
    for request in (
        b"GET /v1/jobs/\xff\xfe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token,
        b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe",
        b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nIdempotency-Key: \xff\r\nAuthorization: Bearer "
        + token,
    ):
        out = _raw(service.url, request + b"\r\nConnection: close\r\n\r\n")
        status = int(out.split(b" ", 2)[1])
        assert status < 500, out


# ------------------------------------------------------- what Redis holds, rendered
def test_strings_with_no_utf_8_form_in_redis_never_make_a_500(client: httpx.Client) -> None:
    # A submit whose label, then its result, is altered in Redis to a lone surrogate: the job
    # is still read, listed and streamed (the character shown as "?").
    job = client.post("/v1/jobs", content=ADD + b', "labels": {"a": "b"}}', headers=JSON).json()
    jk = JobKeys.of(tasks.app.settings.namespace, job["id"])
    r = tasks.app.store.redis
    r.set(jk.meta, b'{"kind": "task", "labels": {"a": "\\ud800"}}')
    got = client.get(f"/v1/jobs/{job['id']}")
    assert got.status_code == 200, got.text
    assert got.json()["labels"] == {"a": "?"}
    listed = client.get("/v1/jobs")
    assert listed.status_code == 200, listed.text
    assert listed.json()["jobs"][0]["labels"] == {"a": "?"}
    r.hset(jk.job, mapping={"status": "FAILED", "error": b'{"type": "\\udfff", "message": 1}'})
    failed = client.get(f"/v1/jobs/{job['id']}")
    assert failed.status_code == 200, failed.text
    # A problem whose detail holds such a character renders too.
    unknown = b'{"task": "tests.tasks:add", "args": [1], "kwargs": {"\\ud800": 1}}'
    assert client.post("/v1/jobs", content=unknown, headers=JSON).status_code == 400


# -------------------------------------------------------------------------- tokens
def test_a_token_lives_to_its_deadline_plus_grace_and_not_a_moment_more() -> None:
    key, job_id = b"k" * 32, "default.01jd3x9k2m8vq4t7w0c5r6y1zh"
    deadline = 1_800_000_000.9  # a deadline inside a second, as a job's start plus timeout is
    end = deadline + tokens.GRACE
    tok = tokens.mint(key, job_id, 3, end)
    # A call in the last part of the grace is accepted...
    assert tokens.check(key, tok, job_id, 3, end - 0.05) >= end
    # ...and none once the grace has passed (rounded up to the second, at most).
    for late in (end + 1, end + 1e6):
        with pytest.raises(tokens.TokenError) as err:
            tokens.check(key, tok, job_id, 3, late)
        assert err.value.code == "token-expired"
    whole = tokens.mint(key, job_id, 3, 1_800_000_060.0)
    assert tokens.check(key, whole, job_id, 3, 1_800_000_059.999) == 1_800_000_060.0
    with pytest.raises(tokens.TokenError) as err:
        tokens.check(key, whole, job_id, 3, 1_800_000_060.0)  # expiring at: not valid then
    assert err.value.code == "token-expired"


def test_a_tampered_token_never_verifies_and_never_shows() -> None:
    key, job_id = b"k" * 32, "default.01jd3x9k2m8vq4t7w0c5r6y1zh"
    tok = tokens.mint(key, job_id, 1, 1_800_000_000)
    prefix, body, tag = tok.split(".")
    other = tokens.mint(key, job_id, 2, 1_900_000_000).split(".")[1]
    for bad in (
        f"{prefix}.{other}.{tag}",  # another attempt's body under this tag
        f"{prefix}.{body}.{tag[:-1]}",
        f"{prefix}.{body}.{tag}=",
        f"bat2.{body}.{tag}",
        f"{prefix}.{body}.{tag}.x",
        f"{prefix}.{body}.{'é' * len(tag)}",
        tok + "x" * 400,
        "",
    ):
        with pytest.raises(tokens.TokenError) as err:
            tokens.check(key, bad, job_id, 1, 1_700_000_000)
        assert err.value.code == "token-invalid", bad
        assert tag not in str(err.value) and tag not in repr(err.value)
    assert json.dumps(tokens.check(key, tok, job_id, 1, 1_700_000_000))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_that_hangs_up_mid_body_is_no_error_of_the_service(service: Service) -> None:
    # A busy world's clients go away mid-upload; that is theirs, not a fault to log with a
    # traceback at each one (a log flood anyone could cause).
    seen = _Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(seen)
    try:
        host, _, port = service.url.removeprefix("http://").partition(":")
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(
                    b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Authorization: Bearer {service.token}\r\n".encode()
                    + b"Content-Length: 1000\r\n\r\n"
                    + ADD
                )
                wait_for(lambda: service.activity.active == 1, "the request to be read")
        wait_for(lambda: service.activity.active == 0, "the request to end")
    finally:
        logger.removeHandler(seen)
    assert [r.getMessage() for r in seen.records if r.levelno >= logging.WARNING] == []
    assert tasks.app.jobs(limit=5) == []


def test_a_quiet_log_stream_is_pinged(
    service: Service, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from balloons.service import api

    monkeypatch.setattr(api, "PING", 0.1)  # the 15 s of the docs, made short
    job = client.post("/v1/jobs", content=ADD + b"}", headers=JSON).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/logs") as resp:
        lines = resp.iter_lines()
        assert next(lines) == ": stream open"
        pings = 0
        for line in lines:
            assert line in (": ping", ""), line  # nothing but pings on a quiet stream
            pings += line == ": ping"
            if pings == 2:
                break
    wait_for(lambda: service.activity.active == 0, "the stream to close with its client")


@pytest.mark.slow
def test_the_module_entry_point_refuses_an_idle_exit_out_of_range() -> None:
    import subprocess
    import sys

    from tests.ports import free_port

    for raw in ("-1", "nan", "inf", "1e9", "soon"):
        got = subprocess.run(
            [sys.executable, "-m", "balloons.service", "--port", str(free_port()),
             "--idle-exit", raw],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert got.returncode == 2, (raw, got.returncode, got.stderr[-500:])
        assert "--idle-exit" in got.stderr and "expected seconds from 0" in got.stderr
