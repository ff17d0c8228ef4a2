"""The emulator's command line (Click): its options, and ``python -m balloons.fly.emulator`` as a
real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from balloons.fly.emulator import Faults
from balloons.fly.emulator.cli import command, main, options_from
from tests.ports import free_port
from tests.waiting import wait_for

from .conformance import Conformance, ConformantTransport
from .conftest import SAFETY_TIMEOUT, Served, group_alive

SRC = Path(__file__).resolve().parents[2] / "src"


def test_flags_become_create_app_options() -> None:
    params = command.make_context("fly-emulator", [
        "--token", "T", "--secret", "A=1", "--secret", "B=x=y",
        "--image-command", "img=python -c 'print(1)'", "--seed", "9",
        "--fault-error-rate", "create=0.05", "--fault-error-rate", "start=0.5", "--rate-limit",
        "--boot-delay", "0.5", "--capacity-refusal-rate", "0.1",
        "--capacity-refusal-rate", "ord=0.9", "--kill-rate", "0.01",
        "--lost-response-rate", "0.2", "--destroyed-retention", "60", "--region", "ams",
    ]).params  # fmt: skip
    options = options_from(params)
    assert options["token"] == "T"
    assert options["secrets"] == {"A": "1", "B": "x=y"}
    assert options["image_commands"] == {"img": ["python", "-c", "print(1)"]}
    assert options["region"] == "ams"
    assert options["destroyed_retention"] == 60
    faults = options["faults"]
    assert faults.seed == 9
    assert faults.error_rates == {"create": 0.05, "start": 0.5}
    assert faults.rate_limit is True
    assert faults.boot_delay == 0.5
    assert faults.capacity_refusal_rate == 0.1
    assert faults.capacity_refusal_by_region == {"ord": 0.9}
    assert faults.kill_rate == 0.01
    assert faults.lost_response_rate == 0.2


@pytest.mark.parametrize(
    "argv",
    [["--secret", "NOVALUE"], ["--fault-error-rate", "nosuchaction=0.1"],
     ["--fault-error-rate", "create=2"], ["--kill-rate", "fast"]],
)  # fmt: skip
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err.lower()


def test_module_entry_point_serves_and_kills_machines_on_sigterm(
    tmp_path: Path, conformance: Conformance
) -> None:
    port = free_port()
    secret = "cli-secret-value-42"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "balloons.fly.emulator", "--port", str(port), "--token", "tok",
         "--secret", f"CLI_SECRET={secret}", "--seed", "1", "--work-dir", str(tmp_path / "w"),
         "--image-command", "emu/pid=python -c \"import os, time; "
         "open(os.environ['FLY_EMULATOR_ROOT'] + '/pid', 'w').write(str(os.getpid())); "
         "time.sleep(600)\""],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        transport = ConformantTransport(httpx.HTTPTransport(), conformance)
        with httpx.Client(transport=transport, base_url=f"http://127.0.0.1:{port}",
                          headers={"Authorization": "Bearer tok"}, timeout=60) as client:  # fmt: skip
            _wait_up(proc, client)
            assert client.post("/v1/apps", json={"name": "cli", "org_slug": "personal"}).is_success
            machine = client.post("/v1/apps/cli/machines", json={"config": {"image": "emu/pid"}})
            machine_id = machine.json()["id"]
            started = client.get(f"/v1/apps/cli/machines/{machine_id}/wait",
                                 params={"state": "started", "timeout": 30})  # fmt: skip
            assert started.status_code == 200
            pid_file = tmp_path / "w" / machine_id / "root" / "pid"
            wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the machine's pid")
            pid = int(pid_file.read_text())
            assert group_alive(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=SAFETY_TIMEOUT)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells the truth.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert not group_alive(pid)
    assert secret not in out.decode()
    assert b"Fly Machines API emulator on http://127.0.0.1" in out


def test_without_a_seed_the_log_names_the_one_drawn_and_it_replays_the_run(
    tmp_path: Path, conformance: Conformance, make_server: Callable[..., Served]
) -> None:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "balloons.fly.emulator", "--port", str(port),
         "--work-dir", str(tmp_path / "w")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        transport = ConformantTransport(httpx.HTTPTransport(), conformance)
        with httpx.Client(transport=transport, base_url=f"http://127.0.0.1:{port}",
                          headers={"Authorization": "Bearer any"}, timeout=60) as client:  # fmt: skip
            seed = _wait_up(proc, client)["seed"]
            first = _ids_of_one_run(client)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=SAFETY_TIMEOUT)
    assert isinstance(seed, int)
    assert f"(seed {seed}, 0 secret(s))".encode() in out
    # The same seed and the same requests give the same ids: the run can be replayed.
    replay = make_server(faults=Faults(seed=seed))
    assert _ids_of_one_run(replay.client) == first


def _wait_up(proc: subprocess.Popen[bytes], client: httpx.Client) -> dict[str, Any]:
    """Wait for the emulator the module entry point started; its stats once it answers."""

    def stats() -> dict[str, Any]:
        assert proc.poll() is None, "emulator exited during start-up"
        answer: dict[str, Any] = client.get("/_emulator/stats").json()
        return answer

    return wait_for(
        stats, "the emulator to answer", SAFETY_TIMEOUT, ignoring=(httpx.TransportError,)
    )


def _ids_of_one_run(client: httpx.Client) -> tuple[str, str]:
    assert client.post("/v1/apps", json={"name": "seeded", "org_slug": "personal"}).is_success
    body = {"config": {"image": "emu/none", "init": {"exec": ["true"]}}, "skip_launch": True}
    machine = client.post("/v1/apps/seeded/machines", json=body).json()
    return machine["id"], machine["name"]


def test_one_click_command_for_both_entries_and_a_lean_balloons_help() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                              timeout=SAFETY_TIMEOUT)  # fmt: skip

    via_balloons = run("-m", "balloons", "fly-emulator", "--help")
    via_module = run("-m", "balloons.fly.emulator", "--help")
    assert via_balloons.returncode == via_module.returncode == 0, via_balloons.stderr
    assert via_balloons.stdout.startswith("Usage: balloons fly-emulator [OPTIONS]")
    assert via_module.stdout.startswith("Usage: python -m balloons.fly.emulator [OPTIONS]")
    options = via_balloons.stdout[via_balloons.stdout.index("Options:") :]
    assert options == via_module.stdout[via_module.stdout.index("Options:") :]
    assert "--image-command IMAGE=CMD" in options and "--destroyed-retention S" in options
    # Listing the commands loads neither the emulator's server nor its web framework.
    probe = run("-c", "import sys; from balloons.cli import main; "
                "print(sorted({m.split('.')[0] for m in sys.modules} & "
                "{'starlette', 'uvicorn', 'httpx', 'anyio'}))")  # fmt: skip
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stderr


def test_without_its_server_installed_the_command_names_the_extra() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = ("import sys; sys.modules['uvicorn'] = None; "
            "from balloons.fly.emulator.cli import main; main(['--port', '0'])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=SAFETY_TIMEOUT)  # fmt: skip
    assert done.returncode == 1
    assert "pip install 'balloons[emulator]'" in done.stderr and "Traceback" not in done.stderr
