"""``GET .../wait``: states, settled, timeouts (408), versions and from_event_id."""

from __future__ import annotations

import httpx
import pytest

from tests.waiting import wait_for_async

from .helpers import launch, new_app, py, wait_state

pytestmark = pytest.mark.anyio


async def test_timeout_is_408_with_flys_message(make_client: object) -> None:
    client = await make_client(faults=_boot_forever())  # type: ignore[operator]
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"})
    response = await client.get(f"/v1/apps/{app}/machines/{machine['id']}/wait",
                                params={"state": "started", "timeout": 1})  # fmt: skip
    assert response.status_code == 408
    assert response.json() == {
        "error": "deadline_exceeded: machine failed to reach desired state, started, "
        "currently starting"
    }


def _boot_forever() -> object:
    from balloons.fly.emulator import Faults

    return Faults(boot_delay=3600)


async def test_several_states_comma_separated_or_repeated(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py("pass", restart={"policy": "no"}))
    url = f"/v1/apps/{app}/machines/{machine['id']}/wait"
    comma = await client.get(url, params={"state": "destroyed,stopped", "timeout": 30})
    assert comma.status_code == 200 and comma.json()["state"] == "stopped"
    repeated = await client.get(url, params=[("state", "destroyed"), ("state", "stopped")])
    assert repeated.json()["state"] == "stopped"
    assert client.conformance_exceptions()["wait_state_list"] == 2  # type: ignore[attr-defined]


async def test_settled_and_bad_state(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"}, skip_launch=True)
    settled = await wait_state(client, app, machine["id"], "settled")
    assert settled["state"] == "created"
    assert settled["version"] == machine["instance_id"]
    url = f"/v1/apps/{app}/machines/{machine['id']}/wait"
    bad = await client.raw.get(url, params={"state": "sleepy"})  # type: ignore[attr-defined]
    assert bad.status_code == 400


async def test_from_event_id_sees_a_state_already_left(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py("pass", restart={"policy": "no"}))
    launch_event = machine["events"][0]["id"]
    await wait_state(client, app, machine["id"], "stopped")
    # The machine is stopped now, but it was started after its launch event.
    seen = await wait_state(client, app, machine["id"], "started", from_event_id=launch_event)
    assert seen["state"] == "started"


async def test_waiting_on_a_forgotten_machine_is_404(make_client: object) -> None:
    client = await make_client(destroyed_retention=0)  # type: ignore[operator]
    app = await new_app(client)
    machine = await launch(client, app, py("pass", restart={"policy": "no"}, auto_destroy=True))
    url = f"/v1/apps/{app}/machines/{machine['id']}/wait"
    # Destroyed and then forgotten at once: either answer is Fly's, depending on timing.
    response = await client.get(url, params={"state": "destroyed", "timeout": 30})
    assert response.status_code in (200, 404)

    async def forgotten() -> bool:
        return (await client.get(f"/v1/apps/{app}/machines/{machine['id']}")).status_code == 404

    await wait_for_async(forgotten, "the destroyed machine to be forgotten")
    gone = await client.get(url, params={"state": "destroyed", "timeout": 30})
    assert gone.status_code == 404
    assert gone.json() == {"error": "machine not found"}


async def test_version_must_match(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"}, skip_launch=True)
    url = f"/v1/apps/{app}/machines/{machine['id']}/wait"
    ok = await client.get(url, params={"state": "settled", "instance_id": machine["instance_id"],
                                       "timeout": 30})  # fmt: skip
    assert ok.status_code == 200
    stale = await client.get(url, params={"state": "settled", "version": "0" * 26, "timeout": 1})
    assert stale.status_code == 408
