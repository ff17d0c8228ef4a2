"""``--image REF=DIR``: a machine of a mapped image runs in a fresh copy of DIR, its command
resolved as a container's, its programs found on the emulator's PATH; other images as before."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from balloons.fly.emulator import create_app
from balloons.fly.emulator.cli import main
from balloons.fly.emulator.errors import ApiError
from balloons.fly.emulator.procs import command_for

from .helpers import exit_events, launch, new_app, output, wait_state

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]

#: The simplest Fly job demo: read a key, write another, with redis-py; nothing of balloons.
WORKER = """\
import os
import pathlib

import redis

r = redis.Redis.from_url(os.environ["REDIS_URL"])
text = r.get(os.environ["INPUT_KEY"]).decode()
r.set(os.environ["OUTPUT_KEY"], text.upper())
pathlib.Path("processed.txt").write_text(text)
"""


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A worker image's WORKDIR: its script and its own requirements."""
    directory = tmp_path / "image"
    directory.mkdir()
    (directory / "worker.py").write_text(WORKER)
    (directory / "requirements.txt").write_text("redis\n")
    return directory


@pytest.fixture
def search_path(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose first ``python`` is a wrapper (logging its calls) around an interpreter
    that has redis-py, and the wrapper's log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "python-calls.log"
    wrapper = bindir / "python"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}", calls


async def _run(client: httpx.AsyncClient, app: str, config: dict[str, Any]) -> dict[str, Any]:
    machine = await launch(client, app, {**config, "restart": {"policy": "no"}})
    await wait_state(client, app, machine["id"], "stopped")
    return machine


@pytest.mark.anyio
async def test_plain_worker_image_runs_unmodified(
    make_client: MakeClient,
    image_dir: Path,
    search_path: tuple[str, Path],
    redis_url: str,
    r: redis.Redis,
) -> None:
    path, calls = search_path
    client = await make_client(images={"registry.fly.io/demo": image_dir}, path=path)
    app = await new_app(client, "demo")
    r.set("demo:in", "hello from redis")
    config = {
        "image": "registry.fly.io/demo:deployment-01J0",
        "init": {"cmd": ["python", "worker.py"]},
        "env": {"REDIS_URL": redis_url, "INPUT_KEY": "demo:in", "OUTPUT_KEY": "demo:out"},
    }
    machine = await _run(client, app, config)
    events = await exit_events(client, app, machine["id"])
    assert events[0]["exit_code"] == 0, await output(client, machine["id"])
    assert r.get("demo:out") == b"HELLO FROM REDIS"
    # The PATH's python ran it, in a copy of the image directory, which stays as it was.
    assert calls.read_text().split() == ["worker.py"]
    root = client.emulator.machine_dir(machine["id"]) / "root"  # type: ignore[attr-defined]
    assert (root / "processed.txt").read_text() == "hello from redis"
    assert (root / "requirements.txt").exists()
    assert sorted(p.name for p in image_dir.iterdir()) == ["requirements.txt", "worker.py"]


@pytest.mark.anyio
async def test_mapped_image_starts_from_a_fresh_copy_each_time(
    make_client: MakeClient, image_dir: Path, search_path: tuple[str, Path]
) -> None:
    path, _ = search_path
    client = await make_client(images={"demo": image_dir}, path=path)
    app = await new_app(client, "fresh")
    listing = "import json, os; print(json.dumps(sorted(os.listdir())))"
    config = {"image": "demo", "processes": [{"entrypoint": ["python", "-c"], "cmd": [listing]}]}
    machine = await _run(client, app, config)
    root = client.emulator.machine_dir(machine["id"]) / "root"  # type: ignore[attr-defined]
    (root / "left-behind").write_text("from the last run")
    response = await client.post(f"/v1/apps/{app}/machines/{machine['id']}/start")
    assert response.status_code == 200, response.text
    await wait_state(client, app, machine["id"], "started")
    await wait_state(client, app, machine["id"], "stopped")
    runs = [json.loads(line) for line in (await output(client, machine["id"])).splitlines()]
    assert runs == [["requirements.txt", "worker.py"]] * 2


@pytest.mark.anyio
async def test_unmapped_image_keeps_the_emulators_interpreter_and_an_empty_directory(
    make_client: MakeClient, image_dir: Path, search_path: tuple[str, Path]
) -> None:
    path, calls = search_path
    client = await make_client(images={"demo": image_dir}, path=path)
    app = await new_app(client, "plain")
    code = "import json, os, sys; print(json.dumps([sys.executable, os.listdir()]))"
    machine = await _run(
        client, app, {"image": "emu/python", "init": {"exec": ["python", "-c", code]}}
    )
    exe, listing = json.loads((await output(client, machine["id"])).splitlines()[-1])
    assert exe == sys.executable
    assert listing == []
    assert not calls.exists()


@pytest.mark.anyio
async def test_program_missing_from_path_fails_to_exec(
    make_client: MakeClient, image_dir: Path
) -> None:
    client = await make_client(images={"demo": image_dir}, path=str(image_dir))
    app = await new_app(client, "missing")
    machine = await _run(client, app, {"image": "demo", "init": {"cmd": ["python", "worker.py"]}})
    [event] = await exit_events(client, app, machine["id"])
    assert event["exit_code"] == 127
    assert "'python' not found" in event["error"]


MAPPED = {"image": "demo"}


@pytest.mark.parametrize(
    ("fields", "argv"),
    [
        # init.exec replaces everything, processes[0].exec too when init has none
        ({"init": {"exec": ["a"], "entrypoint": ["e"], "cmd": ["c"]}}, ["a"]),
        ({"init": {"cmd": ["c"]}, "processes": [{"exec": ["p"]}]}, ["p"]),
        # entrypoint + cmd, each from init first, then processes[0]
        ({"init": {"entrypoint": ["e"]}, "processes": [{"cmd": ["c"]}]}, ["e", "c"]),
        ({"init": {"cmd": ["c"]}, "processes": [{"entrypoint": ["e"], "cmd": ["x"]}]},
         ["e", "c"]),
        # the image's default command is its CMD: kept alone, dropped with an entrypoint
        ({}, ["default", "cmd"]),
        ({"init": {"entrypoint": ["e"]}}, ["e"]),
        # no interpreter substitution: python is whatever the PATH finds
        ({"init": {"cmd": ["python", "w.py"]}}, ["python", "w.py"]),
    ],
)  # fmt: skip
def test_container_command_precedence(fields: dict[str, Any], argv: list[str]) -> None:
    image_commands = {"demo": ["default", "cmd"]}
    assert command_for({**MAPPED, **fields}, image_commands, None, mapped=True) == argv


def test_mapped_image_without_any_command_is_refused() -> None:
    with pytest.raises(ApiError) as raised:
        command_for({"image": "demo"}, {}, None, mapped=True)
    assert raised.value.status_code == 400
    assert "'demo'" in raised.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("nodir", "expects REF=DIR, got 'nodir'"), ("=/tmp", "expects REF=DIR, got '=/tmp'"),
     ("demo=", "expects REF=DIR, got 'demo='"), ("demo={missing}", "is not an existing directory")],
)  # fmt: skip
def test_bad_image_flag_is_a_usage_error_naming_it(
    value: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = value.format(missing=tmp_path / "no-such-dir")
    with pytest.raises(SystemExit) as exited:
        main(["--image", value])
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert expected in err
    assert repr(value) in err


def test_create_app_refuses_a_missing_image_directory(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(ValueError, match=r"demo=.*gone.*not an existing directory"):
        create_app(images={"demo": missing}, work_dir=tmp_path)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "named"),
    [({"init": []}, "config.init"), ({"init": {"exec": "python"}}, "config.init.exec 'python'"),
     ({"processes": {"cmd": ["x"]}}, "config.processes"),
     ({"processes": [{"cmd": ["x", 1]}]}, "config.processes[0].cmd ['x', 1]")],
)  # fmt: skip
async def test_malformed_command_fields_are_refused(
    make_client: MakeClient, image_dir: Path, fields: dict[str, Any], named: str
) -> None:
    client = await make_client(images={"demo": image_dir})
    app = await new_app(client, "malformed")
    raw: httpx.AsyncClient = client.raw  # type: ignore[attr-defined]
    response = await raw.post(
        f"/v1/apps/{app}/machines", json={"config": {"image": "demo", **fields}}
    )
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]
