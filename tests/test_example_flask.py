"""The Flask email example, end to end: Flask's test client, a real Valkey, real machines."""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "examples.flask_email"
DEADLINE = 30.0  # seconds a job may take before a test gives up
UNKNOWN_ID = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"
MAILJET_VARS = ("MAILJET_API_KEY", "MAILJET_API_SECRET", "MAILJET_SENDER")


@dataclass
class Example:
    client: FlaskClient
    tasks: ModuleType
    mailer: ModuleType
    outbox: Path


def _forget_example_modules() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def example(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The example imported fresh, its module-level App configured through the environment."""
    state = tmp_path_factory.mktemp("flask-example-home")
    outbox = tmp_path_factory.mktemp("flask-example-outbox")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BALLOONS_REDIS_URL", redis_url)
        mp.setenv("BALLOONS_SECRET", "flask-example-" + os.urandom(16).hex())
        mp.setenv("BALLOONS_HOME", str(state))
        mp.setenv("DUMMY_MAIL_DIR", str(outbox))
        for name in MAILJET_VARS:  # a developer's real credentials must not be used here
            mp.delenv(name, raising=False)
        if str(ROOT) not in sys.path:
            mp.syspath_prepend(str(ROOT))
        _forget_example_modules()
        app_module = importlib.import_module(f"{PACKAGE}.app")
        tasks = importlib.import_module(f"{PACKAGE}.tasks")
        mailer = importlib.import_module(f"{PACKAGE}.mailer")
    try:
        yield Example(app_module.flask_app.test_client(), tasks, mailer, outbox)
    finally:
        tasks.app.backend.shutdown()  # no fork server is left behind
        tasks.app.close()
        _forget_example_modules()


def _post(client: FlaskClient, body: Any) -> tuple[int, dict[str, Any]]:
    resp = client.post("/send", json=body)
    return resp.status_code, resp.get_json()


def _wait(client: FlaskClient, task_id: str) -> tuple[dict[str, Any], set[str]]:
    """Poll GET /status until the job is no longer PENDING; return the answer and all seen."""
    seen: set[str] = set()

    def answered() -> dict[str, Any] | None:
        resp = client.get(f"/status/{task_id}")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        data: dict[str, Any] = resp.get_json()
        seen.add(data["status"])
        return None if data["status"] == "PENDING" else data

    return wait_for(answered, f"job {task_id} to leave PENDING", DEADLINE), seen


def _outbox(example: Example) -> list[dict[str, Any]]:
    path = example.outbox / example.mailer.OUTBOX_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------- end to end
@pytest.mark.machines
def test_send_then_poll_until_success(example: Example) -> None:
    status, data = _post(
        example.client, {"subject": "Hi", "body": "Hello from a balloon!", "to": "a@b.co"}
    )
    assert status == 202, data
    task_id = data["task_id"]
    assert task_id.startswith("default.")

    final, seen = _wait(example.client, task_id)
    assert final["status"] == "SUCCESS", final
    assert seen <= {"PENDING", "SUCCESS"}
    result = final["result"]
    assert result["sent"] is True
    assert result["via"] == "dummy"
    assert result["to"] == "a@b.co"
    assert result["message_id"].startswith("dummy-")

    [mail] = [m for m in _outbox(example) if m["message_id"] == result["message_id"]]
    assert mail["to"] == "a@b.co"
    assert mail["subject"] == "Hi"
    assert mail["body"] == "Hello from a balloon!"
    assert mail["pid"] != os.getpid()  # it ran on a machine of its own
    assert mail["machine"]

    # Finished jobs keep answering the same way.
    assert example.client.get(f"/status/{task_id}").get_json() == final


@pytest.mark.machines
def test_several_emails_each_reach_the_outbox(example: Example) -> None:
    ids = []
    for i in range(3):
        status, data = _post(
            example.client, {"subject": f"n{i}", "body": "x", "to": f"u{i}@example.com"}
        )
        assert status == 202
        ids.append(data["task_id"])
    assert len(set(ids)) == 3
    results = [_wait(example.client, task_id)[0] for task_id in ids]
    assert [r["status"] for r in results] == ["SUCCESS"] * 3
    sent = {m["message_id"]: m["to"] for m in _outbox(example)}
    for i, r in enumerate(results):
        assert sent[r["result"]["message_id"]] == f"u{i}@example.com"


@pytest.mark.machines
def test_failure_reports_reason_without_traceback_or_secret(
    example: Example, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mailjet credentials without a sender: the task fails on its machine before any request.
    app = example.tasks.app
    env = {**app.settings.env, "MAILJET_API_KEY": "k3y", "MAILJET_API_SECRET": "s3cr3t-value"}
    monkeypatch.setattr(app, "settings", app.settings.replace(env=env))
    status, data = _post(example.client, {"subject": "Hi", "body": "x", "to": "a@b.co"})
    assert status == 202

    final, seen = _wait(example.client, data["task_id"])
    assert seen <= {"PENDING", "FAILURE"}
    assert final["status"] == "FAILURE"
    assert final["reason"] == "task_error"
    assert "MAILJET_SENDER" in final["error"]
    assert final["error"].startswith("MailError: ")
    assert set(final) == {"status", "reason", "error"}
    text = json.dumps(final)
    assert "Traceback" not in text
    assert "s3cr3t-value" not in text


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"body": "b", "to": "a@b.co"}, "subject", "missing"),
        ({"subject": "s", "to": "a@b.co"}, "body", "missing"),
        ({"subject": "s", "body": "b"}, "to", "missing"),
        ({"subject": None, "body": "b", "to": "a@b.co"}, "subject", "missing"),
        ({"subject": 3, "body": "b", "to": "a@b.co"}, "subject", "string"),
        ({"subject": "s", "body": ["b"], "to": "a@b.co"}, "body", "string"),
        ({"subject": "  ", "body": "b", "to": "a@b.co"}, "subject", "empty"),
        ({"subject": "s", "body": "", "to": "a@b.co"}, "body", "empty"),
        ({"subject": "s", "body": "b", "to": "not-an-address"}, "to", "email address"),
        ({"subject": "s", "body": "b", "to": "a@b.co, c@d.co"}, "to", "email address"),
        ({"subject": "s", "body": "b", "to": "a@" + "b" * 260 + ".co"}, "to", "email address"),
        ({"subject": "a\r\nBcc: x@y.z", "body": "b", "to": "a@b.co"}, "subject", "single line"),
        ({"subject": "s" * 256, "body": "b", "to": "a@b.co"}, "subject", "longer"),
        ({"subject": "s", "body": "b" * 100_001, "to": "a@b.co"}, "body", "longer"),
        ({"subject": "s", "body": "b", "to_email": "a@b.co"}, "to_email", "unknown"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    example: Example, body: dict[str, Any], field: str, words: str
) -> None:
    before = len(_outbox(example))
    status, data = _post(example.client, body)
    assert status == 400
    assert data["field"] == field
    assert f"'{field}'" in data["error"]
    assert words in data["error"]
    assert len(_outbox(example)) == before


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b""])
def test_body_that_is_not_a_json_object_is_400(example: Example, raw: bytes) -> None:
    resp = example.client.post("/send", data=raw, content_type="application/json")
    assert resp.status_code == 400
    assert "JSON object" in resp.get_json()["error"]


@pytest.mark.machines
def test_json_body_is_accepted_without_a_content_type(example: Example) -> None:
    raw = json.dumps({"subject": "s", "body": "b", "to": "a@b.co"})
    resp = example.client.post("/send", data=raw)  # curl -d without -H
    assert resp.status_code == 202
    assert _wait(example.client, resp.get_json()["task_id"])[0]["status"] == "SUCCESS"


# -------------------------------------------------------------------- status
def test_unknown_task_id_is_404(example: Example) -> None:
    resp = example.client.get(f"/status/{UNKNOWN_ID}")
    assert resp.status_code == 404
    assert resp.is_json
    assert UNKNOWN_ID in resp.get_json()["error"]


@pytest.mark.parametrize("bad", ["nope", "default.XYZ", "default." + "u" * 26, "a.b.c", ".."])
def test_malformed_task_id_is_400(example: Example, bad: str) -> None:
    resp = example.client.get(f"/status/{bad}")
    assert resp.status_code == 400
    assert "malformed task id" in resp.get_json()["error"]


def test_unknown_route_and_method_answer_json(example: Example) -> None:
    resp = example.client.get("/nowhere")
    assert resp.status_code == 404
    assert resp.is_json
    resp = example.client.get("/send")
    assert resp.status_code == 405
    assert resp.is_json


# ------------------------------------------------------- mailer (no network)
def test_mailjet_request_is_built_to_spec(example: Example) -> None:
    mailer = example.mailer
    config = mailer.MailjetConfig.from_env(
        {
            "MAILJET_API_KEY": "key123",
            "MAILJET_API_SECRET": "secret456",
            "MAILJET_SENDER": "Demo <demo@example.com>",
        }
    )
    assert config is not None
    req = mailer.build_mailjet_request(config, subject="Hi", body="Hello!", to="a@b.co")
    assert isinstance(req, urllib.request.Request)
    assert req.full_url == "https://api.mailjet.com/v3.1/send"
    assert req.get_method() == "POST"
    auth = req.get_header("Authorization")
    assert auth is not None
    assert auth.startswith("Basic ")
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"key123:secret456"
    assert req.get_header("Content-type") == "application/json"
    assert isinstance(req.data, bytes)
    assert json.loads(req.data) == {
        "Messages": [
            {
                "From": {"Email": "demo@example.com", "Name": "Demo"},
                "To": [{"Email": "a@b.co"}],
                "Subject": "Hi",
                "TextPart": "Hello!",
            }
        ]
    }
    assert "secret456" not in repr(config)
    plain = mailer.MailjetConfig("k", "s", "demo@example.com")
    body = mailer.build_mailjet_request(plain, subject="s", body="b", to="x@y.z").data
    assert isinstance(body, bytes)
    assert json.loads(body)["Messages"][0]["From"] == {"Email": "demo@example.com"}


def test_mailer_picks_its_sender_from_the_environment(example: Example, tmp_path: Path) -> None:
    mailer = example.mailer
    assert mailer.MailjetConfig.from_env({}) is None
    assert mailer.MailjetConfig.from_env({"MAILJET_API_KEY": "k"}) is None
    with pytest.raises(mailer.MailError, match="MAILJET_SENDER"):
        mailer.MailjetConfig.from_env({"MAILJET_API_KEY": "k", "MAILJET_API_SECRET": "s"})
    out = mailer.send(subject="s", body="b", to="a@b.co", env={"DUMMY_MAIL_DIR": str(tmp_path)})
    assert out["via"] == "dummy"
    [line] = (tmp_path / mailer.OUTBOX_FILE).read_text().splitlines()
    assert json.loads(line)["message_id"] == out["message_id"]
    assert mailer.outbox_dir({}).name == "outbox"


class _FakeResponse(io.BytesIO):
    pass


def test_send_mailjet_reads_success_and_errors_without_leaking(example: Example) -> None:
    mailer = example.mailer
    config = mailer.MailjetConfig("key123", "secret456", "demo@example.com")
    sent: list[urllib.request.Request] = []

    def ok(req: urllib.request.Request, timeout: float) -> _FakeResponse:
        sent.append(req)
        body = {"Messages": [{"Status": "success", "To": [{"MessageUUID": "u-1"}]}]}
        return _FakeResponse(json.dumps(body).encode())

    result = mailer.send_mailjet(config, subject="s", body="b", to="a@b.co", opener=ok)
    assert result == {"sent": True, "via": "mailjet", "to": "a@b.co", "message_id": "u-1"}
    assert len(sent) == 1

    def refused(req: urllib.request.Request, timeout: float) -> _FakeResponse:
        body = {"ErrorMessage": "API key authentication failure for secret456", "StatusCode": 401}
        raise urllib.error.HTTPError(
            req.full_url,
            401,
            "Unauthorized",
            Message(),
            io.BytesIO(json.dumps(body).encode()),
        )

    with pytest.raises(mailer.MailError) as info:
        mailer.send_mailjet(config, subject="s", body="b", to="a@b.co", opener=refused)
    assert "HTTP 401" in str(info.value)
    assert "authentication failure" in str(info.value)
    assert "secret456" not in str(info.value)
    assert info.value.__cause__ is None

    def bad_request(req: urllib.request.Request, timeout: float) -> _FakeResponse:
        body = {"Messages": [{"Status": "error", "Errors": [{"ErrorMessage": "bad To"}]}]}
        raise urllib.error.HTTPError(
            req.full_url,
            400,
            "Bad Request",
            Message(),
            io.BytesIO(json.dumps(body).encode()),
        )

    with pytest.raises(mailer.MailError, match=r"HTTP 400.*bad To"):
        mailer.send_mailjet(config, subject="s", body="b", to="a@b.co", opener=bad_request)

    def offline(req: urllib.request.Request, timeout: float) -> _FakeResponse:
        raise urllib.error.URLError("no network")

    with pytest.raises(mailer.MailError, match="cannot reach Mailjet: no network"):
        mailer.send_mailjet(config, subject="s", body="b", to="a@b.co", opener=offline)


@pytest.mark.slow
def test_worker_import_path_does_not_load_flask(example: Example) -> None:
    code = (
        "import sys, examples.flask_email.tasks as t; "
        "print(t.send_email.name, sorted(m for m in ('flask', 'werkzeug', 'redis') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert out[0] == "examples.flask_email.tasks:send_email"
    assert out[1].strip() == "[]"
