"""Restart policies: no, on-failure (with max_retries), always; auto_destroy after the last."""

from __future__ import annotations

import httpx
import pytest

from tests.waiting import wait_for_async

from .conftest import SAFETY_TIMEOUT
from .helpers import exit_events, launch, new_app, wait_state

pytestmark = pytest.mark.anyio


def _exits(code: int, **config: object) -> dict[str, object]:
    return {"image": "x", "init": {"exec": ["python", "-c", f"raise SystemExit({code})"]},
            **config}  # fmt: skip


async def test_policy_no_never_restarts(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, _exits(1, restart={"policy": "no"}, auto_destroy=True))
    await wait_state(client, app, machine["id"], "destroyed")
    exits = await exit_events(client, app, machine["id"])
    assert [e["exit_code"] for e in exits] == [1]


async def test_on_failure_retries_then_gives_up(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = _exits(2, restart={"policy": "on-failure", "max_retries": 2}, auto_destroy=True)
    machine = await launch(client, app, config)
    await wait_state(client, app, machine["id"], "destroyed")
    exits = await exit_events(client, app, machine["id"])
    assert [e["exit_code"] for e in exits] == [2, 2, 2]  # first run + 2 retries
    assert [e["restarting"] for e in exits] == [False, True, True]
    events = (await client.get(f"/v1/apps/{app}/machines/{machine['id']}/events")).json()
    counts = [e["request"]["restart_count"] for e in events if e["type"] == "exit"]
    assert counts == [2, 1, 0]


async def test_on_failure_does_not_restart_a_clean_exit(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = _exits(0, restart={"policy": "on-failure", "max_retries": 5})
    machine = await launch(client, app, config)
    await wait_state(client, app, machine["id"], "stopped")
    assert len(await exit_events(client, app, machine["id"])) == 1


async def test_default_policy_is_on_failure(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, _exits(0))
    await wait_state(client, app, machine["id"], "stopped")
    assert [e["restarting"] for e in await exit_events(client, app, machine["id"])] == [False]


async def test_always_restarts_even_clean_exits_until_stopped(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    code = (
        "import os, pathlib, time; p = pathlib.Path(os.environ['FLY_EMULATOR_ROOT'], 'runs'); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); "
        "time.sleep(600) if n >= 3 else None"
    )
    config = {"image": "x", "init": {"exec": ["python", "-c", code]},
              "restart": {"policy": "always"}}  # fmt: skip
    machine = await launch(client, app, config)
    url = f"/v1/apps/{app}/machines/{machine['id']}"

    # Two clean exits, then the third run sleeps.
    async def exited_twice() -> bool:
        return len(await exit_events(client, app, machine["id"])) >= 2

    await wait_for_async(exited_twice, "two exits of the machine", SAFETY_TIMEOUT, 0.02)
    await wait_state(client, app, machine["id"], "started")
    exits = await exit_events(client, app, machine["id"])
    assert [(e["exit_code"], e["restarting"]) for e in exits] == [(0, True), (0, True)]
    await client.post(f"{url}/stop", json={"signal": "SIGKILL"})
    await wait_state(client, app, machine["id"], "stopped")
    assert (await exit_events(client, app, machine["id"]))[0]["restarting"] is False
