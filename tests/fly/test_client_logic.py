"""Pure logic of the Fly client and the waiter's machine checks: back-off, Retry-After,
auth headers, what is retried, error messages, and machine outcomes."""

from __future__ import annotations

import random

import httpx
import pytest

from balloons.control.reclaim import machine_outcome
from balloons.fly.client import (
    CapacityRefusal,
    FlyClient,
    RetryPolicy,
    _retry_after,
    auth_header,
    explain,
)
from balloons.info import MachineInfo

CREATE_PATH = "/apps/jobs/machines"


def _client(**kwargs: object) -> FlyClient:
    return FlyClient("http://fly.invalid", "tok", rng=random.Random(1), **kwargs)  # type: ignore[arg-type]


def _response(
    status: int, json: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("POST", "http://fly.invalid/v1" + CREATE_PATH)
    return httpx.Response(
        status, json=json, headers=headers or {"fly-request-id": "req-1"}, request=request
    )


def test_backoff_is_exponential_jittered_and_capped() -> None:
    policy = RetryPolicy(base=0.25, cap=8.0)
    rng = random.Random(0)
    for retry, ceiling in [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (6, 8.0), (12, 8.0)]:
        draws = [policy.backoff(retry, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in draws)
        assert len(set(draws)) > 1  # jittered
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(attempts=0)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert _retry_after(_response(429, headers={"retry-after": "7"})) == 7.0
    assert (
        _retry_after(_response(429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
        == 0.0
    )
    assert _retry_after(_response(429, headers={"retry-after": "soon"})) is None
    assert _retry_after(_response(429)) is None


def test_429_waits_at_least_retry_after_capped() -> None:
    client = _client(retry=RetryPolicy(max_retry_after=30.0))
    step = client._after_response(_response(429, {"error": "rate limited"}, {"retry-after": "7"}),
                                  "POST", CREATE_PATH, 1, False, None)  # fmt: skip
    assert step.error is None and step.delay >= 7.0 and not step.recover
    step = client._after_response(_response(429, {"error": "x"}, {"retry-after": "3600"}),
                                  "POST", CREATE_PATH, 1, False, None)  # fmt: skip
    assert step.delay == 30.0
    last = client._after_response(
        _response(429, {"error": "x"}), "POST", CREATE_PATH, 5, False, None
    )
    assert last.error is not None and last.error.status == 429


def test_what_is_retried() -> None:
    client = _client()

    def step(status: int, method: str = "GET", recover: object = None, body: object = None):  # type: ignore[no-untyped-def]
        return client._after_response(_response(status, body or {"error": "e"}), method,
                                      CREATE_PATH, 1, method != "POST", recover)  # fmt: skip

    assert step(503).delay > 0 and step(503).error is None  # idempotent: retried
    assert step(408).error is None
    assert step(503, "POST").error is not None  # a create without recover: never blindly
    recovering = step(503, "POST", recover=object())
    assert recovering.error is None and recovering.recover  # look first, then retry
    conflict = step(409, "POST", recover=object())
    assert conflict.recover and conflict.error is not None and conflict.error.status == 409
    assert step(400).error is not None and step(400).delay == 0
    refusal = step(
        503, "POST", body={"error": "insufficient capacity", "status": "insufficient_capacity"}
    )
    assert isinstance(refusal.error, CapacityRefusal)
    assert isinstance(step(412, "POST").error, CapacityRefusal)
    ok = client._after_response(_response(200, {"id": "m"}), "POST", CREATE_PATH, 1, False, None)
    assert ok.done and ok.value == {"id": "m"}


def test_connection_errors_are_retried_and_lost_answers_only_when_safe() -> None:
    client = _client()
    refused = client._after_error(
        httpx.ConnectError("refused"), "POST", CREATE_PATH, 1, False, False
    )
    assert refused.error is None and refused.delay > 0
    lost = client._after_error(httpx.ReadTimeout("slow"), "POST", CREATE_PATH, 1, False, False)
    assert lost.error is not None  # may have been created, and nothing can tell: give up
    lost = client._after_error(httpx.ReadTimeout("slow"), "POST", CREATE_PATH, 1, False, True)
    assert lost.error is None and lost.recover
    final = client._after_error(httpx.ConnectError("refused"), "GET", CREATE_PATH, 5, True, False)
    assert final.error is not None and "after 5 tries" in str(final.error)


def test_auth_header_schemes() -> None:
    assert auth_header("abc") == "Bearer abc"
    assert auth_header(" Bearer abc ") == "Bearer abc"
    assert auth_header("fm2_xyz,fm2_more") == "FlyV1 fm2_xyz,fm2_more"
    assert auth_header("FlyV1 fm2_xyz") == "FlyV1 fm2_xyz"
    assert "tok" not in repr(_client())


def test_messages_name_what_to_fix() -> None:
    assert "FLY_API_TOKEN" in explain(
        401, "Authenticate: token validation error", "GET", "/apps/a/machines"
    )
    assert "BALLOONS_FLY_APP" in explain(404, "app not found", "POST", "/apps/a/machines")
    assert "fly apps create a" in explain(404, "app not found", "POST", "/apps/a/machines")
    generic = explain(422, "bad guest", "POST", "/apps/a/machines")
    assert "422" in generic and "bad guest" in generic


def _machine(**kwargs: object) -> MachineInfo:
    return MachineInfo(id="0123456789abcd", backend="fly", **kwargs)  # type: ignore[arg-type]


def test_machine_outcomes() -> None:
    assert machine_outcome(_machine(state="started")) is None
    assert machine_outcome(_machine(state="stopping")) is None
    assert machine_outcome(_machine(state="destroyed", oom_killed=True, signal=9))[0] == "oom"  # type: ignore[index]
    assert (
        machine_outcome(_machine(state="stopped", requested_stop=True, exit_code=143))[0]
        == "cancelled"
    )  # type: ignore[index]
    assert machine_outcome(_machine(state="destroyed", signal=9, exit_code=137))[0] == "killed"  # type: ignore[index]
    assert machine_outcome(_machine(state="destroyed", exit_code=7))[0] == "exit_code=7"  # type: ignore[index]
    assert machine_outcome(_machine(state="destroyed"))[0] == "lost"  # type: ignore[index]


def test_machine_info_reads_the_newest_exit_event() -> None:
    from balloons.fly.wire import machine_info

    # The exit event of fly-admin's fixture (NOTES §4): an API-requested stop.
    stop = {"id": "01H9QFJCZ03MEGZKYPYY4ZSTTS", "type": "exit", "status": "stopped",
            "source": "flyd", "timestamp": 1694078940128,
            "request": {"exit_event": {"requested_stop": True, "restarting": False,
                                       "guest_exit_code": 0, "guest_signal": -1, "guest_error": "",
                                       "exit_code": 143, "signal": -1, "error": "",
                                       "oom_killed": False, "exited_at": "2023-09-07T09:28:59.832Z"},
                        "restart_count": 0}}  # fmt: skip
    older = {"type": "exit", "timestamp": 1, "request": {"MonitorEvent": {"exit_event": {
        "exit_code": 1, "signal": 9, "oom_killed": True}}}}  # fmt: skip
    data = {"id": "3d8d413b29d089", "state": "destroyed", "region": "ord",
            "created_at": "2023-09-07T09:28:50Z",
            "config": {"metadata": {"balloons_job": "default.x", "balloons_attempt": "2",
                                    "balloons_pool": "default"}},
            "events": [older, {"type": "start", "timestamp": 5}, stop]}  # fmt: skip
    info = machine_info(data)
    assert (info.exit_code, info.signal, info.requested_stop, info.oom_killed) == (
        143,
        None,
        True,
        False,
    )
    assert (info.job_id, info.attempt, info.pool) == ("default.x", 2, "default")
    assert info.detail["region"] == "ord" and info.detail["exited_at"].startswith("2023-09-07")
    assert info.created_at == 1694078930.0
    oom = machine_info({**data, "events": [older]})
    assert (oom.exit_code, oom.signal, oom.oom_killed) == (1, 9, True)
