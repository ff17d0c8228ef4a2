"""The senders: Mailjet's HTTP API when it is configured, otherwise a dummy outbox.

This module runs on every job machine, so it uses only the standard library (``urllib``):
no HTTP client library, no Flask. Configuration comes from the machine's environment, which
holds only the variables the balloons app allow-lists (see ``tasks.py``):

``MAILJET_API_KEY``, ``MAILJET_API_SECRET``
    Both set: send through ``POST https://api.mailjet.com/v3.1/send`` (HTTP basic auth).
``MAILJET_SENDER``
    The From address, ``sender@example.com`` or ``Name <sender@example.com>``; it must be a
    sender validated in the Mailjet account. Required when Mailjet is used.
``DUMMY_MAIL_DIR``
    Where the dummy sender appends one JSON line per email to ``outbox.jsonl`` (default
    ``outbox/`` under the system temporary directory).

The API secret is never logged, returned, or quoted in an error message.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any, TypedDict

MAILJET_SEND_URL = "https://api.mailjet.com/v3.1/send"
OUTBOX_FILE = "outbox.jsonl"
DEFAULT_TIMEOUT = 20.0  # seconds for the Mailjet request

log = logging.getLogger(__name__)


class SendResult(TypedDict):
    """What ``send_email`` returns (and ``GET /status`` shows as ``result``)."""

    sent: bool
    via: str  # "mailjet" or "dummy"
    to: str
    message_id: str


class MailError(Exception):
    """The email could not be sent. Its message never carries a credential."""


@dataclass(frozen=True, repr=False)
class MailjetConfig:
    """Mailjet credentials and sender. ``repr`` hides the secret."""

    api_key: str
    api_secret: str
    sender: str

    def __repr__(self) -> str:
        return f"MailjetConfig(api_key={self.api_key!r}, api_secret='***', sender={self.sender!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MailjetConfig | None:
        """The configuration in ``env``, or None when the key or the secret is missing."""
        key = env.get("MAILJET_API_KEY", "").strip()
        secret = env.get("MAILJET_API_SECRET", "").strip()
        if not key or not secret:
            if key or secret:
                log.warning(
                    "only one of MAILJET_API_KEY and MAILJET_API_SECRET is set: "
                    "using the dummy sender"
                )
            return None
        sender = env.get("MAILJET_SENDER", "").strip()
        if not sender:
            raise MailError(
                "MAILJET_SENDER is not set: Mailjet needs a From address validated in the "
                "account, e.g. MAILJET_SENDER='Demo <demo@example.com>'"
            )
        return cls(api_key=key, api_secret=secret, sender=sender)

    def redact(self, text: str) -> str:
        """``text`` with the secret blanked out, in case a remote message echoes it."""
        return text.replace(self.api_secret, "***") if self.api_secret else text


def _sender(sender: str) -> dict[str, str]:
    name, addr = parseaddr(sender)
    if not addr or "@" not in addr:
        raise MailError(f"MAILJET_SENDER {sender!r} is not an email address")
    out = {"Email": addr}
    if name:
        out["Name"] = name
    return out


def build_mailjet_request(
    config: MailjetConfig, *, subject: str, body: str, to: str
) -> urllib.request.Request:
    """The Send API v3.1 request for one plain-text email (built, not sent)."""
    payload = {
        "Messages": [
            {
                "From": _sender(config.sender),
                "To": [{"Email": to}],
                "Subject": subject,
                "TextPart": body,
            }
        ]
    }
    token = base64.b64encode(f"{config.api_key}:{config.api_secret}".encode()).decode("ascii")
    return urllib.request.Request(
        MAILJET_SEND_URL,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "balloons-flask-email-example/1",
        },
    )


Opener = Callable[..., Any]  # urllib.request.urlopen's shape: (request, timeout=...) -> response


def send_mailjet(
    config: MailjetConfig,
    *,
    subject: str,
    body: str,
    to: str,
    timeout: float = DEFAULT_TIMEOUT,
    opener: Opener = urllib.request.urlopen,
) -> SendResult:
    """Send through Mailjet; raise :class:`MailError` (credential-free) if it is refused."""
    req = build_mailjet_request(config, subject=subject, body=body, to=to)
    try:
        with opener(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = _mailjet_error(exc.read())
        finally:
            exc.close()
        raise MailError(
            config.redact(f"Mailjet refused the email (HTTP {exc.code}): {detail}")
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MailError(config.redact(f"cannot reach Mailjet: {reason}")) from None
    return _mailjet_result(config, raw, to)


def _mailjet_result(config: MailjetConfig, raw: bytes, to: str) -> SendResult:
    try:
        message = json.loads(raw)["Messages"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise MailError("Mailjet answered with an unexpected body") from None
    if message.get("Status") != "success":
        raise MailError(config.redact(f"Mailjet did not send the email: {_mailjet_error(raw)}"))
    recipients = message.get("To") or [{}]
    first = recipients[0] if isinstance(recipients[0], dict) else {}
    message_id = first.get("MessageUUID") or first.get("MessageID") or ""
    return {"sent": True, "via": "mailjet", "to": to, "message_id": str(message_id)}


def _mailjet_error(raw: bytes) -> str:
    """The error messages of a Mailjet error body (either of its two shapes)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace") or "no details"
    if not isinstance(data, dict):
        return "no details"
    found: list[str] = []
    if data.get("ErrorMessage"):
        found.append(str(data["ErrorMessage"]))
    for message in data.get("Messages") or []:
        for error in (message or {}).get("Errors") or []:
            if isinstance(error, dict) and error.get("ErrorMessage"):
                found.append(str(error["ErrorMessage"]))
    return "; ".join(found) or "no details"


def outbox_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DUMMY_MAIL_DIR") or Path(tempfile.gettempdir()) / "outbox")


def send_dummy(*, subject: str, body: str, to: str, directory: Path) -> SendResult:
    """Record the email as one JSON line in ``directory/outbox.jsonl`` instead of sending it."""
    message_id = f"dummy-{uuid.uuid4().hex}"
    record = {
        "message_id": message_id,
        "to": to,
        "subject": subject,
        "body": body,
        "sent_at": time.time(),
        "pid": os.getpid(),
        "machine": os.environ.get("BALLOONS_MACHINE_ID", ""),
    }
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # One write with O_APPEND: lines from concurrent machines never interleave.
        fd = os.open(directory / OUTBOX_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise MailError(f"cannot write the dummy outbox in {directory}: {exc.strerror}") from None
    return {"sent": True, "via": "dummy", "to": to, "message_id": message_id}


def send(*, subject: str, body: str, to: str, env: Mapping[str, str] | None = None) -> SendResult:
    """Send one email through Mailjet if ``env`` configures it, else through the dummy."""
    env = os.environ if env is None else env
    config = MailjetConfig.from_env(env)
    if config is None:
        return send_dummy(subject=subject, body=body, to=to, directory=outbox_dir(env))
    return send_mailjet(config, subject=subject, body=body, to=to)
