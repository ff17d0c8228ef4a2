"""Job callbacks end to end: a real service (uvicorn on 127.0.0.1), a real Valkey, real local
machines and a real webhook receiver on 127.0.0.1. Every signature is checked here with code
of the test's own (HMAC-SHA256 of "ID.TIMESTAMP.BODY" under the secret's decoded bytes)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.service import callbacks, server
from balloons.service.webhooks import WebhookSecret
from balloons.store import lua
from balloons.store.keys import JobKeys
from tests import tasks
from tests.servicehttp import TOKEN, Service, serving
from tests.waiting import wait_for
from tests.webhookreceiver import Received, Receiver

SERVICE_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
STARTED = time.time()
JOB_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def fast(**kw: object) -> callbacks.Deliverer:
    """A deliverer of the tests' app that retries within a fraction of a second."""
    options: dict[str, object] = {"base": 0.05, "cap": 0.2, "timeout": 5.0, "poll": 0.05}
    options.update(kw)
    return callbacks.Deliverer(tasks.app, WebhookSecret(SERVICE_SECRET), **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with serving(webhook_secret=WebhookSecret(SERVICE_SECRET)) as s:
        yield s


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with service.client() as c:
        yield c


@pytest.fixture
def deliverer() -> Iterator[callbacks.Deliverer]:
    d = fast().start()
    try:
        yield d
    finally:
        d.stop()


def verified(got: Received, secret: str) -> dict[str, object]:
    """The event of a delivery whose signature verifies with ``secret`` (an independent
    implementation of the Standard Webhooks check)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, ts = got.headers["webhook-id"], got.headers["webhook-timestamp"]
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + got.body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    assert any(
        hmac.compare_digest(expected, s) for s in got.headers["webhook-signature"].split()
    ), "the signature does not verify"
    assert int(STARTED) <= int(ts) <= got.at  # sent now, in Unix seconds
    assert got.headers["content-type"] == "application/cloudevents+json"
    event = json.loads(got.body)
    assert event["id"] == msg_id
    return event  # type: ignore[no-any-return]


def submit(client: httpx.Client, body: dict[str, object]) -> str:
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["callback"]["state"] == "pending" and job["callback"]["deliveries"] == []
    return job["id"]  # type: ignore[no-any-return]


def settled(client: httpx.Client, job_id: str) -> dict[str, object]:
    """The job once its callback's deliveries are over."""

    def over() -> dict[str, object] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["callback"]["state"] != "pending" else None

    return wait_for(over, f"the callback of {job_id} to settle")


# ------------------------------------------------------------------------ delivery
@pytest.mark.machines
def test_a_job_end_is_delivered_once_signed_as_a_cloudevent(
    client: httpx.Client, receiver: Receiver, deliverer: callbacks.Deliverer
) -> None:
    url = receiver.url("/ok")
    job_id = submit(client, {"task": "tests.tasks:add", "args": [2, 3], "callback": url})
    job = settled(client, job_id)
    assert job["state"] == "succeeded"
    (got,) = receiver.got("/ok")
    event = verified(got, SERVICE_SECRET)
    assert event["specversion"] == "1.0" and event["type"] == "dev.balloons.job.succeeded"
    assert event["subject"] == job_id and event["datacontenttype"] == "application/json"
    assert event["source"] == f"/balloons/{tasks.app.settings.namespace}"
    assert event["time"] == job["ended_at"] and got.headers["webhook-id"] == event["id"]
    data = event["data"]
    assert isinstance(data, dict) and data["result"] == 5 and data["callback"] == {"url": url}
    assert {k: v for k, v in data.items() if k != "callback"} == {
        k: v for k, v in job.items() if k != "callback"
    }
    cb = job["callback"]
    assert isinstance(cb, dict) and cb["state"] == "delivered" and cb["attempts"] == 1
    (d,) = cb["deliveries"]
    assert d["attempt"] == 1 and d["status"] == 200 and d["error"] is None
    assert d["at"].endswith("Z") and d["duration_ms"] >= 0
    # Nothing more is sent, however often the outboxes are looked at.
    assert deliverer.step() == 0 and len(receiver.got("/ok")) == 1


@pytest.mark.machines
def test_a_jobs_own_secret_signs_its_event_and_a_failure_is_an_event_too(
    client: httpx.Client, receiver: Receiver, deliverer: callbacks.Deliverer
) -> None:
    body = {
        "task": "tests.tasks:fail",
        "args": ["no luck"],
        "callback": {"url": receiver.url("/own"), "secret": JOB_SECRET},
    }
    job = settled(client, submit(client, body))
    assert job["state"] == "failed" and job["callback"]["state"] == "delivered"  # type: ignore[index]
    (got,) = receiver.got("/own")
    event = verified(got, JOB_SECRET)
    assert event["type"] == "dev.balloons.job.failed"
    assert event["data"]["error"]["message"] == "no luck"  # type: ignore[index]
    with pytest.raises(AssertionError, match="does not verify"):
        verified(got, SERVICE_SECRET)
    # The secret is nowhere in what the service shows, nor in clear in Redis.
    raw = client.get(f"/v1/jobs/{job['id']}").text
    assert JOB_SECRET not in raw and JOB_SECRET[6:] not in raw
    jk = JobKeys.of(tasks.app.settings.namespace, str(job["id"]))
    stored = b"".join(tasks.app.store.redis.hgetall(jk.hook).values())
    assert b"sealed" in stored and JOB_SECRET[6:].encode() not in stored


@pytest.mark.machines
def test_a_receiver_failing_twice_gets_the_same_event_a_third_time(
    client: httpx.Client, receiver: Receiver, deliverer: callbacks.Deliverer
) -> None:
    receiver.answer("/flaky", 500, 503)
    job = settled(
        client,
        submit(
            client, {"task": "tests.tasks:add", "args": [1, 1], "callback": receiver.url("/flaky")}
        ),
    )
    cb = job["callback"]
    assert isinstance(cb, dict) and cb["state"] == "delivered" and cb["attempts"] == 3
    assert [(d["attempt"], d["status"]) for d in cb["deliveries"]] == [(1, 500), (2, 503), (3, 200)]
    got = receiver.got("/flaky")
    assert len(got) == 3
    events = [verified(g, SERVICE_SECRET) for g in got]
    assert len({g.headers["webhook-id"] for g in got}) == 1  # receivers deduplicate on it
    assert all(e == events[0] for e in events)


@pytest.mark.machines
def test_a_receiver_down_for_good_is_given_up_after_the_limit(client: httpx.Client) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = fast(attempts=3).start()
    try:
        body = {"task": "tests.tasks:add", "args": [1, 2], "callback": f"http://127.0.0.1:{port}/x"}
        job = settled(client, submit(client, body))
    finally:
        d.stop()
    cb = job["callback"]
    assert isinstance(cb, dict) and cb["state"] == "failed" and cb["attempts"] == 3
    assert [x["attempt"] for x in cb["deliveries"]] == [1, 2, 3]
    assert all(x["status"] is None and "Connection" in x["error"] for x in cb["deliveries"])
    assert fast().step() == 0  # nothing left to send


@pytest.mark.machines
def test_410_gone_stops_the_deliveries(
    client: httpx.Client, receiver: Receiver, deliverer: callbacks.Deliverer
) -> None:
    receiver.answer("/gone", 410)
    job = settled(
        client,
        submit(
            client, {"task": "tests.tasks:add", "args": [1, 4], "callback": receiver.url("/gone")}
        ),
    )
    cb = job["callback"]
    assert isinstance(cb, dict) and cb["state"] == "gone" and cb["attempts"] == 1
    assert cb["deliveries"][0]["status"] == 410 and len(receiver.got("/gone")) == 1


@pytest.mark.machines
def test_a_cancelled_job_sends_a_cancelled_event(
    client: httpx.Client, receiver: Receiver, deliverer: callbacks.Deliverer
) -> None:
    job_id = submit(
        client, {"task": "tests.tasks:sleep", "args": [30], "callback": receiver.url("/cancel")}
    )
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["state"] == "running")
    assert receiver.got("/cancel") == []  # nothing is sent before the end
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = settled(client, job_id)
    (got,) = receiver.got("/cancel")
    event = verified(got, SERVICE_SECRET)
    assert event["type"] == "dev.balloons.job.cancelled" and job["state"] == "cancelled"
    assert event["data"]["state"] == "cancelled"  # type: ignore[index]


# ------------------------------------------------------------------ durability
@pytest.mark.machines
def test_a_service_restarted_after_the_end_delivers_it_once(receiver: Receiver) -> None:
    """The job ends while no service runs; the next service start delivers its event once
    (and, started with --idle-exit, does not exit before it has)."""
    secret = WebhookSecret(SERVICE_SECRET)
    with serving(webhook_secret=secret) as first, first.client() as c:
        body = {"task": "tests.tasks:sleep", "args": [0.5], "callback": receiver.url("/restart")}
        job_id = submit(c, body)
    # The first service is gone (it never delivered: no deliverer ran in it).
    assert tasks.app.job(job_id).result(timeout=30) == 0.5
    assert receiver.got("/restart") == []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(
        target=server.serve,
        args=(tasks.app, "127.0.0.1", 0),
        kwargs={
            "token": TOKEN,
            "idle_exit": 0.2,
            "supervise": False,
            "sockets": [sock],
            "webhook_secret": SERVICE_SECRET,
        },
        daemon=True,
    )
    thread.start()
    thread.join(60)  # it exits once idle with nothing due
    sock.close()
    assert not thread.is_alive()
    (got,) = receiver.got("/restart")
    assert verified(got, SERVICE_SECRET)["subject"] == job_id
    assert fast().step() == 0 and len(receiver.got("/restart")) == 1


@pytest.mark.machines
def test_an_attempt_whose_service_died_is_made_again_when_its_lease_ends(
    client: httpx.Client, receiver: Receiver
) -> None:
    job_id = submit(
        client, {"task": "tests.tasks:add", "args": [3, 3], "callback": receiver.url("/lease")}
    )
    tasks.app.job(job_id).result(timeout=30)
    jk = JobKeys.of(tasks.app.settings.namespace, job_id)
    # A service takes the delivery, then dies before it sends or records anything.
    claim = tasks.app.store.eval(lua.HOOK_CLAIM, jk.pool, jk.ulid, 0.3, jobs=(jk.ulid,))
    assert claim[0] == 1 and claim[1] == 1
    d = fast()
    assert d.step() == 0  # its lease holds the entry
    wait_for(lambda: d.step() == 1, "the lease to end and the delivery to be made")
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["callback"]["state"] == "delivered" and job["callback"]["attempts"] == 2
    assert [x["attempt"] for x in job["callback"]["deliveries"]] == [2]
    (got,) = receiver.got("/lease")
    verified(got, SERVICE_SECRET)


@pytest.mark.machines
def test_a_callback_registered_after_its_job_ended_is_due_at_once(receiver: Receiver) -> None:
    import asyncio

    job = tasks.add.submit(4, 4)
    assert job.result(timeout=30) == 8
    cb = callbacks.webhooks.parse(receiver.url("/late"))
    assert cb is not None
    asyncio.run(callbacks.register(tasks.app, job.id, cb))
    assert fast().step() == 1
    (got,) = receiver.got("/late")
    assert verified(got, SERVICE_SECRET)["data"]["result"] == 8  # type: ignore[index]


# -------------------------------------------------------------------- idle exit
@pytest.mark.machines
def test_the_idle_exit_waits_for_a_callbacks_job_and_its_due_delivery(
    client: httpx.Client, receiver: Receiver
) -> None:
    receiver.answer("/idle", 500)
    job_id = submit(
        client, {"task": "tests.tasks:sleep", "args": [1], "callback": receiver.url("/idle")}
    )
    # While its job runs, a callback keeps the service up (its end would have no one to send it).
    assert callbacks.busy(tasks.app, 0.5)
    assert tasks.app.job(job_id).result(timeout=30) == 1
    assert callbacks.busy(tasks.app, 0.5)  # due now
    slow = fast(base=100.0, cap=100.0)
    wait_for(lambda: slow.step() == 1, "the first attempt")
    # The next attempt is 50-100 s away: not within a 1 s horizon, within a 200 s one.
    assert not callbacks.busy(tasks.app, 1.0)
    assert callbacks.busy(tasks.app, 200.0)
    jk = JobKeys.of(tasks.app.settings.namespace, job_id)
    tasks.app.store.redis.zrem(jk.pool.outbox, jk.ulid)
    assert not callbacks.busy(tasks.app, 200.0)


# ------------------------------------------------------------------ the request
def test_a_callback_without_a_secret_to_sign_it_is_refused() -> None:
    with serving() as bare, bare.client() as c:  # a service with no BALLOONS_WEBHOOK_SECRET
        resp = c.post("/v1/jobs", json={"task": "tests.tasks:add", "callback": "http://x.test/"})
        assert resp.status_code == 422 and resp.json()["code"] == "callback-secret-required"
        assert "BALLOONS_WEBHOOK_SECRET" in resp.json()["detail"]
        before = tasks.app.store.redis.zcard(
            JobKeys.of(tasks.app.settings.namespace, "default." + "0" * 26).pool.jobs
        )
        # With a secret of its own it is taken.
        body = {
            "task": "tests.tasks:add",
            "args": [1, 2],
            "callback": {"url": "http://x.test/", "secret": JOB_SECRET},
        }
        resp = c.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        assert resp.json()["callback"] == {
            "url": "http://x.test/",
            "state": "pending",
            "attempts": 0,
            "deliveries": [],
        }
        assert JOB_SECRET[6:] not in resp.text
        assert (
            tasks.app.store.redis.zcard(
                JobKeys.of(tasks.app.settings.namespace, "default." + "0" * 26).pool.jobs
            )
            == before + 1
        )


@pytest.mark.parametrize(
    ("callback", "says"),
    [
        ("ftp://x.test/", "'ftp://x.test/'"),
        ({"url": "https://u:p@x.test/"}, "credentials"),
        ({"url": "https://x.test/", "secret": "hunter2"}, "callback.secret"),
        (12, "got 12"),
    ],
)
def test_a_bad_callback_is_a_400_naming_it(
    client: httpx.Client, callback: object, says: str
) -> None:
    resp = client.post("/v1/jobs", json={"task": "tests.tasks:add", "callback": callback})
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "invalid-request" and says in resp.json()["detail"]
    assert "hunter2" not in resp.text


# -------------------------------------------------------------------- hostile
@pytest.mark.machines
def test_an_altered_callback_record_is_never_sent(client: httpx.Client, receiver: Receiver) -> None:
    job_id = submit(
        client, {"task": "tests.tasks:add", "args": [5, 5], "callback": receiver.url("/altered")}
    )
    tasks.app.job(job_id).result(timeout=30)
    jk = JobKeys.of(tasks.app.settings.namespace, job_id)
    r = tasks.app.store.redis
    spec = r.hget(jk.hook, "spec")
    r.hset(jk.hook, "spec", spec.replace(b"/altered", b"/elsewhere"))  # a Redis writer
    assert fast().step() == 1
    job = client.get(f"/v1/jobs/{job_id}").json()
    cb = job["callback"]
    assert cb["state"] == "invalid" and cb["url"] is None
    assert "does not verify" in cb["deliveries"][0]["error"]
    assert receiver.got("/altered") == [] and receiver.got("/elsewhere") == []
    for value in (b"\xff", b"1e300", b"[1]", b"x" * 5000):
        for field in ("spec", "sig", "state", "n", "d:1"):
            r.hset(jk.hook, field, value)
            resp = client.get(f"/v1/jobs/{job_id}")
            assert resp.status_code == 200 and resp.json()["callback"]["state"] in (
                "invalid",
                "pending",
                "delivered",
                "failed",
                "gone",
            )
    r.delete(jk.hook)
    r.set(jk.hook, "not a hash")
    assert client.get(f"/v1/jobs/{job_id}").status_code == 409  # record-invalid, as for any key
    r.delete(jk.hook)
    assert client.get(f"/v1/jobs/{job_id}").json()["callback"] is None


def test_the_deliverer_survives_any_outbox() -> None:
    r = tasks.app.store.redis
    ns = tasks.app.settings.namespace
    jk = JobKeys.of(ns, "default.01jd3x9k2m8vq4t7w0c5r6y1zh")
    waiting = JobKeys.of(ns, "default.01jd3x9k2m8vq4t7w0c5r6y1zz")
    r.sadd(f"{ns}:pools", "default")
    junk = {b"not-a-ulid": 0, b"\xff" * 26: 0, jk.ulid.encode(): 0, b"x" * 5000: float("inf")}
    r.zadd(jk.pool.outbox, {**junk, waiting.ulid: float("inf")})
    r.hset(jk.job, "status", "SUCCEEDED")  # a job whose callback record is missing
    r.hset(waiting.job, "status", "RUNNING")  # a job yet to end
    d = fast()
    d.sweep()
    assert d.step() == 0
    assert r.zrange(jk.pool.outbox, 0, -1) == [waiting.ulid.encode()]  # the junk is dropped
    assert callbacks.busy(tasks.app, 10.0)  # its job has yet to end
    r.delete(waiting.job)  # expired without an end
    d.sweep()
    assert r.zcard(jk.pool.outbox) == 0
    assert not callbacks.busy(tasks.app, 10.0)


# ------------------------------------------------------------ whoever ends it
@pytest.mark.machines
def test_a_timeout_sends_a_failed_event(
    client: httpx.Client, receiver: Receiver, deliverer: callbacks.Deliverer
) -> None:
    body = {
        "task": "tests.tasks:sleep",
        "args": [30],
        "timeout": 0.5,
        "callback": receiver.url("/timeout"),
    }
    job = settled(client, submit(client, body))
    assert job["state"] == "failed" and job["reason"] == "timeout"
    (got,) = receiver.got("/timeout")
    event = verified(got, SERVICE_SECRET)
    assert event["type"] == "dev.balloons.job.failed"
    assert event["data"]["reason"] == "timeout"  # type: ignore[index]


@pytest.mark.machines
def test_a_job_the_supervisor_ends_sends_its_event(
    client: httpx.Client, receiver: Receiver, deliverer: callbacks.Deliverer
) -> None:
    """Its machine stops heartbeating (frozen): the supervisor's step ends the job ``lost``
    (the ``LOST`` script), which makes the callback due like any other end."""
    body = {"task": "tests.tasks:solo_sleep", "args": [30], "callback": receiver.url("/lost")}
    job_id = submit(client, body)
    job = tasks.app.job(job_id)
    wait_for(lambda: job.status().value == "RUNNING")
    machine = job.info().machine_id or ""
    info = tasks.app.backend.inspect(machine)
    assert info is not None
    pid = int(info.detail["pid"])
    os.kill(pid, signal.SIGSTOP)
    sup = tasks.app.supervisor()
    try:
        wait_for(lambda: bool(sup.step(gc=False).reclaimed) or job.status().terminal, timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    done = settled(client, job_id)
    assert done["state"] == "failed" and done["reason"] == "lost"
    (got,) = receiver.got("/lost")
    assert verified(got, SERVICE_SECRET)["data"]["reason"] == "lost"  # type: ignore[index]


@pytest.mark.machines
def test_an_https_receiver_is_verified_against_the_trusted_authorities(
    client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    with Receiver(tls) as secure:
        url = secure.url("/tls")
        # Not trusted yet: the attempt fails on the certificate, and is retried.
        untrusted = fast(attempts=1)
        job_id = submit(client, {"task": "tests.tasks:add", "args": [7, 7], "callback": url})
        tasks.app.job(job_id).result(timeout=30)
        assert untrusted.step() == 1
        cb = client.get(f"/v1/jobs/{job_id}").json()["callback"]
        assert (
            cb["state"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in cb["deliveries"][0]["error"]
        )
        assert secure.got("/tls") == []
        # The system's trusted authorities (here SSL_CERT_FILE) decide.
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        job_id = submit(client, {"task": "tests.tasks:add", "args": [8, 8], "callback": url})
        tasks.app.job(job_id).result(timeout=30)
        assert fast().step() == 1
        (got,) = secure.got("/tls")
        assert verified(got, SERVICE_SECRET)["data"]["result"] == 16  # type: ignore[index]


def test_a_bad_service_secret_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from balloons.cli import main as cli

    bad = "whsec_" + base64.b64encode(b"too short").decode()
    monkeypatch.setenv("BALLOONS_WEBHOOK_SECRET", bad)
    out = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert out.exit_code != 0
    assert "BALLOONS_WEBHOOK_SECRET" in out.output and "whsec_" in out.output
    assert bad not in out.output and bad[6:] not in out.output


@pytest.mark.machines
def test_a_service_without_the_secret_records_why_it_sent_nothing(
    client: httpx.Client, receiver: Receiver
) -> None:
    """Another service process (without BALLOONS_WEBHOOK_SECRET) takes the delivery of a
    callback that relies on the service's secret: it sends nothing and says why."""
    job_id = submit(
        client, {"task": "tests.tasks:add", "args": [1, 0], "callback": receiver.url("/nokey")}
    )
    tasks.app.job(job_id).result(timeout=30)
    assert callbacks.Deliverer(tasks.app, None, attempts=1).step() == 1
    cb = client.get(f"/v1/jobs/{job_id}").json()["callback"]
    assert cb["state"] == "failed" and "BALLOONS_WEBHOOK_SECRET" in cb["deliveries"][0]["error"]
    assert receiver.got("/nokey") == []
