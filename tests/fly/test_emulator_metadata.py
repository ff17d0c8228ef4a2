"""Metadata endpoints and the machine list filters."""

from __future__ import annotations

import httpx
import pytest

from .helpers import launch, new_app, py, wait_state

pytestmark = pytest.mark.anyio


async def test_metadata_crud(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep", "metadata": {"job": "j1"}},
                           skip_launch=True)  # fmt: skip
    url = f"/v1/apps/{app}/machines/{machine['id']}/metadata"
    assert (await client.get(url)).json() == {"job": "j1"}

    patched = await client.patch(url, json={"metadata": {"attempt": "2", "job": ""}})
    assert patched.status_code == 204
    assert (await client.get(url)).json() == {"attempt": "2"}

    put = await client.put(url, json={"metadata": {"only": "this"},
                                      "machine_version": machine["instance_id"]})  # fmt: skip
    assert put.status_code == 204
    assert (await client.get(url)).json() == {"only": "this"}
    stale = await client.put(url, json={"metadata": {}, "machine_version": "0" * 26})
    assert stale.status_code == 412

    assert (await client.post(f"{url}/k", json={"value": "v"})).status_code == 204
    assert (await client.get(f"{url}/k")).json() == {"value": "v"}
    assert (await client.delete(f"{url}/k")).status_code == 204
    missing = await client.get(f"{url}/k")
    assert missing.status_code == 404
    # Metadata is config, but changing it makes no new version.
    got = (await client.get(f"/v1/apps/{app}/machines/{machine['id']}")).json()
    assert got["config"]["metadata"] == {"only": "this"}
    assert got["instance_id"] == machine["instance_id"]


async def test_list_filters(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    sleeping = await launch(client, app, {"image": "emu/sleep", "metadata": {"pool": "a"}},
                            region="ord")  # fmt: skip
    parked = await launch(client, app, {"image": "emu/sleep", "metadata": {"pool": "b"}},
                          skip_launch=True)  # fmt: skip
    done = await launch(client, app, py("pass", auto_destroy=True, restart={"policy": "no"},
                                        metadata={"pool": "a"}))  # fmt: skip
    await wait_state(client, app, sleeping["id"], "started")
    await wait_state(client, app, done["id"], "destroyed")
    url = f"/v1/apps/{app}/machines"

    async def ids(**params: str) -> list[str]:
        response = await client.get(url, params=params)
        assert response.status_code == 200
        return [m["id"] for m in response.json()]

    assert await ids() == [sleeping["id"], parked["id"]]
    assert await ids(include_deleted="true") == [sleeping["id"], parked["id"], done["id"]]
    assert await ids(state="started") == [sleeping["id"]]
    assert await ids(state="created,started") == [sleeping["id"], parked["id"]]
    assert await ids(region="ord") == [sleeping["id"]]
    assert await ids(**{"metadata.pool": "a"}) == [sleeping["id"]]
    assert await ids(**{"metadata.pool": "a", "include_deleted": "true"}) == [
        sleeping["id"], done["id"],
    ]  # fmt: skip
    summary = (await client.get(url, params={"summary": "true"})).json()
    assert all("config" not in m and "events" not in m for m in summary)
