"""Job callbacks, the pure part: the ``callback`` of a submit, its secret, the event sent and
its Standard Webhooks signature, and the callback as the job resource shows it.

A callback is ``{"url": "https://...", "secret": "whsec_..."}`` (the secret optional) or the
URL alone. The event is a CloudEvent 1.0 in structured JSON (``application/cloudevents+json``)
whose ``data`` is the job resource; it is signed as Standard Webhooks says: ``webhook-id``
(the same on every attempt), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
``v1,`` + base64(HMAC-SHA256(key, "ID.TIMESTAMP.BODY")), the key being the secret's base64
part decoded. The secret is the job's own when its submit gave one, else the service's
(``BALLOONS_WEBHOOK_SECRET``). A secret never appears in a message, repr or page.

What the job service stores (the hook record, :mod:`balloons.service.callbacks`) is read back
here as hostile input: a spec whose tag does not verify with the app's secret is never
delivered, and a delivery record out of shape is left out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import signing
from ..errors import ConfigError
from ..untrusted import describe, integer, json_object, shown
from .problems import Problem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "whsec_"
#: Bytes of a secret's key (Standard Webhooks: 24 to 64 random bytes).
MIN_KEY, MAX_KEY = 24, 64
MAX_URL = 2048
#: What the ``state`` of a callback may be: waiting for the job to end or for a retry,
#: delivered (a 2xx), failed (every attempt failed), gone (the receiver answered 410), invalid
#: (its record does not verify: never delivered).
STATES = ("pending", "delivered", "failed", "gone", "invalid")
#: Delivery records shown per job, at most.
MAX_SHOWN = 50
EVENT_TYPE = "dev.balloons.job.{state}"
CONTENT_TYPE = "application/cloudevents+json"
_KIND = "callback"  # the tag's kind (signing.sign_outcome)


class WebhookSecret:
    """A Standard Webhooks signing secret (``whsec_`` + base64 of 24-64 bytes). Its repr and
    str never show it."""

    __slots__ = ("_key", "_text")

    def __init__(self, text: str) -> None:
        key = _key_of(text)
        if key is None:
            raise ConfigError(
                "a webhook secret must be 'whsec_' then the base64 of "
                f"{MIN_KEY} to {MAX_KEY} random bytes (the value is not shown)"
            )
        self._key = key
        self._text = text

    @property
    def key(self) -> bytes:
        """The HMAC key: the secret's base64 part, decoded."""
        return self._key

    def reveal(self) -> str:
        """The secret as given (to store it with its job)."""
        return self._text

    def __repr__(self) -> str:
        return "WebhookSecret(***)"

    __str__ = __repr__


def _key_of(text: object) -> bytes | None:
    if not isinstance(text, str) or not text.startswith(PREFIX) or len(text) > 200:
        return None
    try:
        key = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if MIN_KEY <= len(key) <= MAX_KEY else None


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` of a message: ``v1,`` + base64(HMAC-SHA256)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of a delivery."""
    return {
        "content-type": CONTENT_TYPE,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


def message_id(job_id: str) -> str:
    """The ``webhook-id`` (and CloudEvent ``id``) of a job's end: the same on every attempt."""
    return "msg_" + job_id.rpartition(".")[2]


def event(job: dict[str, Any], source: str) -> bytes:
    """The CloudEvent of a job's end, as the body sent: ``job`` is its resource."""
    doc = {
        "specversion": "1.0",
        "id": message_id(job["id"]),
        "source": source,
        "type": EVENT_TYPE.format(state=job["state"]),
        "subject": job["id"],
        "time": job.get("ended_at"),
        "datacontenttype": "application/json",
        "data": job,
    }
    if doc["time"] is None:  # an end time that cannot be read: the attribute is optional
        del doc["time"]
    # "replace": a lone surrogate (a string altered in Redis) is sent as "?", never a crash.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")


# ------------------------------------------------------------------------- submit
@dataclass(frozen=True)
class Callback:
    """A submit's checked callback: where to send the event, and the job's own secret."""

    url: str
    secret: WebhookSecret | None = None

    def __repr__(self) -> str:
        return f"Callback(url={self.url!r}, secret={'***' if self.secret else None})"


def _invalid(detail: str) -> Problem:
    return Problem(400, "invalid-request", detail)


def parse(raw: object) -> Callback | None:
    """The ``callback`` of a submit's body; a 400 problem naming what is wrong."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return Callback(check_url(raw))
    if not isinstance(raw, dict):
        raise _invalid(f"callback must be a URL or an object {{url, secret}}, got {describe(raw)}")
    unknown = sorted(str(k)[:40] for k in raw if k not in ("url", "secret"))
    if unknown:
        raise _invalid(f"unknown callback field(s) {unknown}: expected url, secret")
    if "url" not in raw:
        raise _invalid("callback.url is missing: the http(s) URL to POST the event to")
    secret = raw.get("secret")
    if secret is not None and _key_of(secret) is None:
        raise _invalid(
            "callback.secret must be a Standard Webhooks secret: 'whsec_' then the base64 of "
            f"{MIN_KEY} to {MAX_KEY} random bytes (the value is not shown)"
        )
    return Callback(check_url(raw["url"]), WebhookSecret(secret) if secret else None)


_USERINFO_RE = re.compile(r"\A([^/?#@]*?:?/*)[^/?#]*@")


def check_url(raw: object) -> str:
    """An absolute http(s) URL with a host and no credentials; a 400 problem naming it."""
    if not isinstance(raw, str):
        raise _invalid(f"callback.url must be a string, got {describe(raw)[:80]}")
    # Whatever comes before an '@' may be a password: never echoed, whatever else is wrong.
    shown_url = repr(shown(_USERINFO_RE.sub(r"\1***@", raw))[:200])
    if len(raw) > MAX_URL or not raw.isprintable() or any(c.isspace() for c in raw):
        raise _invalid(
            f"callback.url must be a URL of at most {MAX_URL} printable characters without "
            f"spaces, got {shown_url}"
        )
    try:
        parts = urllib.parse.urlsplit(raw)
        port = parts.port
    except ValueError:
        raise _invalid(f"callback.url is not a valid URL: {shown_url}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(
            f"callback.url must be an http:// or https:// URL with a host, got {shown_url}"
        )
    if parts.username is not None or parts.password is not None:
        raise _invalid(
            "callback.url must not hold credentials (user:password@): the receiver checks the "
            "event's signature instead"
        )
    if port == 0:
        raise _invalid(f"callback.url has port 0: {shown_url}")
    return raw


def spec_of(callback: Callback, app_secret: bytes, job_id: str) -> bytes:
    """What the hook record keeps of a callback: its URL and, if given, its own secret,
    sealed (:func:`seal`)."""
    doc: dict[str, str] = {"url": callback.url}
    if callback.secret is not None:
        doc["sealed"] = seal(app_secret, job_id, callback.secret.reveal())
    return json.dumps(doc, separators=(",", ":")).encode()


def tag_spec(app_secret: bytes, job_id: str, spec: bytes) -> str:
    """The spec's tag: bound to the job with the app's secret, so that a Redis writer can
    neither point a job's callback elsewhere nor give it a secret of its own."""
    return signing.sign_outcome(app_secret, _KIND, job_id, 0, spec)


def open_spec(app_secret: bytes | None, job_id: str, spec: object, tag: object) -> Callback | None:
    """The callback a hook record's spec holds, when its tag verifies; else None."""
    if app_secret is None or not isinstance(spec, bytes | str):
        return None
    data = spec.encode() if isinstance(spec, str) else spec
    tag_raw = tag if isinstance(tag, bytes | str) else None
    if signing.verify_outcome(app_secret, _KIND, job_id, data, tag_raw) != 0:
        return None
    doc = json_object(data)
    url = None if doc is None else doc.get("url")
    if doc is None or not isinstance(url, str):
        return None
    sealed = doc.get("sealed")
    secret = unseal(app_secret, job_id, sealed) if isinstance(sealed, str) else None
    return Callback(url, WebhookSecret(secret) if secret and _key_of(secret) else None)


# A job's own webhook secret is kept in Redis sealed with AES-256-GCM (the `cryptography`
# package), under a key derived from the app's secret, the job's id as associated data: a
# reader of Redis can neither read it nor move it to another job. The spec's tag covers the
# sealed text too.
_SEAL = b"balloons/webhook-secret/v2\n"
_NONCE = 12


def _aead(app_secret: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(hmac.digest(app_secret, _SEAL, hashlib.sha256))


def seal(app_secret: bytes, job_id: str, text: str) -> str:
    """``text`` sealed for job ``job_id`` (base64 of nonce and ciphertext)."""
    nonce = os.urandom(_NONCE)
    sealed = _aead(app_secret).encrypt(nonce, text.encode(), job_id.encode())
    return base64.b64encode(nonce + sealed).decode()


def unseal(app_secret: bytes, job_id: str, sealed: str) -> str | None:
    """What :func:`seal` sealed for this job and app; None for anything else."""
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.b64decode(sealed[:400], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= _NONCE + 16:
        return None
    try:
        text = _aead(app_secret).decrypt(raw[:_NONCE], raw[_NONCE:], job_id.encode())
        return text.decode("ascii")
    except (InvalidTag, UnicodeDecodeError):
        return None


# ------------------------------------------------------------------------ OpenAPI
_NULLABLE_STR = {"type": ["string", "null"]}
#: The ``callback`` of a submit's body, in the OpenAPI document.
REQUEST_SCHEMA: dict[str, Any] = {
    "description": (
        "POST the job's end here as a signed CloudEvent (Standard Webhooks): an http(s) URL, "
        "or {url, secret}; without a secret of its own, the service's "
        "(BALLOONS_WEBHOOK_SECRET) signs it, and a service without one answers 422 "
        "callback-secret-required"
    ),
    "oneOf": [
        {"type": "null"},
        {"type": "string", "maxLength": MAX_URL},
        {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string", "maxLength": MAX_URL},
                "secret": {
                    "type": "string",
                    "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
                    "description": f"whsec_ then the base64 of {MIN_KEY} to {MAX_KEY} bytes",
                },
            },
        },
    ],
}
#: The job resource's ``callback`` and its deliveries, in the OpenAPI document.
SCHEMAS: dict[str, Any] = {
    "Callback": {
        "type": ["object", "null"],
        "description": "The job's callback and each attempt to deliver it; null: none",
        "required": ["url", "state", "attempts", "deliveries"],
        "properties": {
            "url": _NULLABLE_STR,
            "state": {"enum": list(STATES)},
            "attempts": {"type": "integer", "minimum": 0},
            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
        },
    },
    "Delivery": {
        "type": "object",
        "required": ["attempt", "at", "status", "error", "duration_ms"],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "at": {"type": "string", "format": "date-time"},
            "status": {"type": ["integer", "null"], "description": "The receiver's answer"},
            "error": {**_NULLABLE_STR, "description": "Why no answer came, or none was sent"},
            "duration_ms": {"type": ["integer", "null"], "minimum": 0},
        },
    },
}


# ----------------------------------------------------------------------- resource
_TIME_RE = re.compile(r"\A[0-9T:.+Z-]{10,40}\Z")


def delivery_record(attempt: int, at: str, status: int | None, error: str | None, ms: int) -> str:
    """One attempt's record, as the hook record keeps it (JSON)."""
    doc = {"attempt": attempt, "at": at, "status": status, "error": error, "ms": ms}
    return json.dumps(doc, separators=(",", ":"))


def _delivery(raw: bytes) -> dict[str, Any] | None:
    d = json_object(raw)
    if d is None:
        return None
    attempt = integer(d.get("attempt"), 1, 1_000_000)
    at = d.get("at")
    status = d.get("status")
    error = d.get("error")
    if attempt is None or not isinstance(at, str) or not _TIME_RE.match(at):
        return None
    if status is not None and integer(status, 100, 599) is None:
        status = None
    return {
        "attempt": attempt,
        "at": at,
        "status": status,
        "error": shown(error)[:300] if isinstance(error, str) else None,
        "duration_ms": integer(d.get("ms"), 0, 10**7),
    }


def view(app_secret: bytes | None, job_id: str, hook: object) -> dict[str, Any] | None:
    """The job resource's ``callback``: ``{url, state, attempts, deliveries}``; None when the
    job has none. Whatever Redis holds, a value that cannot be read is null (or left out)."""
    if not isinstance(hook, dict) or not hook:
        return None
    rec = {k.decode() if isinstance(k, bytes) else str(k): v for k, v in hook.items()}
    spec = open_spec(app_secret, job_id, rec.get("spec"), rec.get("sig"))
    raw_state = rec.get("state")
    state = raw_state.decode("ascii", "replace") if isinstance(raw_state, bytes) else "pending"
    if spec is None:
        state = "invalid"
    elif state not in STATES:
        state = "pending"
    deliveries = []
    for k in sorted(
        (k for k in rec if k.startswith("d:") and k[2:].isdigit() and len(k) < 12),
        key=lambda k: int(k[2:]),
    )[-MAX_SHOWN:]:
        value = rec[k]
        d = _delivery(value) if isinstance(value, bytes) else None
        if d is not None:
            deliveries.append(d)
    return {
        "url": spec.url if spec is not None else None,
        "state": state,
        "attempts": integer(rec.get("n"), 0, 1_000_000) or 0,
        "deliveries": deliveries,
    }
