"""A small client of the Fly Machines REST API: auth, rate limits, retries, clear errors.

:class:`FlyClient` sends one logical request (``httpx.Client``) and either returns the
decoded JSON answer or raises :class:`~balloons.errors.FlyAPIError`. Around each try it:

* waits for the shared :class:`~balloons.fly.ratelimit.RateLimiter`;
* retries, with exponential back-off and jitter (:class:`RetryPolicy`), what was certainly
  not carried out: 429 (honouring ``Retry-After``), connection failures; and what may have
  been, when that is safe: 408, 5xx and lost answers of idempotent requests (GET, DELETE,
  stop). A non-idempotent request (a machine create) is retried after those only with a
  ``recover`` callback, called before each new try to find what the earlier one did: if it
  returns something, that is the answer and nothing is sent again. A 409 (name taken) goes
  straight to ``recover`` as well;
* raises :class:`CapacityRefusal` at once for a capacity refusal (``insufficient_capacity``,
  or 412 on a create), so that the caller can decide between waiting and another region.

Messages name what to fix (the token, the app, the URL) and carry Fly's error text and the
``fly-request-id``; the token never appears in one. httpx is imported here only: the worker
never imports this module.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import FlyAPIError
from . import stats
from .ratelimit import RateLimiter

#: Seconds to connect, and to wait for any answer.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
#: Macaroon token prefixes, which Fly expects under the ``FlyV1`` scheme (fly-go ``tokens``).
_MACAROON_PREFIXES = ("fm1r_", "fm1a_", "fm2_")
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "DELETE", "PUT"})
_MAX_ERROR_TEXT = 500


def auth_header(token: str) -> str:
    """The ``Authorization`` value for ``token``: ``FlyV1`` for macaroons, else ``Bearer``."""
    token = token.strip()
    if token.startswith("FlyV1 "):
        return token
    if token.startswith("Bearer "):
        token = token.removeprefix("Bearer ").strip()
    if token.startswith(_MACAROON_PREFIXES):
        return f"FlyV1 {token}"
    return f"Bearer {token}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried again.

    ``attempts`` tries in all (the first included); the n-th back-off is drawn from
    ``[d/2, d]`` with ``d = min(cap, base * 2**(n-1))`` ("equal jitter"); a ``Retry-After``
    longer than that is honoured up to ``max_retry_after`` seconds.
    """

    attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < self.base:
            raise ValueError(f"invalid retry policy {self}")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ceiling = min(self.cap, self.base * 2.0 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class CapacityRefusal(FlyAPIError):
    """Fly has no capacity for this machine where it was asked for (a create or start)."""


@dataclass
class _Step:
    """What to do after one try: return ``value``, raise ``error``, or wait ``delay`` and
    try again (calling ``recover`` first when ``recover`` is set)."""

    done: bool = False
    value: Any = None
    error: FlyAPIError | None = None
    delay: float = 0.0
    recover: bool = False


def _app_of(path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "apps" else "?"


def _body_of(response: httpx.Response) -> tuple[str, str]:
    """Fly's ``error`` text and ``status`` field from an error answer."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_MAX_ERROR_TEXT].strip(), ""
    if isinstance(body, dict):
        text = body.get("error") or body.get("message") or ""
        return str(text)[:_MAX_ERROR_TEXT], str(body.get("status") or "")
    return str(body)[:_MAX_ERROR_TEXT], ""


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def explain(status: int, error: str, method: str, path: str) -> str:
    """A message for an error answer that says what to fix."""
    app = _app_of(path)
    if status == 401:
        return (
            f"the Fly Machines API refused the API token (401: {error or 'unauthorized'}): "
            f"set FLY_API_TOKEN to a token for app {app!r}, e.g. the output of "
            f"`fly tokens create deploy -a {app}`"
        )
    if status == 403:
        return (
            f"the API token may not use app {app!r} (403: {error or 'forbidden'}): use a token "
            f"of the organization that owns it (`fly tokens create deploy -a {app}`)"
        )
    if status == 404 and "app not found" in error.lower():
        return (
            f"Fly app {app!r} not found (404: {error}): set BALLOONS_FLY_APP (or FLY_APP_NAME) "
            f"to the app the job machines belong to, or create it with `fly apps create {app}`"
        )
    return f"the Fly Machines API answered {status} to {method} {path}: {error or '(no text)'}"


class FlyClient:
    """Requests to the Machines API at ``base_url`` with ``token``.

    ``http``: the httpx client to send with (made on first use when not given). ``limiter``:
    shared by everything that uses this client (default Fly's documented limits). ``retry``: a
    :class:`RetryPolicy`. ``rng`` and ``sleep`` are injectable for tests. ``repr`` never shows
    the token.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        http: httpx.Client | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = auth_header(token)
        self._http = http
        self._own_http = http is None
        self.limiter = limiter or RateLimiter()
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._sleep = sleep
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FlyClient({self.base_url!r})"

    # ------------------------------------------------------------------- http clients
    @property
    def http(self) -> httpx.Client:
        """The sync httpx client, made on first use and shared by the process's threads."""
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(
                    timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
                )
            return self._http

    def close(self) -> None:
        """Close the sync httpx client if this object made it."""
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None

    # ---------------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        path: str,
        *,
        action: str,
        scope: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        recover: Callable[[], Any] | None = None,
    ) -> Any:
        """Send ``method /v1{path}``; the decoded JSON answer (``None`` if empty).

        ``action`` and ``scope`` (an app name or machine id) key the rate limit;
        ``recover`` makes a non-idempotent request safe to retry (see the module docstring).
        """
        idem = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        tries = 0
        while True:
            tries += 1
            self.limiter.acquire(action, scope)
            try:
                response = self.http.request(
                    method, self._url(path), json=json, params=params, headers=self._headers()
                )
            except httpx.TransportError as exc:
                stats.count(action, None)
                step = self._after_error(exc, method, path, tries, idem, recover is not None)
            else:
                stats.count(action, response.status_code)
                step = self._after_response(response, method, path, tries, idem, recover)
            if step.done:
                return step.value
            if step.recover and recover is not None:
                found = recover()
                if found is not None:
                    return found
            if step.error is not None:
                raise step.error
            self._sleep(step.delay)

    # ---------------------------------------------------------------------- decisions
    def _url(self, path: str) -> str:
        return f"{self.base_url}/v1{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._auth, "Accept": "application/json"}

    def backoff(self, tries: int) -> float:
        """A jittered back-off before retry number ``tries`` (1-based)."""
        with self._rng_lock:
            return self.retry.backoff(tries, self._rng)

    def _again(self, tries: int, error: FlyAPIError, delay: float, recover: bool) -> _Step:
        """Retry after ``delay`` if tries remain, else give up with ``error``."""
        if tries >= self.retry.attempts:
            # The last try may still have taken effect: let ``recover`` look once more.
            return _Step(error=error, recover=recover)
        return _Step(delay=delay, recover=recover)

    def _after_error(
        self,
        exc: httpx.TransportError,
        method: str,
        path: str,
        tries: int,
        idempotent: bool,
        can_recover: bool,
    ) -> _Step:
        sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not sent:
            error = FlyAPIError(
                f"cannot reach the Fly Machines API at {self.base_url} ({what}) after "
                f"{tries} tries: check BALLOONS_FLY_API_URL and the network",
                method=method,
                path=path,
            )
            return self._again(tries, error, self.backoff(tries), recover=False)
        error = FlyAPIError(
            f"no answer from the Fly Machines API at {self.base_url} to {method} {path} "
            f"({what}) after {tries} tries",
            method=method,
            path=path,
        )
        if idempotent:
            return self._again(tries, error, self.backoff(tries), recover=False)
        if can_recover:
            return self._again(tries, error, self.backoff(tries), recover=True)
        return _Step(error=error)

    def _after_response(
        self,
        response: httpx.Response,
        method: str,
        path: str,
        tries: int,
        idempotent: bool,
        recover: object,
    ) -> _Step:
        status = response.status_code
        if status < 400:
            if not response.content:
                return _Step(done=True)
            try:
                return _Step(done=True, value=response.json())
            except ValueError:
                return _Step(done=True, value=response.text)
        text, fly_status = _body_of(response)
        request_id = response.headers.get("fly-request-id")
        fields: dict[str, Any] = {
            "status": status, "error": text, "request_id": request_id,
            "method": method, "path": path,
        }  # fmt: skip
        if fly_status == "insufficient_capacity" or (status == 412 and method == "POST"
                                                     and path.endswith("/machines")):  # fmt: skip
            return _Step(error=CapacityRefusal(explain(status, text, method, path), **fields))
        error = FlyAPIError(explain(status, text, method, path), **fields)
        if status == 429:
            delay = self.backoff(tries)
            hinted = _retry_after(response)
            if hinted is not None:
                delay = max(delay, min(hinted, self.retry.max_retry_after))
            return self._again(tries, error, delay, recover=False)
        if status == 408 or status >= 500:
            if idempotent:
                return self._again(tries, error, self.backoff(tries), recover=False)
            if recover is not None:
                return self._again(tries, error, self.backoff(tries), recover=True)
        if status == 409 and recover is not None:
            return _Step(error=error, recover=True)
        return _Step(error=error)
