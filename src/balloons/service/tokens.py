"""Attempt tokens: what a machine of the HTTP worker protocol holds instead of credentials.

A token is stateless: ``bat1.BODY.TAG``, where ``BODY`` is the base64url of
``JOB_ID/ATTEMPT/EXPIRES`` and ``TAG`` an HMAC-SHA256 of it under a key derived from the
app's signing key with a label of its own (so a token is never a valid tag of anything else,
and the signing key never leaves the service or the worker that mints it). It names one
attempt, whose URL is ``{service_url}/v1/attempts/{JOB_ID}/{ATTEMPT}``, and expires at the
attempt's deadline plus :data:`GRACE`. Nothing is stored: revoking a token is superseding its
attempt (the service then answers ``409 attempt-superseded``).

Standard library only: a local machine's worker mints the token of a command job it runs.
"""

from __future__ import annotations

import base64
import hmac
import math

PREFIX = "bat1"
#: Seconds a token outlives its attempt's deadline (a last call to report the outcome).
GRACE = 60.0
#: The label of the derived key: a token's key is never the signing key itself.
_LABEL = b"balloons/attempt-token/v1"
MAX_TOKEN_CHARS = 400


class TokenError(Exception):
    """A token that is refused: ``code`` is ``token-invalid``, ``token-expired`` or
    ``token-scope`` (a valid token of another attempt). Never holds the token."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _key(secret: bytes) -> bytes:
    return hmac.digest(secret, _LABEL, "sha256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tag(secret: bytes, body: str) -> str:
    return _b64(hmac.digest(_key(secret), body.encode(), "sha256"))


def attempt_path(job_id: str, attempt: int) -> str:
    """The attempt's path under the service's base URL."""
    return f"/v1/attempts/{job_id}/{attempt}"


def attempt_url(service_url: str, job_id: str, attempt: int) -> str:
    return service_url.rstrip("/") + attempt_path(job_id, attempt)


def mint(secret: bytes, job_id: str, attempt: int, expires: float) -> str:
    """The token of one attempt, valid until ``expires`` (epoch seconds, rounded up to the
    second: cut down, a call near the end of the grace would be refused before it ends)."""
    body = _b64(f"{job_id}/{attempt}/{math.ceil(expires)}".encode())
    return f"{PREFIX}.{body}.{_tag(secret, body)}"


def check(secret: bytes, token: str, job_id: str, attempt: int, now: float) -> float:
    """The expiry of ``token`` once it verifies for that attempt of that job at ``now``;
    :class:`TokenError` otherwise. The tag is checked before anything in the body is read."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("token-invalid", "the attempt token is missing or malformed")
    prefix, _, rest = token.partition(".")
    body, _, tag = rest.partition(".")
    if prefix != PREFIX or not body or not tag:
        raise TokenError("token-invalid", "the attempt token is missing or malformed")
    if not hmac.compare_digest(_tag(secret, body).encode(), tag.encode("utf-8", "replace")):
        raise TokenError("token-invalid", "the attempt token does not verify")
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        jid, n, exp = text.split("/")
        got_attempt, expires = int(n), float(int(exp))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("token-invalid", "the attempt token is malformed") from None
    if jid != job_id or got_attempt != attempt:
        raise TokenError("token-scope", "the attempt token is for another attempt's URL")
    if now >= expires:
        raise TokenError("token-expired", "the attempt token expired with its attempt")
    return expires
