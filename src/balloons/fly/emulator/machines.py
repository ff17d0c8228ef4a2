"""Machine operations behind the ``/v1/apps/{app}/machines`` routes.

Each function takes the :class:`~balloons.fly.emulator.state.Emulator`, the already-decoded
request values, and returns the JSON body to send, raising
:class:`~balloons.fly.emulator.errors.ApiError` for Fly's error answers. Each holds the
emulator's lock for its whole (short, never awaiting) critical section. Wait and leases live in
their own modules.
"""

from __future__ import annotations

import copy
import signal
import time
from collections.abc import Mapping
from typing import Any

from . import procs
from .config import DEFAULT_STOP_TIMEOUT
from .errors import MACHINE_NOT_FOUND, ApiError, bad_request, precondition
from .leases import check_lease, grant_lease
from .model import Machine, MachineState
from .parsing import parse_duration, parse_signal
from .state import Emulator

#: Fly's default stop signal (Docs: machines-resource, stop).
DEFAULT_STOP_SIGNAL = signal.SIGINT


def _config_from(body: Mapping[str, Any]) -> dict[str, Any]:
    config = body.get("config")
    if not isinstance(config, dict):
        raise bad_request("invalid request: config is required")
    if not config.get("image"):
        raise bad_request("invalid config.image: an image is required")
    files = config.get("files") or []
    if not isinstance(files, list):
        raise bad_request("invalid config.files: expected a list")
    procs.check_files(files)
    procs.check_command_fields(config)
    echoed = copy.deepcopy(config)
    echoed.setdefault("dns", {})  # Fly echoes configs with an empty dns section
    return echoed


def _check_command(emu: Emulator, config: Mapping[str, Any]) -> None:
    # Refuse at create time a machine the emulator could never run, instead of letting it
    # fail at boot: that is a set-up mistake, not behaviour worth emulating.
    mapped = procs.lookup_image(emu.config.images, str(config.get("image", ""))) is not None
    procs.command_for(config, emu.config.image_commands, emu.config.default_command, mapped=mapped)


def _not_destroyed(machine: Machine, action: str) -> None:
    if machine.state in (MachineState.DESTROYING, MachineState.DESTROYED):
        raise precondition(f"unable to {action} machine {machine.id}: it is {machine.state}")


def create(emu: Emulator, app_name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create (and, unless ``skip_launch``, start) a machine; answers ``created``."""
    with emu.lock:
        if emu.closed:
            raise ApiError(503, "emulator is shutting down")
        emu.app(app_name)
        config = _config_from(body)
        _check_command(emu, config)
        region = str(body.get("region") or emu.config.region)
        emu.faults.check_capacity(region)
        name = str(body.get("name") or emu.ids.machine_name())
        for other in emu.machines.values():
            if other.app == app_name and other.name == name and other.state not in (
                MachineState.DESTROYING, MachineState.DESTROYED,
            ):  # fmt: skip
                raise ApiError(
                    409,
                    f"unique machine name violation, machine ID {other.id} already exists "
                    f'with name "{name}"',
                )
        now = time.time()
        machine_id = emu.ids.machine_id()
        machine = Machine(
            id=machine_id,
            app=app_name,
            name=name,
            region=region,
            instance_id=emu.ids.ulid(),
            private_ip=emu.ids.private_ip(),
            config=config,
            created_at=now,
            updated_at=now,
        )
        emu.machines[machine.id] = machine
        emu.set_state(machine, MachineState.CREATED)
        emu.add_event(machine, "launch", "created", "user")
        if body.get("lease_ttl"):
            lease = grant_lease(emu, machine, int(body["lease_ttl"]), "")
            machine.create_nonce = lease.nonce
        answer = machine.to_json()
        if machine.create_nonce is not None:
            answer["nonce"] = machine.create_nonce
        if not body.get("skip_launch"):
            emu.begin_start(machine)
        return answer


def get(emu: Emulator, app_name: str, machine_id: str) -> dict[str, Any]:
    """The machine as the API shows it; a 404 when there is none."""
    with emu.lock:
        return emu.machine(app_name, machine_id).to_json()


def list_machines(
    emu: Emulator,
    app_name: str,
    *,
    include_deleted: bool,
    states: set[str],
    region: str | None,
    metadata: Mapping[str, str],
    summary: bool,
) -> list[dict[str, Any]]:
    """Machines of an app, oldest first, filtered as ``GET .../machines`` asks."""
    with emu.lock:
        emu.app(app_name)
        found = []
        for machine in sorted(emu.machines.values(), key=lambda m: (m.created_at, m.id)):
            if machine.app != app_name:
                continue
            if machine.state is MachineState.DESTROYED and not include_deleted:
                continue
            if states and str(machine.state) not in states:
                continue
            if region and machine.region != region:
                continue
            own = machine.config.get("metadata") or {}
            if any(own.get(key) != value for key, value in metadata.items()):
                continue
            found.append(machine.to_json(summary=summary))
        return found


def update(
    emu: Emulator, app_name: str, machine_id: str, body: Mapping[str, Any], nonce: str | None
) -> dict[str, Any]:
    """Replace the config (no partial updates on Fly); a new version, restarted if running."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        _not_destroyed(machine, "update")
        config = _config_from(body)
        _check_command(emu, config)
        machine.config = config
        machine.instance_id = emu.ids.ulid()
        if body.get("name"):
            machine.name = str(body["name"])
        emu.add_event(machine, "update", "replacing", "user")
        running = machine.state in (
            MachineState.STARTING, MachineState.STARTED, MachineState.STOPPING,
        )  # fmt: skip
        if running:
            emu.request_stop(machine, signal.SIGTERM, DEFAULT_STOP_TIMEOUT, then_start=True)
        elif not body.get("skip_launch"):
            emu.begin_start(machine)
        else:
            machine.updated_at = time.time()
        return machine.to_json()


def start(emu: Emulator, app_name: str, machine_id: str, nonce: str | None) -> dict[str, Any]:
    """Start a created or stopped machine (the lease checked when one is held)."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        previous = machine.state
        if previous not in (MachineState.CREATED, MachineState.STOPPED):
            raise precondition(f"unable to start machine from current state: '{previous}'")
        emu.faults.check_capacity(machine.region)
        emu.begin_start(machine)
        return {"previous_state": str(previous), "migrated": False, "new_host": ""}


def _stop_settings(machine: Machine, body: Mapping[str, Any]) -> tuple[int, float]:
    stop_config = machine.config.get("stop_config") or {}
    raw_signal = body.get("signal") or stop_config.get("signal")
    raw_timeout = body.get("timeout") or stop_config.get("timeout")
    sig = DEFAULT_STOP_SIGNAL if raw_signal is None else parse_signal(raw_signal)
    timeout = (
        DEFAULT_STOP_TIMEOUT if raw_timeout is None else parse_duration(raw_timeout, "timeout")
    )
    return sig, timeout


def stop(
    emu: Emulator, app_name: str, machine_id: str, body: Mapping[str, Any], nonce: str | None
) -> dict[str, Any]:
    """Signal the main process, SIGKILL after the timeout; stopping a stopped machine is ok."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        _not_destroyed(machine, "stop")
        sig, timeout = _stop_settings(machine, body)
        if machine.state in (MachineState.STARTING, MachineState.STARTED):
            emu.request_stop(machine, sig, timeout)
        return {"ok": True}


def restart(
    emu: Emulator, app_name: str, machine_id: str, query: Mapping[str, str], nonce: str | None
) -> dict[str, Any]:
    """Restart a machine: stop a running one then start it again, or start a created or stopped
    one (the lease checked when one is held)."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        _not_destroyed(machine, "restart")
        sig, timeout = _stop_settings(machine, query)
        if machine.state in (MachineState.STARTING, MachineState.STARTED):
            emu.request_stop(machine, sig, timeout, then_start=True)
        elif machine.state in (MachineState.CREATED, MachineState.STOPPED):
            emu.begin_start(machine)
        else:
            raise precondition(f"unable to restart machine from current state: '{machine.state}'")
        return {"ok": True}


def send_signal(
    emu: Emulator, app_name: str, machine_id: str, body: Mapping[str, Any], nonce: str | None
) -> dict[str, Any]:
    """Send a signal to the main process; what happens next is the process's business."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        if "signal" not in body:
            raise bad_request("invalid request: signal is required")
        sig = parse_signal(body["signal"])
        if machine.process is None:
            raise precondition(f"machine {machine.id} is not running (state {machine.state})")
        machine.process.popen.send_signal(sig)
        emu.tick_soon()
        return {"ok": True}


def delete(
    emu: Emulator, app_name: str, machine_id: str, force: bool, nonce: str | None
) -> dict[str, Any]:
    """Destroy a machine; a running one only with ``force``/``kill``."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        if machine.state in (MachineState.DESTROYING, MachineState.DESTROYED):
            raise ApiError(404, MACHINE_NOT_FOUND)
        check_lease(machine, nonce)
        if machine.state not in (MachineState.CREATED, MachineState.STOPPED) and not force:
            raise precondition(
                f"unable to destroy machine {machine.id}, not currently stopped "
                f"(state {machine.state}); use force=true"
            )
        emu.destroy(machine)
        return {"ok": True}


def events(emu: Emulator, app_name: str, machine_id: str, limit: int) -> list[dict[str, Any]]:
    """Newest first; Fly's default limit is 20, its maximum 50."""
    limit = 20 if limit <= 0 else min(limit, 50)
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        return [event.to_json() for event in reversed(machine.events[-limit:])]


def versions(emu: Emulator, app_name: str, machine_id: str) -> list[dict[str, Any]]:
    """Only the current version: the emulator does not keep old configs."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        return [{"version": machine.instance_id, "user_config": copy.deepcopy(machine.config)}]
