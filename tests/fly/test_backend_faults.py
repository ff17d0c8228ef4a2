"""FlyBackend under Fly's failure modes, injected by the emulator: lost answers, 5xx, 429,
capacity refusals. Jobs still run exactly once per attempt, and the attempt says what
happened."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

import balloons
from balloons import JobFailed
from balloons.fly.client import RetryPolicy
from balloons.fly.emulator import Faults
from balloons.fly.ratelimit import Limit, RateLimiter
from tests import tasks
from tests.waiting import wait_for

from .conftest import FlyRig
from .test_backend_jobs import CREATE, on

LIST = "GET /v1/apps/{app_name}/machines"


def _machines_per_slot(rig: FlyRig) -> Counter[str]:
    """Machines created per pool slot: a slot is one launch, so never more than one each. With
    warm reuse a machine may run several jobs, so there may be fewer slots than jobs."""
    every = rig.machines(include_deleted="true")
    return Counter(m["config"]["metadata"]["balloons_slot"] for m in every)


def _one_each(rig: FlyRig, n_jobs: int) -> int:
    per_slot = _machines_per_slot(rig)
    assert set(per_slot.values()) == {1}, per_slot
    assert 1 <= len(per_slot) <= n_jobs
    return len(per_slot)


def test_a_lost_create_answer_is_recovered_without_a_second_machine(make_rig: Any) -> None:
    rig: FlyRig = make_rig(faults=Faults(seed=1, lost_response_rate=1.0))
    app = rig.app()
    job = on(app, tasks.add).submit(20, 22)
    assert job.result(timeout=30) == 42
    assert rig.stats()["calls"] == {CREATE: 1, LIST: 1}
    assert _one_each(rig, 1) == 1
    # The launcher thread notes the recovery once its create returns, which may be after the
    # job has run on the machine that create made.
    note = wait_for(lambda: job.info().attempts[0].note, "the attempt's note")
    assert "answer was lost" in note


def test_injected_server_errors_are_retried_without_duplicates(make_rig: Any) -> None:
    rig: FlyRig = make_rig(faults=Faults(seed=7, error_rates={"create": 0.5}))
    # Fly's rate limits are not the subject here: with them, retried creates would use up the
    # burst and later jobs would be taken by machines already up instead of getting their own.
    loose = RateLimiter(limits={}, default=Limit(rate=1000, burst=1000))
    # Creates made by the submitting calls, so that they meet the injected errors concurrently.
    backend = rig.backend(
        retry=RetryPolicy(attempts=8, base=0.05, cap=0.5), limiter=loose, background_launches=False
    )
    app = rig.app(backend=backend)
    add = on(app, tasks.add)
    jobs = [add.submit(i, i) for i in range(4)]
    assert [j.result(timeout=30) for j in jobs] == [0, 2, 4, 6]
    calls = rig.stats()["calls"]
    machines = _one_each(rig, 4)
    assert calls[CREATE] > machines, calls  # some creates failed (seeded) and were sent again
    # Before each new try of a create that may have happened, the machine was looked for.
    assert calls[LIST] == calls[CREATE] - machines


class _Ticks:
    """A clock for the emulator's rate limit that moves a quarter second each time it is read
    (once per API call), whatever the time: its buckets refill by calls, not by how fast a
    busy machine makes them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_429s_are_retried_with_backoff(make_rig: Any) -> None:
    rig: FlyRig = make_rig(faults=Faults(rate_limit=True), clock=_Ticks())
    # A limiter far looser than Fly's, so that the emulator's own limit answers 429.
    loose = RateLimiter(limits={}, default=Limit(rate=1000, burst=1000))
    backend = rig.backend(
        limiter=loose, retry=RetryPolicy(attempts=8, base=0.1, cap=1.0), background_launches=False
    )
    add = on(rig.app(backend=backend), tasks.add)
    jobs = [add.submit(i, 0) for i in range(5)]
    assert [j.result(timeout=30) for j in jobs] == [0, 1, 2, 3, 4]
    calls = rig.stats()["calls"]
    machines = _one_each(rig, 5)
    # 3 went through at once (Fly's burst), the others met 429 first (1 create a second)
    assert calls[CREATE] > machines, calls
    assert LIST not in calls  # a 429 means nothing was done: no lookup needed


def test_capacity_refusals_fall_back_to_the_next_region(make_rig: Any) -> None:
    rig: FlyRig = make_rig(faults=Faults(seed=3, capacity_refusal_by_region={"iad": 1.0}))
    app = rig.app(backend=rig.backend(region="iad", fallback_regions=["ord", "ams"]))
    job = on(app, tasks.add).submit(1, 2)
    assert job.result(timeout=30) == 3
    machine = rig.emulator.machines[job.info().machine_id or ""]
    assert machine.region == "ord"
    assert rig.stats()["calls"] == {CREATE: 3}  # two tries in iad, one in ord
    (attempt,) = job.info().attempts
    assert attempt.note is not None
    assert "capacity refused in iad (" in attempt.note and "created in ord" in attempt.note


def test_no_capacity_anywhere_fails_the_job_saying_what_to_do(make_rig: Any) -> None:
    rig: FlyRig = make_rig(faults=Faults(seed=3, capacity_refusal_rate=1.0))
    app = rig.app(backend=rig.backend(region="iad", fallback_regions="ord"))
    job = on(app, tasks.add).submit(1, 2)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "launch_failed"
    message = info.value.error_message
    assert "no capacity" in message and "iad, ord" in message
    assert "BALLOONS_FLY_FALLBACK_REGIONS" in message
    assert rig.stats()["calls"] == {CREATE: 4}
    assert rig.machines(include_deleted="true") == []


def test_killed_machines_are_reported_per_job(make_rig: Any) -> None:
    # Fly's random kills, injected: whichever jobs lose their machine fail as killed, the
    # others succeed; none is left hanging.
    rig: FlyRig = make_rig(faults=Faults(seed=11, kill_rate=2.0))
    sleep = on(rig.app(), tasks.sleep)
    jobs = [sleep.submit(1.5) for _ in range(3)]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=40))
        except JobFailed as exc:
            outcomes.append(exc.reason)
    assert "killed" in outcomes, outcomes
    assert set(outcomes) <= {1.5, "killed"}
    rig.wait_all_destroyed()


def test_launch_errors_never_lose_the_job(make_rig: Any) -> None:
    rig: FlyRig = make_rig(faults=Faults(seed=5, error_rates={"create": 1.0}))
    app = rig.app(backend=rig.backend(retry=RetryPolicy(attempts=3, base=0.01, cap=0.02)))
    job = on(app, tasks.add).submit(1, 2)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=30)
    assert info.value.reason == "launch_failed"
    assert "injected fault on create" in info.value.error_message
    assert job.status() is balloons.JobStatus.FAILED
    assert rig.stats()["calls"] == {CREATE: 3, LIST: 3}


def test_a_machine_dying_before_it_claims_its_job_is_noticed_early(make_rig: Any) -> None:
    """The jobs app lacks the worker's Redis URL, so each machine exits (code 2) before it
    claims its job. The waiter asks Fly about a machine still booting after a few seconds and
    fails the job with the machine's own account, well before the 60 s boot timeout."""
    rig: FlyRig = make_rig(secrets={"BALLOONS_SECRET": "x" * 40})
    job = on(rig.app(), tasks.add).submit(1, 2)
    t0 = time.monotonic()
    with pytest.raises(JobFailed) as info:
        job.result(timeout=40)
    assert info.value.reason == "exit_code=2"
    assert time.monotonic() - t0 < 30
    rig.wait_all_destroyed()
