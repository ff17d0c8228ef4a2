"""Seeded fault injection: errors, rate limits, capacity, kills, lost responses, boot delay."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from balloons.fly.emulator import Faults

from .helpers import exit_events, launch, new_app, wait_state

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def _create_statuses(client: httpx.AsyncClient, app: str, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        response = await client.post(f"/v1/apps/{app}/machines",
                                     json={"config": {"image": "emu/sleep"}, "skip_launch": True})  # fmt: skip
        statuses.append(response.status_code)
        if response.status_code >= 500:
            assert "injected fault" in response.json()["error"]
    return statuses


async def test_error_rates_replay_with_the_same_seed(make_client: MakeClient) -> None:
    runs = []
    for _ in range(2):
        client = await make_client(faults=Faults(seed=42, error_rates={"create": 0.5}))
        app = await new_app(client)
        runs.append(await _create_statuses(client, app, 30))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500, 503}  # at 0.5 over 30 calls, seed 42 hits both errors
    other = await make_client(faults=Faults(seed=43, error_rates={"create": 0.5}))
    assert await _create_statuses(other, await new_app(other), 30) != runs[0]


async def test_machine_ids_replay_with_the_same_seed(make_client: MakeClient) -> None:
    ids = []
    for _ in range(2):
        client = await make_client(faults=Faults(seed=7))
        app = await new_app(client)
        machine = await launch(client, app, {"image": "emu/sleep"}, skip_launch=True)
        ids.append((machine["id"], machine["name"]))
    assert ids[0] == ids[1]


async def test_rate_limit_buckets(make_client: MakeClient) -> None:
    now = [1000.0]
    client = await make_client(faults=Faults(rate_limit=True), clock=lambda: now[0])
    app = await new_app(client)
    statuses = await _create_statuses(client, app, 4)
    assert statuses == [200, 200, 200, 429]  # 1/s with a burst of 3, time frozen
    other_app = await new_app(client, "other")
    assert await _create_statuses(client, other_app, 1) == [200]  # per app
    now[0] += 1.0
    assert await _create_statuses(client, app, 2) == [200, 429]  # one token back per second

    machine_id = next(iter(client.emulator.machines))  # type: ignore[attr-defined]
    url = f"/v1/apps/{app}/machines/{machine_id}"
    gets = [(await client.get(url)).status_code for _ in range(11)]
    assert gets == [200] * 10 + [429]  # Get Machine: burst 10
    limited = await client.get(url)
    assert limited.json()["error"].startswith("rate limit exceeded")


async def test_capacity_refusals_per_region(make_client: MakeClient) -> None:
    client = await make_client(
        faults=Faults(seed=1, capacity_refusal_by_region={"iad": 1.0}, capacity_refusal_rate=0.0)
    )
    app = await new_app(client)
    for _ in range(6):
        refused = await client.post(f"/v1/apps/{app}/machines",
                                    json={"config": {"image": "emu/sleep"}, "region": "iad"})  # fmt: skip
        assert refused.status_code in (412, 503)
        assert refused.json()["status"] == "insufficient_capacity"
        assert "insufficient capacity" in refused.json()["error"]
    assert (await client.get(f"/v1/apps/{app}/machines")).json() == []
    accepted = await launch(client, app, {"image": "emu/sleep"}, region="ord", skip_launch=True)
    assert accepted["region"] == "ord"


async def test_kill_fault_sigkills_running_machines(make_client: MakeClient) -> None:
    client = await make_client(faults=Faults(seed=3, kill_rate=50.0))
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep", "restart": {"policy": "no"}})
    await wait_state(client, app, machine["id"], "stopped")
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["signal"] == 9
    assert exit_event["requested_stop"] is False
    assert exit_event["oom_killed"] is False


async def test_lost_response_still_creates_the_machine(make_client: MakeClient) -> None:
    client = await make_client(faults=Faults(seed=5, lost_response_rate=1.0))
    app = await new_app(client)
    body = {"name": "idempotent-job", "config": {"image": "emu/sleep", "metadata": {"job": "j"}},
            "skip_launch": True}  # fmt: skip
    lost = await client.post(f"/v1/apps/{app}/machines", json=body)
    assert lost.status_code == 503
    found = (await client.get(f"/v1/apps/{app}/machines", params={"metadata.job": "j"})).json()
    assert [m["name"] for m in found] == ["idempotent-job"]
    retry = await client.post(f"/v1/apps/{app}/machines", json=body)
    assert retry.status_code == 409  # the name is taken by the machine the lost answer made
    assert found[0]["id"] in retry.json()["error"]


async def test_boot_delay_keeps_machines_starting(make_client: MakeClient) -> None:
    client = await make_client(faults=Faults(boot_delay=3600))
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"})
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    assert (await client.get(url)).json()["state"] == "starting"
    await client.post(f"{url}/stop")
    assert (await client.get(url)).json()["state"] == "stopped"
    assert client.emulator.spawned_pgids == []  # type: ignore[attr-defined]


def test_faults_validate_their_settings() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        Faults(error_rates={"fly": 0.1})
    with pytest.raises(ValueError, match="probability"):
        Faults(capacity_refusal_rate=1.5)
    with pytest.raises(ValueError, match="negative"):
        Faults(kill_rate=-1)
