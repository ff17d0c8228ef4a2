"""Job callbacks, delivered: a job submitted with a ``callback`` gets its end POSTed as a
signed CloudEvent (:mod:`balloons.service.webhooks`), at least once.

* At submit the service writes the job's hook record and outbox entry (``HOOK_REGISTER``:
  ``NS:{POOL}:hook:ULID``, ``NS:{POOL}:outbox``). The entry waits at ``+inf`` until the job
  ends; every script that ends a job (``end_attempt``, ``CANCEL``, a refused replay) makes
  it due in the same script, whoever ends it: its machine, the supervisor, a cancel, a
  timeout. A job that had already ended when its callback was registered is due at once.
* :class:`Deliverer`, a thread of every ``balloons serve``, takes the due entries
  (``HOOK_CLAIM``: the attempt counted, the entry put off by a lease, so that two service
  processes do not make the same attempt), POSTs the event with a timeout, and records the
  attempt on the hook record (``HOOK_RECORD``): delivered on a 2xx, given up on ``410 Gone``
  or after :data:`ATTEMPTS` attempts, else retried after an exponential backoff with jitter.
  A service that dies mid-attempt leaves the entry to the next when its lease ends; one
  restarted finds the entries where they were.
* The event's ``webhook-id`` is the same on every attempt, so a receiver drops duplicates.

:func:`busy` tells the idle exit to wait while a delivery is due soon or a job with a callback
has yet to end.
"""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import ConfigError
from ..store import lua
from ..store.keys import ULID_RE, JobKeys, PoolKeys
from ..untrusted import integer, number, timestamp
from . import resources, webhooks
from .problems import Problem

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("balloons.service.callbacks")

#: Attempts per event, at most.
ATTEMPTS = 8
#: Seconds before the second attempt; each later one waits twice as long, up to :data:`CAP`,
#: with jitter (half of it random).
BACKOFF = 5.0
CAP = 1800.0
#: Seconds one attempt may take to connect, and to send or read each part of it.
TIMEOUT = 10.0
#: Seconds between two looks at the outboxes.
POLL = 0.5
#: Seconds between two looks at the jobs whose callback waits for their end (a job that
#: ended without making its entry due: written by scripts older than callbacks).
SWEEP = 30.0
#: Entries taken per pool and look.
BATCH = 100
#: Deliveries made at once.
WORKERS = 4
#: Bytes of a receiver's answer read (the rest is dropped).
MAX_ANSWER = 64 * 1024
_TERMINAL = (b"SUCCEEDED", b"FAILED", b"CANCELLED")
_AGENT = f"balloons/{__version__}"


def check_secret(
    callback: webhooks.Callback | None, service_secret: webhooks.WebhookSecret | None
) -> None:
    """A 422 problem for a callback that would have no secret to be signed with."""
    if callback is not None and callback.secret is None and service_secret is None:
        raise Problem(
            422,
            "callback-secret-required",
            "this service has no webhook secret (BALLOONS_WEBHOOK_SECRET) to sign the "
            "callback with: give callback.secret ('whsec_...') or set one",
        )


async def register(app: App, job_id: str, callback: webhooks.Callback) -> None:
    """Record a submitted job's callback (``HOOK_REGISTER``)."""
    jk = JobKeys.of(app.settings.namespace, job_id)
    secret = app.store.signing_key()
    if secret is None:  # the app refuses to submit without one: never reached
        raise ConfigError("a callback is tagged with the app's secret, and none is set")
    spec = webhooks.spec_of(callback, secret, job_id)
    tag = webhooks.tag_spec(secret, job_id, spec)
    args = (jk.ulid, spec, tag, app.settings.record_ttl)
    await app.store.eval_async(lua.HOOK_REGISTER, jk.pool, *args, jobs=(jk.ulid,))


def backoff(attempt: int, base: float = BACKOFF, cap: float = CAP) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): exponential, capped, the
    upper half random."""
    full = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return full / 2 + random.uniform(0, full / 2)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body`` to ``url``; the answer's status (redirects are not followed)."""
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={**headers, "user-agent": _AGENT})
        answer = conn.getresponse()
        answer.read(MAX_ANSWER)
        return answer.status
    finally:
        conn.close()


class Deliverer:
    """Delivers the due callbacks of an app's jobs: :meth:`step` once, or :meth:`start` a
    thread that steps every :data:`POLL` seconds. ``secret`` is the service's
    (``BALLOONS_WEBHOOK_SECRET``), for the callbacks that give none of their own."""

    def __init__(
        self,
        app: App,
        secret: webhooks.WebhookSecret | None = None,
        *,
        attempts: int = ATTEMPTS,
        base: float = BACKOFF,
        cap: float = CAP,
        timeout: float = TIMEOUT,
        poll: float = POLL,
        source: str | None = None,
    ) -> None:
        self.app = app
        self.secret = secret
        self.attempts = attempts
        self.base, self.cap, self.timeout, self.poll = base, cap, timeout, poll
        self.source = source or f"/balloons/{app.settings.namespace}"
        #: Seconds an attempt holds its entry: another process retries after it.
        self.lease = 2 * timeout + 10
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._swept = 0.0

    def __repr__(self) -> str:
        return f"Deliverer(namespace={self.app.settings.namespace!r})"

    # ------------------------------------------------------------------ loop
    def start(self) -> Deliverer:
        """Deliver in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="balloons-callbacks", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (an attempt in flight ends first, within its timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # Redis unreachable, say: the next look tries again
                log.warning("callbacks: %s", exc)
            self._stop.wait(self.poll)

    def step(self) -> int:
        """Make every delivery due now; how many attempts were made."""
        store = self.app.store
        now = store.server_time()
        if now - self._swept >= SWEEP:
            self._swept = now
            self.sweep()
        due: list[tuple[PoolKeys, bytes]] = []
        for pool in store.pools():
            pk = PoolKeys(self.app.settings.namespace, pool)
            with store.errors():
                members = store.redis.zrangebyscore(pk.outbox, "-inf", now, start=0, num=BATCH)
            due += [(pk, m) for m in members]
        if not due:
            return 0
        with ThreadPoolExecutor(min(WORKERS, len(due))) as pool_:
            made = list(pool_.map(lambda d: self.deliver(*d), due))
        return sum(made)

    def sweep(self) -> None:
        """Make due the waiting entries whose job has ended (an end no script announced), and
        drop those whose job is gone."""
        store = self.app.store
        for pool in store.pools():
            pk = PoolKeys(self.app.settings.namespace, pool)
            with store.errors():
                waiting = store.redis.zrangebyscore(pk.outbox, "+inf", "+inf", start=0, num=500)
                if not waiting:
                    continue
                pipe = store.redis.pipeline(transaction=False)
                for m in waiting:
                    pipe.hget(pk.job(m.decode("ascii", "replace")), "status")
                statuses = pipe.execute()
                for m, status in zip(waiting, statuses, strict=True):
                    if status is None:
                        store.redis.zrem(pk.outbox, m)
                    elif status in _TERMINAL:
                        store.redis.zadd(pk.outbox, {m: 0}, lt=True)

    # -------------------------------------------------------------- delivery
    def deliver(self, pk: PoolKeys, member: bytes) -> int:
        """Make the due delivery of one job's callback (``member`` of the pool's outbox), if
        still due; 1 if an attempt was made."""
        store = self.app.store
        ulid = member.decode("ascii", "replace")
        if not ULID_RE.match(ulid):  # not a member balloons wrote
            with store.errors():
                store.redis.zrem(pk.outbox, member)
            return 0
        claim = store.eval(lua.HOOK_CLAIM, pk, ulid, self.lease, jobs=(ulid,))
        if not isinstance(claim, list) or len(claim) < 5 or claim[0] != 1:
            return 0
        n = integer(claim[1], 1, 10**9) or 1
        at = number(claim[4], 0, 1e11) or time.time()
        job_id = f"{pk.pool}.{ulid}"
        callback = webhooks.open_spec(store.signing_key(), job_id, claim[2], claim[3])
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        if callback is None:
            return self._record(pk, ulid, n, at, None, _UNVERIFIED, 0, final="invalid")
        try:
            status = self._attempt(job_id, callback)
        except _Refused as exc:
            error = str(exc)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        ms = int((time.monotonic() - started) * 1000)
        if status is not None and 200 <= status < 300:
            return self._record(pk, ulid, n, at, status, None, ms, final="delivered")
        if status == 410:
            return self._record(pk, ulid, n, at, status, "410 Gone: not sent again", ms, "gone")
        if n >= self.attempts:
            log.warning(
                "callback of job %s: gave up after %d attempts (last: %s)",
                job_id,
                n,
                error or status,
            )
            return self._record(pk, ulid, n, at, status, error, ms, final="failed")
        return self._record(pk, ulid, n, at, status, error, ms, retry=self._backoff(n))

    def _backoff(self, n: int) -> float:
        return backoff(n, self.base, self.cap)

    def _attempt(self, job_id: str, callback: webhooks.Callback) -> int:
        store = self.app.store
        jk = JobKeys.of(self.app.settings.namespace, job_id)
        raw = store.run(resources.read(jk))
        if raw is None:
            raise _Refused("the job's record is gone")
        job = resources.resource(self.app, job_id, raw)
        if job["state"] not in resources.TERMINAL_STATES:
            raise _Refused(f"the job has not ended (state {job['state']})")
        job["callback"] = {"url": callback.url}
        secret = callback.secret or self.secret
        if secret is None:
            raise _Refused(
                "no secret to sign with: the callback gave none and the service has no "
                "BALLOONS_WEBHOOK_SECRET"
            )
        body = webhooks.event(job, self.source)
        headers = webhooks.headers(secret.key, webhooks.message_id(job_id), int(time.time()), body)
        return post(callback.url, body, headers, self.timeout)

    def _record(
        self,
        pk: PoolKeys,
        ulid: str,
        n: int,
        at: float,
        status: int | None,
        error: str | None,
        ms: int,
        final: str = "",
        retry: float | None = None,
    ) -> int:
        record = webhooks.delivery_record(n, resources.rfc3339(at) or "", status, error, ms)
        after = "" if retry is None else f"{retry:.3f}"
        self.app.store.eval(lua.HOOK_RECORD, pk, ulid, n, record, after, final, jobs=(ulid,))
        return 1


class _Refused(Exception):
    """An attempt not sent: the reason, as recorded."""


_UNVERIFIED = "the callback's record does not verify with the app's secret: never sent"


def busy(app: App, horizon: float) -> bool:
    """Whether a delivery falls due within ``horizon`` seconds (the Redis server's clock), or a
    job with a callback has yet to end (unless it waits for a due time past the horizon)."""
    store = app.store
    now = store.server_time()
    until = now + horizon
    for pool in store.pools():
        pk = PoolKeys(app.settings.namespace, pool)
        with store.errors():
            if store.redis.zrangebyscore(pk.outbox, "-inf", until, start=0, num=1):
                return True
            waiting = store.redis.zrangebyscore(pk.outbox, "+inf", "+inf", start=0, num=200)
            if not waiting:
                continue
            pipe = store.redis.pipeline(transaction=False)
            for m in waiting:
                pipe.hmget(pk.job(m.decode("ascii", "replace")), ["status", "due"])
            for status, due in pipe.execute():
                if status is None:
                    continue
                when = timestamp(due)
                if status != b"QUEUED" or when is None or when <= until:
                    return True
    return False
