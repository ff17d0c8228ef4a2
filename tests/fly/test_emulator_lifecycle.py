"""Machine lifecycle: create, wait, stop, start, update, signal, delete, events, listing."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.waiting import wait_for_async

from .helpers import MACHINE_ID, ULID, exit_events, launch, new_app, output, py, wait_state

pytestmark = pytest.mark.anyio

SLEEP = "import time; time.sleep(600)"


async def test_create_answers_200_created_with_flys_shape(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = {"image": "emu/sleep", "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}}
    response = await client.post(f"/v1/apps/{app}/machines", json={"config": config})
    assert response.status_code == 200  # not 201
    machine = response.json()
    assert MACHINE_ID.match(machine["id"])
    assert ULID.match(machine["instance_id"])
    assert machine["name"]  # generated
    assert machine["state"] == "created"
    assert machine["region"] == "iad"
    assert machine["private_ip"].startswith("fdaa:")
    assert machine["config"] == {**config, "dns": {}}
    assert machine["image_ref"]["repository"] == "emu/sleep"
    [event] = machine["events"]
    assert event["type"] == "launch" and event["status"] == "created"
    assert event["source"] == "user"
    assert abs(event["timestamp"] - time.time() * 1000) < 3_600_000  # unix ms, not seconds
    assert ULID.match(event["id"])


async def test_job_runs_exits_and_auto_destroys(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = py("print('hello from the job'); raise SystemExit(3)",
                auto_destroy=True, restart={"policy": "no"})  # fmt: skip
    machine = await launch(client, app, config, name="job-1", region="ord")
    done = await wait_state(client, app, machine["id"], "destroyed")
    assert done["state"] == "destroyed"

    # Destroyed machines stay readable, with the exit event.
    got = (await client.get(f"/v1/apps/{app}/machines/{machine['id']}")).json()
    assert got["state"] == "destroyed"
    assert got["name"] == "job-1" and got["region"] == "ord"
    types = [e["type"] for e in got["events"]]
    assert types == ["exit", "start", "launch"]  # newest first
    timestamps = [e["timestamp"] for e in got["events"]]
    assert timestamps == sorted(timestamps, reverse=True)
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["exit_code"] == 3
    assert exit_event["oom_killed"] is False
    assert exit_event["requested_stop"] is False
    assert exit_event["signal"] == -1
    assert exit_event["restarting"] is False
    assert exit_event["exited_at"].endswith("Z")
    assert "hello from the job" in await output(client, machine["id"])

    # Listed only with include_deleted.
    listed = (await client.get(f"/v1/apps/{app}/machines")).json()
    assert listed == []
    deleted = (await client.get(f"/v1/apps/{app}/machines",
                                params={"include_deleted": "true"})).json()  # fmt: skip
    assert [m["id"] for m in deleted] == [machine["id"]]


async def test_a_stopped_auto_destroy_machine_goes_through_flys_states_in_order(
    client: httpx.AsyncClient,
) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py(SLEEP, auto_destroy=True, restart={"policy": "no"}))
    await wait_state(client, app, machine["id"], "started")
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    # The stop timeout as Go's integer nanoseconds, as older docs send it (NOTES §10).
    stopped = await client.post(f"{url}/stop", json={"signal": "SIGTERM", "timeout": 5 * 10**9})
    assert stopped.status_code == 200 and stopped.json() == {"ok": True}
    assert client.conformance_exceptions()["stop_timeout_as_number"] == 1  # type: ignore[attr-defined]
    await wait_state(client, app, machine["id"], "destroyed")
    # Every state the machine reached, each with the id a wait's from_event_id compares.
    emulator = client.emulator  # type: ignore[attr-defined]
    reached = emulator.machines[machine["id"]].transitions
    assert [str(state) for _, state in reached] == [
        "created", "starting", "started", "stopping", "stopped", "destroying", "destroyed",
    ]  # fmt: skip
    assert [tid for tid, _ in reached] == sorted(tid for tid, _ in reached)
    # A wait from the launch event sees the stop the machine has since left.
    launch_event = machine["events"][0]["id"]
    seen = await wait_state(client, app, machine["id"], "stopped", from_event_id=launch_event)
    assert seen["state"] == "stopped"
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["requested_stop"] is True and exit_event["signal"] == signal.SIGTERM


async def test_without_auto_destroy_an_exited_machine_stops(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py("pass", restart={"policy": "no"}))
    await wait_state(client, app, machine["id"], "stopped")
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["exit_code"] == 0


async def test_start_of_an_exited_machine_runs_its_command_again_with_its_env(
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> None:
    """What a pool's standby machines rely on: a start runs the same process again, with the
    config's env, Fly's variables and the app's secrets, in the same root."""
    client = await make_client(secrets={"APP_SECRET": "s3"})
    app = await new_app(client)
    record = (
        "import os; open('runs.txt', 'a').write(' '.join(os.environ.get(k, '-') for k in "
        "('MARK', 'FLY_MACHINE_ID', 'APP_SECRET')) + chr(10))"
    )
    config = py(record, auto_destroy=False, restart={"policy": "no"}, env={"MARK": "m1"})
    machine = await launch(client, app, config)
    first = await wait_state(client, app, machine["id"], "stopped")
    started = await client.post(f"/v1/apps/{app}/machines/{machine['id']}/start")
    assert started.status_code == 200
    assert started.json()["previous_state"] == "stopped"
    await wait_state(client, app, machine["id"], "stopped", from_event_id=first["event_id"])
    root = client.emulator.machine_dir(machine["id"]) / "root"  # type: ignore[attr-defined]
    line = f"m1 {machine['id']} s3"
    assert (root / "runs.txt").read_text().splitlines() == [line, line]
    assert [e["exit_code"] for e in await exit_events(client, app, machine["id"])] == [0, 0]


async def test_stop_start_and_forced_delete(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py(SLEEP, restart={"policy": "always"}))
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    await wait_state(client, app, machine["id"], "started")

    stopped = await client.post(f"{url}/stop", json={"signal": "SIGTERM", "timeout": "5s"})
    assert stopped.status_code == 200 and stopped.json() == {"ok": True}
    await wait_state(client, app, machine["id"], "stopped")
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["requested_stop"] is True  # so "always" did not restart it
    assert exit_event["signal"] == signal.SIGTERM
    assert exit_event["exit_code"] == 128 + signal.SIGTERM

    started = await client.post(f"{url}/start")
    assert started.status_code == 200
    assert started.json() == {"previous_state": "stopped", "migrated": False, "new_host": ""}
    await wait_state(client, app, machine["id"], "started")
    again = await client.post(f"{url}/start")
    assert again.status_code == 412
    assert again.json()["error"].startswith("failed_precondition:")

    refused = await client.delete(url)
    assert refused.status_code == 412  # running, and no force
    assert (await client.delete(url, params={"force": "true"})).json() == {"ok": True}
    await wait_state(client, app, machine["id"], "destroyed")
    gone = await client.delete(url, params={"force": "true"})
    assert gone.status_code == 404


async def test_delete_accepts_kill_as_fly_go_sends_it(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"})
    await wait_state(client, app, machine["id"], "started")
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    assert (await client.delete(url, params={"kill": "true"})).status_code == 200
    await wait_state(client, app, machine["id"], "destroyed")


async def test_stop_escalates_to_sigkill_after_timeout(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + (
        "print('ready', flush=True); time.sleep(600)"
    )
    machine = await launch(client, app, py(stubborn, restart={"policy": "no"}))
    await wait_state(client, app, machine["id"], "started")
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    # Wait until the handler is installed, so SIGTERM is really ignored.
    await wait_for_async(lambda: _says(client, machine["id"], "ready"), "the handler installed")
    await client.post(f"{url}/stop", json={"signal": "SIGTERM", "timeout": "100ms"})
    await wait_state(client, app, machine["id"], "stopped")
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["signal"] == signal.SIGKILL
    assert exit_event["requested_stop"] is True


async def _says(client: httpx.AsyncClient, machine_id: str, text: str) -> bool:
    return text in await output(client, machine_id)


async def test_signal_by_name_and_by_number(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    for sig in ("SIGKILL", 9):
        machine = await launch(client, app, py(SLEEP, restart={"policy": "no"}))
        await wait_state(client, app, machine["id"], "started")
        url = f"/v1/apps/{app}/machines/{machine['id']}"
        response = await client.post(f"{url}/signal", json={"signal": sig})
        assert response.status_code == 200
        await wait_state(client, app, machine["id"], "stopped")
        [exit_event] = await exit_events(client, app, machine["id"])
        assert exit_event["signal"] == 9
        assert exit_event["requested_stop"] is False
    not_running = await client.post(f"{url}/signal", json={"signal": "SIGTERM"})
    assert not_running.status_code == 412
    bad = await client.raw.post(f"{url}/signal", json={"signal": "SIGNOPE"})  # type: ignore[attr-defined]
    assert bad.status_code == 400


async def test_skip_launch_then_start(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, {"image": "emu/sleep"}, skip_launch=True)
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    assert (await client.get(url)).json()["state"] == "created"
    started = await client.post(f"{url}/start")
    assert started.json()["previous_state"] == "created"
    await wait_state(client, app, machine["id"], "started")


async def test_update_replaces_config_and_version(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py(SLEEP, env={"V": "1"}))
    await wait_state(client, app, machine["id"], "started")
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    code = "import os; print('V=' + os.environ['V'], flush=True); import time; time.sleep(600)"
    updated = await client.post(url, json={"config": py(code, env={"V": "2"})})
    assert updated.status_code == 200
    body = updated.json()
    assert body["instance_id"] != machine["instance_id"]
    assert body["config"]["env"] == {"V": "2"}
    assert body["events"][0]["type"] == "update"
    await wait_state(client, app, machine["id"], "started", version=body["instance_id"])
    versions = (await client.get(f"{url}/versions")).json()
    assert versions == [{"version": body["instance_id"], "user_config": body["config"]}]
    await wait_for_async(lambda: _says(client, machine["id"], "V=2"), "the new version's output")


async def test_restart_endpoint(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py(SLEEP, restart={"policy": "no"}))
    await wait_state(client, app, machine["id"], "started")
    url = f"/v1/apps/{app}/machines/{machine['id']}"
    before = (await client.get(f"{url}/events")).json()[0]["id"]
    response = await client.post(f"{url}/restart", params={"signal": "SIGTERM", "timeout": "5s"})
    assert response.status_code == 200
    await wait_state(client, app, machine["id"], "started", from_event_id=before)
    events = (await client.get(f"{url}/events")).json()
    assert [e["type"] for e in events][:2] == ["start", "exit"]


async def test_events_limit(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    machine = await launch(client, app, py("pass", restart={"policy": "no"}))
    await wait_state(client, app, machine["id"], "stopped")
    url = f"/v1/apps/{app}/machines/{machine['id']}/events"
    assert len((await client.get(url)).json()) == 3
    limited = (await client.get(url, params={"limit": 1})).json()
    assert [e["type"] for e in limited] == ["exit"]


async def test_create_rejects_configs_it_cannot_run(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    url = f"/v1/apps/{app}/machines"
    no_config = await client.post(url, json={"name": "x"})
    assert no_config.status_code == 400
    unknown_image = await client.post(url, json={"config": {"image": "unknown/image"}})
    assert unknown_image.status_code == 400
    assert "no command for image" in unknown_image.json()["error"]
    bad_file = {"image": "emu/sleep", "files": [{"guest_path": "relative", "raw_value": "eA=="}]}
    assert (await client.post(url, json={"config": bad_file})).status_code == 400


async def test_duplicate_live_machine_name_is_409(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    first = await launch(client, app, {"image": "emu/sleep"}, name="unique")
    again = await client.post(f"/v1/apps/{app}/machines",
                              json={"name": "unique", "config": {"image": "emu/sleep"}})  # fmt: skip
    assert again.status_code == 409
    assert first["id"] in again.json()["error"]


async def test_missing_command_exits_127(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = {"image": "x", "init": {"exec": ["/nonexistent/binary"]}, "restart": {"policy": "no"}}
    machine = await launch(client, app, config)
    await wait_state(client, app, machine["id"], "stopped")
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["exit_code"] == 127
    assert "nonexistent" in exit_event["error"]
