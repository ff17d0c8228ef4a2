"""Apps, authentication and the shape of errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette

from .helpers import new_app

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def test_create_get_list_delete_app(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/apps", json={"name": "alpha", "org_slug": "personal"})
    assert created.status_code == 201
    # The docs' (2024 spec) spelling, with ?wait=true, is accepted too.
    other = await client.post("/v1/apps", params={"wait": "true"},
                              json={"app_name": "beta", "org_slug": "acme"})  # fmt: skip
    assert other.status_code == 201

    got = await client.get("/v1/apps/alpha")
    assert got.status_code == 200
    assert got.json()["name"] == "alpha"
    assert got.json()["organization"]["slug"] == "personal"
    assert got.json()["machine_count"] == 0

    listed = (await client.get("/v1/apps", params={"org_slug": "personal"})).json()
    assert listed["total_apps"] == 1
    assert [a["name"] for a in listed["apps"]] == ["alpha"]

    deleted = await client.delete("/v1/apps/alpha")
    assert deleted.status_code == 202
    missing = await client.get("/v1/apps/alpha")
    assert missing.status_code == 404
    assert missing.json() == {"error": "app not found"}


async def test_taken_app_name_is_422(client: httpx.AsyncClient) -> None:
    await new_app(client, "taken")
    again = await client.post("/v1/apps", json={"name": "taken", "org_slug": "personal"})
    assert again.status_code == 422
    assert "taken" in again.json()["error"]


async def test_invalid_app_name_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/apps", json={"name": "Not Valid", "org_slug": "personal"})
    assert response.status_code == 400
    assert "invalid app name" in response.json()["error"]


async def test_missing_token_is_401_with_flys_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/apps/x", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json() == {"error": "Authenticate: token validation error"}
    assert response.headers["fly-request-id"]
    unknown_scheme = await client.get("/v1/apps/x", headers={"Authorization": "Basic abc"})
    assert unknown_scheme.status_code == 401


async def test_any_token_accepted_by_default_in_both_schemes(client: httpx.AsyncClient) -> None:
    for header in ("Bearer whatever", "FlyV1 fm2_abc,fm2_def", "bearer lower-case-scheme"):
        response = await client.get("/v1/apps/nope", headers={"Authorization": header})
        assert response.status_code == 404, header  # authenticated, then not found


async def test_configured_token_is_the_only_one_accepted(make_client: MakeClient) -> None:
    client = await make_client(token="s3cret-token")
    wrong = await client.get("/v1/apps/nope")  # the fixture's default token
    assert wrong.status_code == 401
    for header in ("Bearer s3cret-token", "FlyV1 s3cret-token"):
        right = await client.get("/v1/apps/nope", headers={"Authorization": header})
        assert right.status_code == 404


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    ids = set()
    for path in ("/v1/apps/none", "/v1/apps?org_slug=personal", "/_emulator/stats"):
        response = await client.get(path)
        ids.add(response.headers["fly-request-id"])
    assert len(ids) == 3


async def test_unknown_route_is_a_json_404(make_app: Callable[..., Starlette]) -> None:
    # Not through the conformance transport: the spec rightly has no such path.
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as raw:
        response = await raw.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
    assert "fly-request-id" in response.headers


async def test_unknown_machine_and_app_are_404(client: httpx.AsyncClient) -> None:
    await new_app(client, "here")
    response = await client.get("/v1/apps/here/machines/0123456789abcd")
    assert response.status_code == 404
    assert response.json() == {"error": "machine not found"}
    no_app = await client.get("/v1/apps/nothere/machines")
    assert no_app.json() == {"error": "app not found"}


async def test_deleting_an_app_kills_its_machines(client: httpx.AsyncClient) -> None:
    app = await new_app(client, "doomed")
    created = await client.post(f"/v1/apps/{app}/machines", json={"config": {"image": "emu/sleep"}})
    machine_id = created.json()["id"]
    await client.get(f"/v1/apps/{app}/machines/{machine_id}/wait", params={"state": "started"})
    emulator = client.emulator  # type: ignore[attr-defined]
    pgid = emulator.spawned_pgids[-1]
    assert (await client.delete(f"/v1/apps/{app}")).status_code == 202
    from .conftest import group_alive

    assert not group_alive(pgid)
    assert machine_id not in emulator.machines


async def test_stats_count_calls_by_route(client: httpx.AsyncClient) -> None:
    await new_app(client, "counted")
    for _ in range(3):
        await client.get("/v1/apps/counted")
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["calls"]["GET /v1/apps/{app_name}"] == 3
    assert stats["calls"]["POST /v1/apps"] == 1
    assert stats["total_calls"] == 4
    reset = await client.delete("/_emulator/stats")
    assert reset.status_code == 200
    assert (await client.get("/_emulator/stats")).json()["total_calls"] == 0
