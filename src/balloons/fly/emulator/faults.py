"""Seeded fault injection: the ways the real Fly API fails, on demand.

Every random decision is drawn from its own :class:`random.Random` stream derived from
``seed`` (one stream per fault kind), in request order, so a run with the same seed and the
same sequence of requests meets the same faults: a failing test can be replayed. Rate limiting
is the one time-based fault; it reads an injectable clock so tests can freeze time.

Faults, checked in this order for each API call:

1. ``rate_limit``: a token bucket per (action, app or machine) with Fly's documented limits
   (NOTES §5): 1 request/s with a burst of 3 per action, Get Machine 5/s with a burst of 10.
   An empty bucket answers 429.
2. ``error_rates``: per action, the chance of a 500 or 503 before the call has any effect.
3. ``capacity_refusal_rate`` / ``capacity_refusal_by_region`` (create and start only): the
   chance of 412 or 503 ``{"error": "...insufficient capacity...", "status":
   "insufficient_capacity"}``.
4. ``lost_response_rate`` (machine create only): the machine *is* created, but the answer is a
   503, as when a response is lost on the way back; clients must create idempotently.
5. ``kill_rate``: per running machine, kills per second (a Poisson process): the machine gets
   SIGKILL at a random moment, its exit event showing signal 9.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import ApiError

#: The actions faults and rate limits are keyed by (``create`` is machine create).
ACTIONS = frozenset({
    "app_create", "app_get", "app_list", "app_delete", "secrets",
    "create", "list", "get", "update", "start", "stop", "restart", "signal", "wait",
    "delete", "events", "metadata", "lease",
})  # fmt: skip

#: Fly's limits (NOTES §5): (refill per second, burst) per action and identifier.
DEFAULT_LIMIT = (1.0, 3.0)
ACTION_LIMITS: Mapping[str, tuple[float, float]] = {"get": (5.0, 10.0)}


@dataclass(frozen=True)
class Faults:
    """Which faults to inject; the default injects none.

    Rates are probabilities in [0, 1] except ``kill_rate``, which is kills per second of a
    machine's run time.
    """

    #: Seed of every random decision; ``None`` draws a fresh seed.
    seed: int | None = None
    #: Chance per call of an injected 500/503, by action (see :data:`ACTIONS`).
    error_rates: Mapping[str, float] = field(default_factory=dict)
    #: Enforce Fly's per-action token buckets (429 when empty).
    rate_limit: bool = False
    #: Seconds between a machine being asked to start and it reaching ``started``.
    boot_delay: float = 0.0
    #: Chance that a create or start is refused for lack of capacity, any region.
    capacity_refusal_rate: float = 0.0
    #: The same chance for given regions, overriding ``capacity_refusal_rate`` there.
    capacity_refusal_by_region: Mapping[str, float] = field(default_factory=dict)
    #: Kills per second of run time, per machine.
    kill_rate: float = 0.0
    #: Chance that a successful machine create answers 503 anyway.
    lost_response_rate: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.error_rates) - ACTIONS
        if unknown:
            raise ValueError(
                f"unknown action(s) in error_rates: {sorted(unknown)}; expected {sorted(ACTIONS)}"
            )
        rates = {
            **{f"error_rates[{k}]": v for k, v in self.error_rates.items()},
            **{f"capacity_refusal_by_region[{k}]": v
               for k, v in self.capacity_refusal_by_region.items()},
            "capacity_refusal_rate": self.capacity_refusal_rate,
            "lost_response_rate": self.lost_response_rate,
        }  # fmt: skip
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {rate!r}")
        if self.kill_rate < 0 or self.boot_delay < 0:
            raise ValueError("kill_rate and boot_delay must not be negative")


class _TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FaultInjector:
    """Applies a :class:`Faults` policy; thread-safe."""

    def __init__(self, faults: Faults, clock: Callable[[], float] = time.monotonic) -> None:
        self.faults = faults
        seed = faults.seed if faults.seed is not None else random.SystemRandom().getrandbits(64)
        self.seed = seed
        # One stream per fault kind, so enabling one fault does not shift another's draws.
        self._errors = random.Random(f"{seed}:errors")
        self._capacity = random.Random(f"{seed}:capacity")
        self._lost = random.Random(f"{seed}:lost")
        self._kills = random.Random(f"{seed}:kills")
        self._clock = clock
        self._buckets: dict[tuple[str, str], _TokenBucket] = {}
        self._lock = threading.Lock()

    def check_rate_limit(self, action: str, scope: str) -> None:
        """Raise 429 if ``action`` on ``scope`` (an app or machine id) is over its limit."""
        if not self.faults.rate_limit:
            return
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get((action, scope))
            if bucket is None:
                rate, burst = ACTION_LIMITS.get(action, DEFAULT_LIMIT)
                bucket = self._buckets[(action, scope)] = _TokenBucket(rate, burst, now)
            if not bucket.take(now):
                raise ApiError(429, f"rate limit exceeded for {action} on {scope}")

    def check_error(self, action: str) -> None:
        """Raise an injected 500/503 with the configured chance for ``action``."""
        rate = self.faults.error_rates.get(action, 0.0)
        if rate <= 0.0:
            return
        with self._lock:
            if self._errors.random() >= rate:
                return
            status = self._errors.choice((500, 503))
        raise ApiError(status, f"internal error (injected fault on {action})")

    def check_capacity(self, region: str) -> None:
        """Raise a capacity refusal (412 or 503) with the configured chance for ``region``."""
        rate = self.faults.capacity_refusal_by_region.get(region, self.faults.capacity_refusal_rate)
        if rate <= 0.0:
            return
        with self._lock:
            if self._capacity.random() >= rate:
                return
            status = self._capacity.choice((412, 503))
        raise ApiError(
            status,
            f"insufficient capacity: could not reserve resource for machine in region {region}",
            status="insufficient_capacity",
        )

    def lose_response(self) -> bool:
        """Whether this successful create's answer is to be lost."""
        rate = self.faults.lost_response_rate
        if rate <= 0.0:
            return False
        with self._lock:
            return self._lost.random() < rate

    def kill_after(self) -> float | None:
        """Seconds of run time after which a starting machine gets SIGKILL, or ``None``."""
        if self.faults.kill_rate <= 0.0:
            return None
        with self._lock:
            return self._kills.expovariate(self.faults.kill_rate)
