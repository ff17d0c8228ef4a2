"""Who may use the dashboard: one token, a signed session cookie, CSRF tokens, Origin checks.

A request is let in by ``Authorization: Bearer TOKEN`` or by the session cookie that the login
form sets (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https). The cookie holds a random
session id, its issue time and an HMAC under a key derived from the token, never the token
itself, so changing the token ends every session. Each session has a CSRF token (an HMAC of its
id) that every form carries; a POST made with the cookie must carry it and come from the
dashboard's own origin. A POST made with a bearer header carries its credential explicitly and
cannot be forged by another site, so it needs neither.

:class:`TokenAuth` keeps only digests of the token: it cannot leak it through a repr or a page.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from ..errors import ConfigError

COOKIE = "balloons_dashboard"
#: Seconds a login lasts.
SESSION_TTL = 12 * 3600
#: Shortest token accepted: a guessable token would make the rest moot.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Session:
    """An authenticated request: ``via`` is ``"bearer"`` or ``"cookie"``."""

    via: str
    csrf: str = ""


class TokenAuth:
    """Checks tokens, issues and verifies session cookies and CSRF tokens."""

    def __init__(self, token: str | None) -> None:
        if not token:
            raise ConfigError(
                "the dashboard needs a token: set BALLOONS_DASHBOARD_TOKEN or pass token=..."
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"the dashboard token is {len(token)} characters long: expected at least "
                f"{MIN_TOKEN_LENGTH} (python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        raw = token.encode()
        self._digest = hashlib.sha256(raw).digest()
        self._key = hmac.new(raw, b"balloons/dashboard/session", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "TokenAuth(token=***)"

    def token_ok(self, candidate: str) -> bool:
        """Constant-time comparison (of digests, so the length does not leak either)."""
        got = hashlib.sha256(candidate.encode("utf-8", "replace")).digest()
        return hmac.compare_digest(got, self._digest)

    # ----------------------------------------------------------------- sessions
    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def new_cookie(self, now: float | None = None) -> str:
        """A new session cookie: a random session id and its issue time, signed."""
        sid = secrets.token_urlsafe(18)
        issued = str(int(now if now is not None else time.time()))
        return f"{sid}.{issued}.{self._mac(f'{sid}.{issued}')}"

    def session_id(self, cookie: str, now: float | None = None) -> str | None:
        """The session id of a valid, unexpired cookie, else None."""
        sid, _, rest = cookie.partition(".")
        issued, _, mac = rest.partition(".")
        if not sid or not issued.isdigit() or not mac:
            return None
        if not _same(self._mac(f"{sid}.{issued}"), mac):
            return None
        age = (now if now is not None else time.time()) - int(issued)
        return sid if 0 <= age <= SESSION_TTL else None

    def csrf_token(self, sid: str) -> str:
        """The CSRF token of session ``sid`` (forms must carry it)."""
        return self._mac(f"csrf:{sid}")[:40]

    # ----------------------------------------------------------------- requests
    def authenticate(self, conn: HTTPConnection) -> Session | None:
        """The request's session: a valid bearer token, else a valid session cookie; ``None``
        when neither."""
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return Session("bearer") if self.token_ok(value.strip()) else None
        sid = self.session_id(conn.cookies.get(COOKIE, ""))
        return Session("cookie", self.csrf_token(sid)) if sid else None

    def post_allowed(self, conn: HTTPConnection, session: Session | None, form_csrf: str) -> str:
        """``""`` if a state-changing request may proceed, else why not."""
        if session is not None and session.via == "bearer":
            return ""
        if not same_origin(conn):
            return "the request did not come from this dashboard (Origin check)"
        if session is None:
            return ""  # the login form: nothing to protect yet but the Origin
        if not form_csrf or not _same(form_csrf, session.csrf):
            return "the form's CSRF token is missing or stale: reload the page and try again"
        return ""


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of a credential sent by the client (any text: compared as
    UTF-8, where ``compare_digest`` raises for a ``str`` that is not ASCII) and ours."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def same_origin(conn: HTTPConnection) -> bool:
    """True when the ``Origin`` (else ``Referer``) header names this server's own host."""
    source = conn.headers.get("origin") or conn.headers.get("referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc == conn.url.netloc
