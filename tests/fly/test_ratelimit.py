"""The client-side rate limiter: pure logic on a fake clock."""

from __future__ import annotations

import threading

import pytest

from balloons.fly.ratelimit import DEFAULT_LIMIT, FLY_LIMITS, Limit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_documented_limits() -> None:
    assert Limit(rate=1.0, burst=3.0) == DEFAULT_LIMIT
    assert FLY_LIMITS["get"] == Limit(rate=5.0, burst=10.0)


def test_a_burst_of_three_then_one_per_second() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, headroom=0.0, spare=0.0)
    waits = [limiter.reserve("create", "app") for _ in range(6)]
    assert waits == [0.0, 0.0, 0.0, pytest.approx(1.0), pytest.approx(2.0), pytest.approx(3.0)]


def test_acquire_sleeps_and_tokens_come_back_with_time() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, headroom=0.0, spare=0.0)
    for _ in range(3):
        assert limiter.acquire("create", "app") == 0.0
    assert limiter.acquire("create", "app") == pytest.approx(1.0)
    assert clock.slept == [pytest.approx(1.0)]
    clock.now += 10  # idle: the bucket refills to its burst, not beyond
    assert [limiter.reserve("create", "app") for _ in range(4)] == [
        0.0, 0.0, 0.0, pytest.approx(1.0),
    ]  # fmt: skip


def test_get_machine_has_its_own_faster_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, headroom=0.0, spare=0.0)
    waits = [limiter.reserve("get", "m1") for _ in range(12)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == [pytest.approx(0.2), pytest.approx(0.4)]


def test_buckets_are_per_action_and_per_identifier() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, headroom=0.0, spare=0.0)
    for _ in range(3):
        limiter.reserve("create", "app-a")
    assert limiter.reserve("create", "app-a") > 0
    assert limiter.reserve("create", "app-b") == 0.0
    assert limiter.reserve("list", "app-a") == 0.0
    assert limiter.reserve("stop", "m1") == 0.0


def test_by_default_a_token_is_spare_and_refills_are_a_little_slower_than_flys() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    waits = [limiter.reserve("create", "app") for _ in range(4)]
    assert waits == [0.0, 0.0, pytest.approx(1 / 0.95), pytest.approx(2 / 0.95)]
    assert [limiter.reserve("get", "m") for _ in range(10)][-1] == pytest.approx(1 / 4.75)
    with pytest.raises(ValueError, match="spare"):
        RateLimiter(spare=-1)


def test_threads_share_one_limiter_and_queue_in_order() -> None:
    clock = Clock()  # frozen: every reservation is made "at once"
    limiter = RateLimiter(clock=clock, headroom=0.0, spare=0.0)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = limiter.reserve("create", "app")
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [0.0, 0.0, 0.0, *(pytest.approx(float(k)) for k in range(1, 18))]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        Limit(rate=0, burst=3)
    with pytest.raises(ValueError, match="headroom"):
        RateLimiter(headroom=1.0)


def test_idle_buckets_are_pruned() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for i in range(1100):
        limiter.reserve("get", f"m{i}")
    clock.now += 60
    limiter.reserve("get", "new")
    assert len(limiter._buckets) < 200


def test_delay_tells_the_wait_without_taking_a_token() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, headroom=0.0, spare=0.0)
    assert limiter.delay("create", "app") == 0.0  # no bucket yet: a full burst
    for _ in range(3):
        assert limiter.delay("create", "app") == 0.0
        limiter.reserve("create", "app")
    assert limiter.delay("create", "app") == pytest.approx(1.0)
    assert limiter.delay("create", "app") == pytest.approx(1.0)  # asking took nothing
    clock.now += 0.25
    assert limiter.delay("create", "app") == pytest.approx(0.75)
    assert limiter.reserve("create", "app") == pytest.approx(0.75)  # the same answer
    assert limiter.delay("create", "app") == pytest.approx(1.75)
    assert limiter.delay("get", "app") == 0.0  # other buckets are their own
