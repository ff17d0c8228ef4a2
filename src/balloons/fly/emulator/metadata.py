"""Machine metadata: string pairs kept in ``config.metadata``.

Changing metadata does not make a new machine version (``FLY_MACHINE_VERSION`` changes on a
config update only, NOTES §6). PUT replaces the whole map, PATCH merges it, and in a PATCH a
null or empty value deletes its key. Both honour ``machine_version`` (412 when stale).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ApiError, bad_request, precondition
from .leases import check_lease
from .model import Machine
from .state import Emulator


def _store(machine: Machine) -> dict[str, str]:
    store = machine.config.get("metadata")
    if not isinstance(store, dict):
        store = machine.config["metadata"] = {}
    return store


def get_all(emu: Emulator, app_name: str, machine_id: str) -> dict[str, str]:
    """The machine's metadata map."""
    with emu.lock:
        return dict(_store(emu.machine(app_name, machine_id)))


def get_key(emu: Emulator, app_name: str, machine_id: str, key: str) -> dict[str, Any]:
    """The value of metadata ``key``; a 404 when it is not set."""
    with emu.lock:
        store = _store(emu.machine(app_name, machine_id))
        if key not in store:
            raise ApiError(404, f"metadata key {key!r} not found")
        return {"value": store[key]}


def write(
    emu: Emulator,
    app_name: str,
    machine_id: str,
    body: Mapping[str, Any],
    nonce: str | None,
    *,
    replace: bool,
) -> None:
    """PUT (``replace``) or PATCH the metadata map."""
    pairs = body.get("metadata")
    if not isinstance(pairs, dict):
        raise bad_request("invalid request: metadata must be an object")
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        version = body.get("machine_version")
        if version and version != machine.instance_id:
            raise precondition(
                f"machine version {version} is not the current version {machine.instance_id}"
            )
        store = _store(machine)
        if replace:
            store.clear()
        for key, value in pairs.items():
            if value is None or value == "":
                store.pop(str(key), None)
            else:
                store[str(key)] = str(value)
        emu.notifier.notify()


def set_key(
    emu: Emulator, app_name: str, machine_id: str, key: str, value: Any, nonce: str | None
) -> None:
    """Set metadata ``key`` to ``value`` (a string; the lease checked when one is held)."""
    if not isinstance(value, str):
        raise bad_request("invalid request: value must be a string")
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        _store(machine)[key] = value


def delete_key(emu: Emulator, app_name: str, machine_id: str, key: str, nonce: str | None) -> None:
    """Delete metadata ``key`` if it is set (the lease checked when one is held)."""
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        _store(machine).pop(key, None)
