"""Small request helpers shared by the emulator tests."""

from __future__ import annotations

import re
from typing import Any

import httpx

from .conftest import SAFETY_TIMEOUT

MACHINE_ID = re.compile(r"^[0-9a-f]{14}$")
ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def py(code: str, **config: Any) -> dict[str, Any]:
    """A machine config running ``python -c code``."""
    return {"image": "emu/python", "init": {"exec": ["python", "-c", code]}, **config}


async def new_app(client: httpx.AsyncClient, name: str = "app") -> str:
    response = await client.post("/v1/apps", json={"name": name, "org_slug": "personal"})
    assert response.status_code == 201, response.text
    return name


async def launch(
    client: httpx.AsyncClient, app: str, config: dict[str, Any], **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/v1/apps/{app}/machines", json={"config": config, **body})
    assert response.status_code == 200, response.text
    machine: dict[str, Any] = response.json()
    return machine


async def wait_state(
    client: httpx.AsyncClient, app: str, machine_id: str, state: str, **params: Any
) -> dict[str, Any]:
    """Wait (server side) for ``state``; fail the test on anything but 200."""
    query = {"state": state, "timeout": int(SAFETY_TIMEOUT), **params}
    response = await client.get(f"/v1/apps/{app}/machines/{machine_id}/wait", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def exit_events(client: httpx.AsyncClient, app: str, machine_id: str) -> list[dict[str, Any]]:
    """The machine's exit events' ``exit_event`` objects, newest first."""
    response = await client.get(f"/v1/apps/{app}/machines/{machine_id}/events")
    assert response.status_code == 200, response.text
    return [e["request"]["exit_event"] for e in response.json() if e["type"] == "exit"]


async def output(client: httpx.AsyncClient, machine_id: str) -> str:
    """What the machine printed (stdout and stderr)."""
    emulator = client.emulator  # type: ignore[attr-defined]
    text: str = emulator.log_path(machine_id).read_text()
    return text
