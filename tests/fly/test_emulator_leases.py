"""Leases: the envelope, 409 for mutations without the nonce, refresh and release."""

from __future__ import annotations

import time

import httpx
import pytest

from .helpers import launch, new_app

pytestmark = pytest.mark.anyio


async def _leased_machine(client: httpx.AsyncClient) -> tuple[str, str]:
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"}, skip_launch=True)
    return app, f"/v1/apps/{app}/machines/{machine['id']}"


async def test_lease_with_ttl_in_body_answers_the_envelope(client: httpx.AsyncClient) -> None:
    _, url = await _leased_machine(client)
    response = await client.post(f"{url}/lease", json={"ttl": 60, "description": "deploy"})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "success"
    lease = body["data"]
    assert set(lease) == {"nonce", "expires_at", "owner", "description", "version"}
    assert lease["description"] == "deploy"
    assert 0 < lease["expires_at"] - time.time() <= 61
    shown = await client.get(f"{url}/lease")
    assert shown.status_code == 200 and shown.json()["data"]["nonce"] == lease["nonce"]
    assert client.conformance_exceptions()["lease_envelope"] == 2  # type: ignore[attr-defined]


async def test_lease_with_ttl_in_query_as_fly_go_sends_it(client: httpx.AsyncClient) -> None:
    _, url = await _leased_machine(client)
    response = await client.post(f"{url}/lease", params={"ttl": 30})
    assert response.status_code == 201
    assert 0 < response.json()["data"]["expires_at"] - time.time() <= 31
    assert client.conformance_exceptions()["lease_ttl_in_query"] == 1  # type: ignore[attr-defined]


async def test_mutations_need_the_nonce(client: httpx.AsyncClient) -> None:
    _, url = await _leased_machine(client)
    nonce = (await client.post(f"{url}/lease", json={"ttl": 60})).json()["data"]["nonce"]

    second = await client.post(f"{url}/lease", json={"ttl": 60})
    assert second.status_code == 409
    assert "lease currently held by" in second.json()["error"]
    for method, path, body in [
        ("POST", "/start", None),
        ("POST", "/stop", {}),
        ("PATCH", "/metadata", {"metadata": {"k": "v"}}),
        ("POST", "/metadata/k", {"value": "v"}),
        ("DELETE", "", None),
    ]:
        refused = await client.request(method, url + path, json=body)
        assert refused.status_code == 409, (method, path)
        assert refused.json()["error"].startswith("aborted: machine ID")

    wrong = {"fly-machine-lease-nonce": "not-the-nonce"}
    assert (await client.post(f"{url}/start", headers=wrong)).status_code == 409
    right = {"fly-machine-lease-nonce": nonce}
    assert (await client.post(f"{url}/start", headers=right)).status_code == 200

    refreshed = await client.post(f"{url}/lease", json={"ttl": 120}, headers=right)
    assert refreshed.status_code == 201
    assert refreshed.json()["data"]["nonce"] == nonce
    assert refreshed.json()["data"]["expires_at"] - time.time() > 60

    assert (await client.delete(f"{url}/lease", headers=wrong)).status_code == 409
    assert (await client.delete(f"{url}/lease", headers=right)).status_code == 200
    assert (await client.get(f"{url}/lease")).status_code == 404
    assert (await client.delete(url, params={"force": "true"})).status_code == 200


async def test_release_needs_the_header(client: httpx.AsyncClient) -> None:
    _, url = await _leased_machine(client)
    await client.post(f"{url}/lease", json={"ttl": 60})
    response = await client.raw.delete(f"{url}/lease")  # type: ignore[attr-defined]
    assert response.status_code == 400


async def test_lease_at_create_returns_the_nonce(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"}, lease_ttl=60, skip_launch=True)
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    assert machine["nonce"]
    assert (await client.post(f"{url}/start")).status_code == 409
    started = await client.post(f"{url}/start",
                                headers={"fly-machine-lease-nonce": machine["nonce"]})  # fmt: skip
    assert started.status_code == 200
    assert "nonce" not in (await client.get(url)).json()  # shown once, at create
