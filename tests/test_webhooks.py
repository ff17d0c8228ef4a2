"""Job callbacks' pure parts: the Standard Webhooks signature against the specification's
published test vector, the checks of a submit's ``callback``, secrets kept out of every repr
and message, the backoff, and the callback view of a hook record whatever Redis holds."""

from __future__ import annotations

import base64
import json
import os

import pytest

pytest.importorskip("starlette")

from balloons.errors import ConfigError
from balloons.service import callbacks, webhooks
from balloons.service.problems import Problem

APP_SECRET = b"k" * 32
JOB = "default.01jd3x9k2m8vq4t7w0c5r6y1zh"


def test_the_signature_reproduces_the_published_test_vector() -> None:
    # Standard Webhooks' own vector (the specification and its reference libraries).
    secret = webhooks.WebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = webhooks.sign(
        secret.key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_secret_is_never_shown() -> None:
    text = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    secret = webhooks.WebhookSecret(text)
    cb = webhooks.Callback("https://example.com/hook", secret)
    for shown in (repr(secret), str(secret), repr(cb), str(cb)):
        assert text[6:] not in shown and "***" in shown
    bad = "whsec_" + base64.b64encode(b"short").decode()
    with pytest.raises(ConfigError) as exc:
        webhooks.WebhookSecret(bad)
    assert bad not in str(exc.value) and "24 to 64" in str(exc.value)
    with pytest.raises(Problem) as problem:
        webhooks.parse({"url": "https://example.com/", "secret": bad})
    assert bad not in problem.value.detail and "callback.secret" in problem.value.detail


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("ftp://example.com/x", "'ftp://example.com/x'"),
        ("example.com/hook", "'example.com/hook'"),
        ("http:///nohost", "'http:///nohost'"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com/a b", "without spaces"),
        ("http://example.com:99999/", "not a valid URL"),
        (42, "a URL or an object {url, secret}, got 42"),
        ({"url": 42}, "callback.url must be a string, got 42"),
        (["https://example.com"], "a URL or an object"),
        ({"uri": "https://example.com"}, "unknown callback field(s) ['uri']"),
        ({"secret": None}, "callback.url is missing"),
        ("https://" + "a" * 3000, "at most 2048"),
    ],
)
def test_a_bad_callback_is_refused_naming_the_value(raw: object, says: str) -> None:
    with pytest.raises(Problem) as exc:
        webhooks.parse(raw)
    assert exc.value.status == 400 and says in exc.value.detail, exc.value.detail


def test_good_callbacks_are_taken() -> None:
    assert webhooks.parse(None) is None
    assert webhooks.parse("http://127.0.0.1:8000/h?x=1") == webhooks.Callback(
        "http://127.0.0.1:8000/h?x=1"
    )
    cb = webhooks.parse({"url": "https://[::1]/h", "secret": "whsec_" + "A" * 32})
    assert cb is not None and cb.url == "https://[::1]/h" and cb.secret is not None


def test_a_spec_opens_only_with_its_tag_for_its_job() -> None:
    cb = webhooks.Callback("https://example.com/h", webhooks.WebhookSecret("whsec_" + "B" * 32))
    spec = webhooks.spec_of(cb, APP_SECRET, JOB)
    assert cb.secret is not None and cb.secret.reveal().encode() not in spec  # sealed
    assert cb.secret.reveal()[6:].encode() not in spec
    tag = webhooks.tag_spec(APP_SECRET, JOB, spec)
    opened = webhooks.open_spec(APP_SECRET, JOB, spec, tag.encode())
    assert opened is not None and opened.url == cb.url
    assert opened.secret is not None and opened.secret.key == cb.secret.key  # type: ignore[union-attr]
    other = "default.01jd3x9k2m8vq4t7w0c5r6y1zz"
    assert webhooks.open_spec(APP_SECRET, other, spec, tag) is None  # copied to another job
    evil = spec.replace(b"example.com", b"evil.example")
    assert webhooks.open_spec(APP_SECRET, JOB, evil, tag) is None  # pointed elsewhere
    assert webhooks.open_spec(b"x" * 32, JOB, spec, tag) is None
    assert webhooks.open_spec(None, JOB, spec, tag) is None


def test_a_sealed_secret_opens_only_for_its_job_and_app() -> None:
    text = "whsec_" + base64.b64encode(os.urandom(40)).decode()
    sealed = webhooks.seal(APP_SECRET, JOB, text)
    assert text[6:] not in sealed and webhooks.seal(APP_SECRET, JOB, text) != sealed  # nonce
    assert webhooks.unseal(APP_SECRET, JOB, sealed) == text
    assert webhooks.unseal(APP_SECRET, "default.01jd3x9k2m8vq4t7w0c5r6y1zz", sealed) is None
    assert webhooks.unseal(b"x" * 32, JOB, sealed) is None
    raw = bytearray(base64.b64decode(sealed))
    raw[-1] ^= 1  # one bit of the ciphertext's tag changed
    assert webhooks.unseal(APP_SECRET, JOB, base64.b64encode(bytes(raw)).decode()) is None
    for junk in ("", "!!", "AAAA", base64.b64encode(b"n" * 16).decode(), "x" * 1000):
        assert webhooks.unseal(APP_SECRET, JOB, junk) is None


HOSTILE = [None, b"", b"x", b"\xff\xfe", b"1e300", b"nan", b"-1", b"[]", b"{}", b"null", b"9" * 80]


@pytest.mark.parametrize("field", ["spec", "sig", "state", "n", "d:1", "d:x", "d:99999999999"])
@pytest.mark.parametrize("value", HOSTILE)
def test_the_view_of_any_hook_record_is_well_formed(field: str, value: bytes | None) -> None:
    spec = webhooks.spec_of(webhooks.Callback("https://example.com/h"), APP_SECRET, JOB)
    good = {
        b"spec": spec,
        b"sig": webhooks.tag_spec(APP_SECRET, JOB, spec).encode(),
        b"state": b"delivered",
        b"n": b"1",
        b"d:1": webhooks.delivery_record(1, "2026-12-06T18:00:00Z", 200, None, 12).encode(),
    }
    rec = dict(good)
    if value is None:
        rec.pop(field.encode(), None)
    else:
        rec[field.encode()] = value
    view = webhooks.view(APP_SECRET, JOB, rec)
    assert view is not None
    assert view["state"] in webhooks.STATES and isinstance(view["attempts"], int)
    if field in ("spec", "sig"):
        assert view["state"] == "invalid" and view["url"] is None
    for d in view["deliveries"]:
        assert isinstance(d["attempt"], int) and isinstance(d["at"], str)
        assert d["status"] is None or 100 <= d["status"] <= 599
    json.dumps(view)
    assert webhooks.view(APP_SECRET, JOB, {}) is None
    assert webhooks.view(APP_SECRET, JOB, None) is None


def test_the_event_is_a_structured_cloudevent() -> None:
    job = {"id": JOB, "state": "failed", "ended_at": "2026-12-06T18:00:00Z", "result": None}
    doc = json.loads(webhooks.event(job, "/balloons/test"))
    assert doc == {
        "specversion": "1.0",
        "id": "msg_01jd3x9k2m8vq4t7w0c5r6y1zh",
        "source": "/balloons/test",
        "type": "dev.balloons.job.failed",
        "subject": JOB,
        "time": "2026-12-06T18:00:00Z",
        "datacontenttype": "application/json",
        "data": job,
    }
    unknown_end = {**job, "ended_at": None}
    assert "time" not in json.loads(webhooks.event(unknown_end, "/balloons/test"))


def test_the_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    for n in range(1, 12):
        full = min(100.0, 2.0 * 2 ** (n - 1))
        for _ in range(20):
            assert full / 2 <= callbacks.backoff(n, 2.0, 100.0) <= full
    assert len({callbacks.backoff(3, 2.0, 100.0) for _ in range(20)}) > 1
    assert callbacks.backoff(10_000, 2.0, 100.0) <= 100.0
