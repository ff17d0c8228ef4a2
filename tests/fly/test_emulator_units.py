"""Unit checks of the parsers, ids and the conformance checker itself."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette

from balloons.fly.emulator.errors import ApiError
from balloons.fly.emulator.ids import IdSource
from balloons.fly.emulator.model import image_ref
from balloons.fly.emulator.parsing import parse_duration, parse_signal
from balloons.fly.emulator.wait import capped_timeout

from .conformance import Conformance, ConformanceMiddleware, NonConformance
from .helpers import MACHINE_ID, ULID


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("250ms", 0.25), ("1h", 3600.0), (5, 5.0),
     ("5", 5.0), (10_000_000_000, 10.0), (1.5, 1.5)],
)  # fmt: skip
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, "timeout") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["soon", "", "10 parsecs", True, None, -1])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ApiError) as raised:
        parse_duration(value, "timeout")
    assert raised.value.status_code == 400


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["s", "ms", "m"]))
def test_parse_duration_round_trips_go_strings(amount: int, unit: str) -> None:
    scale = {"s": 1.0, "ms": 0.001, "m": 60.0}[unit]
    assert parse_duration(f"{amount}{unit}", "t") == pytest.approx(amount * scale)


def test_parse_signal_names_and_numbers() -> None:
    assert parse_signal("SIGKILL") == parse_signal(9) == parse_signal("9") == signal.SIGKILL
    assert parse_signal("term") == signal.SIGTERM
    with pytest.raises(ApiError):
        parse_signal("SIGNOPE")
    with pytest.raises(ApiError):
        parse_signal(999)


def test_ids_have_flys_shapes_and_ulids_are_monotonic() -> None:
    ids = IdSource(seed=1)
    ulids = [ids.ulid() for _ in range(1000)]
    assert ulids == sorted(ulids) and len(set(ulids)) == 1000
    assert all(ULID.match(u) for u in ulids)
    assert MACHINE_ID.match(ids.machine_id())
    assert IdSource(seed=2).machine_name() == IdSource(seed=2).machine_name()


def test_image_ref_parsing() -> None:
    assert image_ref("registry.fly.io/my-app:deployment-01H") == {
        "registry": "registry.fly.io", "repository": "my-app", "tag": "deployment-01H",
        "digest": "", "labels": {},
    }  # fmt: skip
    assert image_ref("ubuntu")["repository"] == "library/ubuntu"
    assert image_ref("ubuntu")["tag"] == "latest"


def test_conformance_rejects_what_the_spec_forbids(conformance: Conformance) -> None:
    checker = conformance
    url = "http://emulator/v1/apps/a/machines/0123456789abcd"
    request = httpx.Request("GET", url)
    headers = {"fly-request-id": "x", "content-type": "application/json"}
    bad_machine = httpx.Response(200, headers=headers, json={"state": 5}, request=request)
    with pytest.raises(NonConformance):
        checker.check(request, bad_machine)
    bad_error = httpx.Response(404, headers=headers, json={"message": "nope"}, request=request)
    with pytest.raises(NonConformance, match="error"):
        checker.check(request, bad_error)
    no_request_id = httpx.Response(200, json={}, request=request)
    with pytest.raises(NonConformance, match="fly-request-id"):
        checker.check(request, no_request_id)
    unknown = httpx.Request("GET", "http://emulator/v1/nowhere")
    with pytest.raises(NonConformance, match="not in the spec"):
        checker.check(unknown, httpx.Response(200, headers=headers, json={}, request=unknown))
    good = httpx.Response(200, headers=headers, json={"id": "0123456789abcd"}, request=request)
    checker.check(request, good)
    assert checker.checked == 1


@pytest.mark.parametrize(
    ("requested", "seconds"), [(None, 60.0), (1.0, 1.0), (60.0, 60.0), (61.0, 60.0), (3600.0, 60.0)]
)  # fmt: skip
def test_wait_timeouts_default_to_and_are_capped_at_60_seconds(
    requested: float | None, seconds: float
) -> None:
    assert capped_timeout(requested) == seconds


@pytest.mark.anyio
async def test_the_server_side_check_sees_every_exchange(
    make_app: Callable[..., Starlette], conformance: Conformance
) -> None:
    failures: list[str] = []
    served = ConformanceMiddleware(make_app(), conformance, failures)
    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        auth = {"Authorization": "Bearer t"}
        await client.post("/v1/apps", json={"name": "seen", "org_slug": "personal"}, headers=auth)
        await client.get("/v1/apps/seen/machines/0123456789abcd", headers=auth)
        assert conformance.checked == 2 and failures == []
        # A body the spec forbids (config must be an object): the emulator answers 400, and the
        # check records the request, whoever sent it.
        await client.post("/v1/apps/seen/machines", json={"config": "x"}, headers=auth)
    assert len(failures) == 1 and "POST http://emulator/v1/apps/seen/machines" in failures[0]
