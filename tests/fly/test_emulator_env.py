"""What a machine process sees: command, environment, secrets, files; and secrets never leak."""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Awaitable, Callable

import httpx
import pytest

from .helpers import launch, new_app, output, py, wait_state

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
DUMP_ENV = (
    "import json, os, sys; print(json.dumps({'env': dict(os.environ), 'exe': sys.executable}))"
)


async def _run_and_read(client: httpx.AsyncClient, app: str, config: dict[str, object],
                        **body: object) -> dict[str, object]:  # fmt: skip
    machine = await launch(client, app, {**config, "restart": {"policy": "no"}}, **body)
    await wait_state(client, app, machine["id"], "stopped")
    result: dict[str, object] = json.loads((await output(client, machine["id"])).splitlines()[-1])
    result["machine"] = machine
    return result


async def test_clean_environment_with_flys_variables(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMULATOR_OWN_VARIABLE", "must-not-leak")
    client = await make_client(base_env={"BASE": "b"}, region="ams")
    app = await new_app(client, "envapp")
    config = py(DUMP_ENV, env={"JOB_ID": "j-1"}, guest={"memory_mb": 512},
                metadata={"fly_process_group": "worker"})  # fmt: skip
    result = await _run_and_read(client, app, config, region="ord")
    env = result["env"]
    machine = result["machine"]
    assert isinstance(env, dict) and isinstance(machine, dict)
    assert "EMULATOR_OWN_VARIABLE" not in env
    assert env["JOB_ID"] == "j-1"
    assert env["BASE"] == "b"
    assert env["FLY_APP_NAME"] == "envapp"
    assert env["FLY_MACHINE_ID"] == env["FLY_ALLOC_ID"] == machine["id"]
    assert env["FLY_REGION"] == "ord"
    assert env["PRIMARY_REGION"] == "ams"
    assert env["FLY_IMAGE_REF"] == "emu/python"
    assert env["FLY_PRIVATE_IP"] == machine["private_ip"]
    assert env["FLY_PROCESS_GROUP"] == "worker"
    assert env["FLY_VM_MEMORY_MB"] == "512"
    assert env["FLY_MACHINE_VERSION"] == machine["instance_id"]
    assert set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "BASE",
        "JOB_ID",
        "FLY_EMULATOR_ROOT",
        "LC_CTYPE",
    } | {k for k in env if k.startswith("FLY_") or k == "PRIMARY_REGION"}
    # "python" is the emulator's own interpreter, not whatever is first on PATH.
    assert result["exe"] == sys.executable


async def test_secrets_reach_machines_but_no_response_or_log(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    global_secret, app_secret = "global-secret-value-1234", "app-secret-value-5678"
    client = await make_client(secrets={"GLOBAL_SECRET": global_secret})
    app = await new_app(client, "secretive")
    set_one = await client.post(f"/v1/apps/{app}/secrets/APP_SECRET", json={"value": app_secret})
    assert set_one.status_code == 201
    many = await client.post(f"/v1/apps/{app}/secrets",
                             json={"values": {"OTHER": "x", "GONE": "y"}})  # fmt: skip
    assert many.status_code == 200
    assert (await client.delete(f"/v1/apps/{app}/secrets/GONE")).json()["version"] == 3
    listed = (await client.get(f"/v1/apps/{app}/secrets", params={"show_secrets": "true"})).json()
    assert [s["name"] for s in listed["secrets"]] == ["APP_SECRET", "OTHER"]
    assert all("value" not in s and s["digest"] for s in listed["secrets"])
    assert (await client.get(f"/v1/apps/{app}/secrets/APP_SECRET")).json()["name"] == "APP_SECRET"

    result = await _run_and_read(client, app, py(DUMP_ENV))
    env = result["env"]
    assert isinstance(env, dict)
    assert env["GLOBAL_SECRET"] == global_secret
    assert env["APP_SECRET"] == app_secret
    assert env["OTHER"] == "x" and "GONE" not in env

    deleted = await client.delete(f"/v1/apps/{app}/secrets/APP_SECRET")
    assert deleted.status_code == 200
    emulator = client.emulator  # type: ignore[attr-defined]
    exchanges = client.conformance_exchanges()  # type: ignore[attr-defined]
    assert exchanges
    for _request, response in exchanges:
        for secret in (global_secret, app_secret):
            assert secret not in response.text
            assert secret not in str(response.headers)
    assert global_secret not in caplog.text and app_secret not in caplog.text
    assert global_secret not in repr(emulator.config) and global_secret not in repr(emulator)
    assert app_secret not in repr(emulator.apps[app])


async def test_files_are_written_under_the_emulator_root(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    payload = {"x": 1}
    files = [{"guest_path": "/job/payload.json",
              "raw_value": base64.b64encode(json.dumps(payload).encode()).decode()}]  # fmt: skip
    code = ("import json, os; root = os.environ['FLY_EMULATOR_ROOT']; "
            "print(json.dumps({'payload': json.load(open(root + '/job/payload.json')), "
            "'cwd': os.getcwd(), 'root': root}))")  # fmt: skip
    result = await _run_and_read(client, app, py(code, files=files))
    assert result["payload"] == payload
    assert result["cwd"] == result["root"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"image": "x", "init": {"entrypoint": ["python", "-c"], "cmd": ["print('ep+cmd')"]}},
         "ep+cmd"),
        ({"image": "x", "init": {"cmd": ["python", "-c", "print('cmd only')"]}}, "cmd only"),
        ({"image": "x", "processes": [{"exec": ["python", "-c", "print('process exec')"]}]},
         "process exec"),
        ({"image": "x", "processes": [{"entrypoint": ["python"],
                                        "cmd": ["-c", "print('process ep')"]}]}, "process ep"),
    ],
)  # fmt: skip
async def test_command_sources(
    client: httpx.AsyncClient, config: dict[str, object], expected: str
) -> None:
    app = await new_app(client)
    machine = await launch(client, app, {**config, "restart": {"policy": "no"}})
    await wait_state(client, app, machine["id"], "stopped")
    assert expected in await output(client, machine["id"])


async def test_image_commands_match_with_or_without_tag(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    for image in ("registry.fly.io/emu-app", "registry.fly.io/emu-app:deployment-01H9RK9E"):
        machine = await launch(client, app, {"image": image, "restart": {"policy": "no"}})
        await wait_state(client, app, machine["id"], "stopped")
        events = (await client.get(f"/v1/apps/{app}/machines/{machine['id']}/events")).json()
        assert events[0]["request"]["exit_event"]["exit_code"] == 7  # the mapped command ran


async def test_default_command(make_client: MakeClient) -> None:
    client = await make_client(default_command=["python", "-c", "print('the default')"])
    app = await new_app(client)
    machine = await launch(client, app, {"image": "anything", "restart": {"policy": "no"}})
    await wait_state(client, app, machine["id"], "stopped")
    assert "the default" in await output(client, machine["id"])
