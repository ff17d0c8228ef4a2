"""A client-side rate limiter for the Fly Machines API, shared by every thread.

Fly limits requests per action and per identifier (the app for a create or a list, the
machine for the rest): 1 request/s with bursts of 3, except Get Machine at 5/s with bursts of
10 (Fly docs, "Working with the Machines API"). :class:`RateLimiter` keeps one token bucket
per (action, identifier) with those limits. A request *reserves* a token and learns how long
to wait before sending; a bucket may go into debt, so callers queue in reservation order and
none starves: a thread waits for its turn in :meth:`RateLimiter.acquire`.

Fly counts a request when it arrives, and this side when it is reserved: between the two,
threads, the GIL and the network add jitter, and a burst whose first request arrives late
makes the next ones look early. So each bucket leaves ``spare`` tokens of Fly's burst unused
(one by default: bursts of 2 for creates, 9 for gets) and refills a little slower than Fly's
(``headroom``, 5%), which absorbs that jitter. Other processes have buckets of their own: the
429 retries in :mod:`balloons.fly.client` cover them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """``rate`` requests per second, in bursts of up to ``burst``."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"a limit needs rate > 0 and burst >= 1, got {self}")


#: Fly's documented limit of every action but Get Machine.
DEFAULT_LIMIT = Limit(rate=1.0, burst=3.0)
#: Fly's documented limits by action, where they differ from :data:`DEFAULT_LIMIT`.
FLY_LIMITS: Mapping[str, Limit] = {"get": Limit(rate=5.0, burst=10.0)}
#: Fraction by which buckets refill slower than Fly's own.
DEFAULT_HEADROOM = 0.05
#: Tokens of Fly's burst left unused, against arrival jitter.
DEFAULT_SPARE = 1.0
#: Buckets kept before full (idle) ones are dropped.
_PRUNE_AT = 1024


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self, now: float) -> float:
        self.refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def wait(self, now: float) -> float:
        """What :meth:`reserve` would return now, leaving the bucket as it is."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class RateLimiter:
    """Token buckets per (action, identifier); thread-safe.

    ``limits`` overrides the limit of given actions (default :data:`FLY_LIMITS`), ``default``
    applies to the others; ``headroom`` and ``spare`` are the safety margins described in the
    module docstring; ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        limits: Mapping[str, Limit] | None = None,
        default: Limit = DEFAULT_LIMIT,
        *,
        headroom: float = DEFAULT_HEADROOM,
        spare: float = DEFAULT_SPARE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0.0 <= headroom < 1.0:
            raise ValueError(f"headroom must be in [0, 1), got {headroom!r}")
        self.limits = dict(FLY_LIMITS if limits is None else limits)
        self.default = default
        self.headroom = headroom
        if spare < 0:
            raise ValueError(f"spare must not be negative, got {spare!r}")
        self.spare = spare
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(default={self.default}, limits={self.limits})"

    def limit(self, action: str) -> Limit:
        """The rate limit of ``action`` (Fly's documented limit, else the default)."""
        return self.limits.get(action, self.default)

    def reserve(self, action: str, scope: str) -> float:
        """Take a token for ``action`` on ``scope``; the seconds to wait before sending."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get((action, scope))
            if bucket is None:
                if len(self._buckets) >= _PRUNE_AT:
                    self._prune(now)
                limit = self.limit(action)
                rate = limit.rate * (1.0 - self.headroom)
                burst = max(1.0, limit.burst - self.spare)
                bucket = self._buckets[(action, scope)] = _Bucket(rate, burst, now)
            return bucket.reserve(now)

    def delay(self, action: str, scope: str) -> float:
        """The seconds a reservation for ``action`` on ``scope`` would wait now, without
        taking a token (0: it would go at once)."""
        with self._lock:
            bucket = self._buckets.get((action, scope))
            return 0.0 if bucket is None else bucket.wait(self._clock())

    def acquire(self, action: str, scope: str) -> float:
        """Block the calling thread until ``action`` on ``scope`` may be sent; the wait."""
        delay = self.reserve(action, scope)
        if delay > 0:
            self._sleep(delay)
        return delay

    def _prune(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self._buckets[key]
