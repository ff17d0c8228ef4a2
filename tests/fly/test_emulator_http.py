"""Over real HTTP: uvicorn on 127.0.0.1, sync httpx client, and shutdown killing machines."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.applications import Starlette

from balloons.fly.emulator import Faults

from .conformance import Conformance, ConformantTransport
from .conftest import AUTH, SAFETY_TIMEOUT, Served, _ServerThread, group_alive


def _wait(client: httpx.Client, app: str, machine_id: str, state: str) -> dict[str, object]:
    response = client.get(f"/v1/apps/{app}/machines/{machine_id}/wait",
                          params={"state": state, "timeout": int(SAFETY_TIMEOUT)})  # fmt: skip
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_a_job_end_to_end_over_http(make_server: Callable[..., Served]) -> None:
    served = make_server(token="http-token", secrets={"API_KEY": "k-123"})
    client = served.client
    client.headers["Authorization"] = "FlyV1 http-token"
    assert client.post("/v1/apps", json={"name": "web", "org_slug": "personal"}).status_code == 201
    code = "import os, sys; sys.exit(0 if os.environ['API_KEY'] == 'k-123' else 1)"
    config = {"image": "x", "init": {"exec": ["python", "-c", code]}, "auto_destroy": True,
              "restart": {"policy": "no"}}  # fmt: skip
    created = client.post("/v1/apps/web/machines", json={"config": config})
    assert created.status_code == 200
    machine_id = created.json()["id"]
    _wait(client, "web", machine_id, "destroyed")
    events = client.get(f"/v1/apps/web/machines/{machine_id}/events").json()
    assert events[0]["request"]["exit_event"]["exit_code"] == 0
    assert client.get("/v1/apps/web", headers={"Authorization": "Bearer nope"}).status_code == 401

    stats = httpx.get(f"{served.base_url}/_emulator/stats").json()
    assert stats["calls"]["POST /v1/apps/{app_name}/machines"] == 1
    assert stats["machines"] == {"destroyed": 1}


def test_wait_timeout_over_http(make_server: Callable[..., Served]) -> None:
    served = make_server(faults=Faults(boot_delay=3600))
    client = served.client
    client.post("/v1/apps", json={"name": "slow", "org_slug": "personal"})
    machine_id = client.post("/v1/apps/slow/machines",
                             json={"config": {"image": "emu/sleep"}}).json()["id"]  # fmt: skip
    response = client.get(f"/v1/apps/slow/machines/{machine_id}/wait",
                          params={"state": "started", "timeout": 1})  # fmt: skip
    assert response.status_code == 408
    assert "currently starting" in response.json()["error"]


def test_stopping_the_server_kills_its_machines(make_server: Callable[..., Served]) -> None:
    served = make_server()
    client = served.client
    client.post("/v1/apps", json={"name": "busy", "org_slug": "personal"})
    machine_ids = [
        client.post("/v1/apps/busy/machines", json={"config": {"image": "emu/sleep"}}).json()["id"]
        for _ in range(3)
    ]
    for machine_id in machine_ids:
        _wait(client, "busy", machine_id, "started")
    pgids = list(served.emulator.spawned_pgids)
    assert len(pgids) == 3 and all(group_alive(p) for p in pgids)
    served.emulator.shutdown()
    assert not any(group_alive(p) for p in pgids)
    refused = client.post("/v1/apps/busy/machines", json={"config": {"image": "emu/sleep"}})
    assert refused.status_code == 503


def test_uvicorn_lifespan_shutdown_kills_machines(
    make_app: Callable[..., Starlette], conformance: Conformance
) -> None:
    app = make_app()
    server = _ServerThread(app)
    server.start()
    transport = ConformantTransport(httpx.HTTPTransport(), conformance)
    base_url = f"http://127.0.0.1:{server.port}"
    with httpx.Client(transport=transport, base_url=base_url, headers=AUTH, timeout=60) as client:
        client.post("/v1/apps", json={"name": "life", "org_slug": "personal"})
        machine_id = client.post("/v1/apps/life/machines",
                                 json={"config": {"image": "emu/sleep"}}).json()["id"]  # fmt: skip
        _wait(client, "life", machine_id, "started")
    [pgid] = app.state.emulator.spawned_pgids
    assert group_alive(pgid)
    server.stop()  # uvicorn's graceful exit runs the lifespan shutdown
    assert app.state.emulator.closed
    assert not group_alive(pgid)
    assert conformance.checked == 3
