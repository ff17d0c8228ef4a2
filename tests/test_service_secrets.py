"""No secret of the job service ever shows: not the bootstrap token, an API key, the app's
signing key, the service's or a job's webhook secret, nor an attempt token, in any log
record, answer, problem, repr or dashboard page, whatever a client sends; a real service
(uvicorn on 127.0.0.1), a real Valkey, a real machine and a receiver that is down."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.dashboard import create_app as dashboard_app
from balloons.service import callbacks, tokens
from balloons.service.attempts import attempt_routes
from balloons.service.webhooks import WebhookSecret
from tests import tasks
from tests.asgiserver import ServerThread
from tests.ports import free_port
from tests.servicehttp import serving
from tests.waiting import wait_for

SERVICE_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
JOB_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
DASHBOARD = "secrets-dashboard-token-" + "d" * 12
PASSWORD = os.urandom(12).hex()  # in a callback URL's user information


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the message with its traceback, if any


@pytest.fixture
def logged() -> Iterator[list[str]]:
    seen = _Records()
    loggers = [logging.getLogger(n) for n in ("", "balloons", "uvicorn", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(seen)
        lg.setLevel(logging.DEBUG)
    try:
        yield seen.lines
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(seen)
            lg.setLevel(level)


@pytest.mark.machines
def test_no_secret_shows_in_a_log_an_answer_or_a_page(logged: list[str]) -> None:
    shown: list[str] = []  # every answer's headers and body, every repr
    down = f"http://127.0.0.1:{free_port()}/hook"
    with (
        serving(
            webhook_secret=WebhookSecret(SERVICE_SECRET), attempt_routes=attempt_routes(tasks.app)
        ) as s,
        s.client() as c,
    ):
        key = s.key("probe", "jobs:write", "jobs:read")
        secrets = [s.token, key, tasks.app.secret, SERVICE_SECRET, JOB_SECRET]

        def keep(r: httpx.Response) -> httpx.Response:
            shown.append(f"{r.status_code} {dict(r.headers)} {r.text}")
            return r

        body = {"task": "tests.tasks:add", "args": [1, 2]}
        own = keep(
            c.post("/v1/jobs", json={**body, "callback": {"url": down, "secret": JOB_SECRET}})
        )
        plain = keep(c.post("/v1/jobs", json={**body, "callback": down}))
        for job in (own.json(), plain.json()):
            keep(c.get(f"/v1/jobs/{job['id']}?wait=30"))
        # Secrets sent where they do not belong: as a key, in a bad callback, twice in a body.
        near = JOB_SECRET[:-4] + "!!!!"
        for headers, payload in [
            ({"authorization": f"Bearer {SERVICE_SECRET}"}, body),
            ({"authorization": f"Basic {key}"}, body),
            ({}, {**body, "callback": {"url": down, "secret": near}}),
            ({}, {**body, "callback": {"url": f"ftp://u:{PASSWORD}@x/", "secret": JOB_SECRET}}),
            ({}, {**body, "callback": {"url": f"http://u:{PASSWORD}@x:99999/"}}),
            ({}, {**body, "callback": {"url": down, "secret": 5, "x": JOB_SECRET}}),
        ]:
            keep(c.post("/v1/jobs", json=payload, headers=headers))
        dup = b'{"task": "tests.tasks:add", "callback": {"url": "%s", "secret": "%s", "secret": 1}}'
        keep(c.post("/v1/jobs", content=dup % (down.encode(), JOB_SECRET.encode()),
                    headers={"content-type": "application/json"}))  # fmt: skip
        keep(c.get("/v1/jobs"))
        # The deliverer gives up on a receiver that is down, logging why.
        deliverer = callbacks.Deliverer(
            tasks.app, WebhookSecret(SERVICE_SECRET), base=0.01, cap=0.02, attempts=2, poll=0.05
        )

        def given_up() -> bool:
            deliverer.step()
            states = [keep(c.get(f"/v1/jobs/{j.json()['id']}")).json()["callback"]["state"]
                      for j in (own, plain)]  # fmt: skip
            return states == ["failed", "failed"]

        wait_for(given_up, "both callbacks to be given up")
        shown += [repr(deliverer), repr(s.served.server.config.app.state.activity)]
        # Attempt tokens: expired, for another attempt, for an attempt of a job that ended.
        job_id = own.json()["id"]
        for n, expires in ((1, time.time() - 5), (2, time.time() + 60), (1, time.time() + 60)):
            token = tokens.mint(tasks.app.secret.encode(), job_id, n, expires)
            secrets.append(token)
            for path in ("", "/complete"):
                auth = {"authorization": f"Bearer {token}"}
                keep(c.post(f"/v1/attempts/{job_id}/1{path}", json={"result": 1}, headers=auth))
        with (
            ServerThread(dashboard_app(tasks.app, token=DASHBOARD)) as board,
            httpx.Client(base_url=board.url, timeout=30) as b,
        ):
            b.post("/login", data={"token": DASHBOARD, "next": ""}, headers={"origin": board.url})
            for job in (own, plain):
                page = b.get(f"/jobs/{job.json()['id']}")
                assert page.status_code == 200, page.text
                shown.append(page.text)
    assert any("gave up" in line for line in logged), logged
    for secret in secrets:
        for where in (shown, logged):
            leaks = [text[:200] for text in where if secret in text]
            assert leaks == [], leaks
    # A near-miss of the job's secret, and a password in a URL, are refused unshown too.
    assert [t[:300] for t in shown + logged if near in t or PASSWORD in t] == []
