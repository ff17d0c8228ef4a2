"""Token checks, session cookies and CSRF tokens (pure logic)."""

from __future__ import annotations

import httpx
import pytest

from balloons.dashboard.auth import SESSION_TTL, TokenAuth
from balloons.dashboard.server import is_loopback, resolve_token
from balloons.errors import ConfigError

TOKEN = "a-long-enough-token-0123456789"


def test_tokens_compare_exactly_and_never_show() -> None:
    auth = TokenAuth(TOKEN)
    assert auth.token_ok(TOKEN)
    assert not auth.token_ok(TOKEN[:-1]) and not auth.token_ok(TOKEN + "x")
    assert not auth.token_ok("")
    assert TOKEN not in repr(auth) and TOKEN not in str(vars(auth))


def test_session_cookies_are_signed_expire_and_die_with_the_token() -> None:
    auth = TokenAuth(TOKEN)
    cookie = auth.new_cookie(now=1_000_000)
    assert TOKEN not in cookie
    sid = auth.session_id(cookie, now=1_000_100)
    assert sid and cookie.startswith(sid)
    assert auth.session_id(cookie, now=1_000_000 + SESSION_TTL + 1) is None
    assert auth.session_id(cookie, now=999_000) is None
    sid_, issued, mac = cookie.split(".")
    assert auth.session_id(f"{sid_}x.{issued}.{mac}", now=1_000_100) is None
    assert auth.session_id(f"{sid_}.{int(issued) + 1}.{mac}", now=1_000_100) is None
    assert auth.session_id("garbage", now=1_000_100) is None
    assert TokenAuth(TOKEN + "-rotated").session_id(cookie, now=1_000_100) is None
    other = auth.session_id(auth.new_cookie(now=1_000_000), now=1_000_100)
    assert other and auth.csrf_token(sid) != auth.csrf_token(other)
    assert auth.csrf_token(sid) == auth.csrf_token(sid)


def test_missing_or_short_tokens_are_refused() -> None:
    with pytest.raises(ConfigError, match="BALLOONS_DASHBOARD_TOKEN"):
        TokenAuth("")
    with pytest.raises(ConfigError, match="5 characters long: expected at least 16"):
        TokenAuth("short")


def test_loopback_only_without_a_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.0.0.2") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("example.com")
    for host in ("0.0.0.0", "::", "10.0.0.1", "dash.example.com"):
        with pytest.raises(ConfigError, match=f"refusing to serve the dashboard on '{host}'"):
            resolve_token(host, None, tmp_path)
    assert resolve_token("0.0.0.0", TOKEN, tmp_path) == (TOKEN, None)
    made, kept = resolve_token("127.0.0.1", None, tmp_path / "state")
    assert kept is not None and kept.read_text().strip() == made and len(made) >= 16
    assert kept.stat().st_mode & 0o777 == 0o600
    assert resolve_token("127.0.0.1", None, tmp_path / "state") == (made, kept)


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("/jobs?status=FAILED", "/jobs?status=FAILED"),
        ("/balloons/jobs/default.x", "/balloons/jobs/default.x"),
        ("//evil.test/x", ""),
        ("/\t/evil.test", ""),
        ("/\\evil.test", ""),
        ("https://evil.test/", ""),
        ("javascript:alert(1)", ""),
        ("", ""),
    ],
)
def test_login_returns_only_to_local_paths(raw: str, kept: str) -> None:
    from balloons.dashboard.http import safe_next as _safe_next

    assert _safe_next(raw) == kept


@pytest.mark.slow
def test_credentials_that_are_not_ascii_are_refused_not_failed(dashboard) -> None:  # type: ignore[no-untyped-def]
    """``hmac.compare_digest`` raises ``TypeError`` for a ``str`` that is not ASCII: a session
    cookie with such a MAC made every page answer 500 to anyone, and a logged-in form with
    such a CSRF token too."""
    with dashboard.client() as anyone:
        for path in ("/jobs", "/pools", "/metrics", "/jobs/live"):
            raw = [(b"cookie", "balloons_dashboard=abc.1.\u00e9\u00e9".encode())]
            page = anyone.get(path, headers=raw)
            assert page.status_code == 401, (path, page.status_code, page.text[:300])
    with dashboard.login() as client:
        page = client.post(
            "/logout",
            content=b"csrf=%C3%A9%C3%A9",
            headers={"origin": dashboard.url, "content-type": "application/x-www-form-urlencoded"},
        )
        assert page.status_code == 403 and "CSRF" in page.text, page.text[:300]


@pytest.mark.slow
def test_a_huge_form_is_refused_unread(dashboard) -> None:  # type: ignore[no-untyped-def]
    """A POST's body was read whole before its size was checked: anyone could make the
    dashboard hold gigabytes (``/login`` needs no token). Now it reads no further than the
    limit."""
    sent = [0]
    chunk = b"token=" + b"x" * (64 * 1024 - 6)

    def body():  # type: ignore[no-untyped-def]
        for _ in range(3200):  # 200 MiB, if all of it were read
            sent[0] += len(chunk)
            yield chunk

    with dashboard.client() as client:
        try:
            page = client.post(
                "/login",
                content=body(),
                headers={
                    "origin": dashboard.url,
                    "content-type": "application/x-www-form-urlencoded",
                },
            )
        except httpx.HTTPError:
            pass  # the server answered and closed the connection while the body was on its way
        else:
            assert page.status_code in (401, 403, 413), page.status_code
        assert client.get("/login").status_code == 200  # the server still serves
    assert sent[0] < 32 * 1024 * 1024, f"{sent[0]:,} bytes were read"
