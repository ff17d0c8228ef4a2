"""Machine leases: an exclusive lock on changing a machine, shown by a nonce.

While a lease is active, every mutation of its machine must carry the nonce in the
``fly-machine-lease-nonce`` header, else 409 (NOTES §1). Leases expire on their own; expiry is
checked when they are read, so nothing needs to sweep them.
"""

from __future__ import annotations

import time
from typing import Any

from .config import DEFAULT_LEASE_TTL
from .errors import ApiError, bad_request
from .model import Lease, Machine, MachineState, rfc3339
from .state import Emulator

#: Who holds leases taken through the emulator (Fly shows the token's user).
LEASE_OWNER = "emulator@tokens.fly.io"


def _held_message(machine: Machine, lease: Lease) -> str:
    return (
        f"aborted: machine ID {machine.id} lease currently held by {lease.owner}, "
        f"expires at {rfc3339(lease.expires_at)}"
    )


def check_lease(machine: Machine, nonce: str | None) -> None:
    """409 unless the machine is unleased or ``nonce`` is its lease's."""
    lease = machine.active_lease()
    if lease is not None and nonce != lease.nonce:
        raise ApiError(409, _held_message(machine, lease))


def grant_lease(emu: Emulator, machine: Machine, ttl: int, description: str) -> Lease:
    """A new lease on ``machine`` (the caller checked none is held)."""
    if ttl <= 0:
        raise bad_request(f"invalid ttl {ttl}: must be a positive number of seconds")
    lease = Lease(
        nonce=emu.ids.token_hex(16),
        expires_at=int(time.time()) + ttl,
        owner=LEASE_OWNER,
        description=description,
        version=machine.instance_id,
    )
    machine.lease = lease
    return lease


def envelope(lease: Lease) -> dict[str, Any]:
    """Fly's lease answer: ``{"status": "success", "data": {...}}`` (NOTES §10)."""
    return {"status": "success", "data": lease.to_json()}


def acquire(
    emu: Emulator,
    app_name: str,
    machine_id: str,
    ttl: int | None,
    description: str,
    nonce: str | None,
) -> dict[str, Any]:
    """Take a lease, or refresh the held one when ``nonce`` is its nonce."""
    ttl = DEFAULT_LEASE_TTL if ttl is None else ttl
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        if machine.state is MachineState.DESTROYED:
            raise ApiError(404, "machine not found")
        held = machine.active_lease()
        if held is not None:
            if nonce != held.nonce:
                raise ApiError(409, _held_message(machine, held))
            if ttl <= 0:
                raise bad_request(f"invalid ttl {ttl}: must be a positive number of seconds")
            held.expires_at = int(time.time()) + ttl
            if description:
                held.description = description
            return envelope(held)
        return envelope(grant_lease(emu, machine, ttl, description))


def show(emu: Emulator, app_name: str, machine_id: str) -> dict[str, Any]:
    """The machine's active lease, in Fly's envelope; a 404 when it has none."""
    with emu.lock:
        held = emu.machine(app_name, machine_id).active_lease()
        if held is None:
            raise ApiError(404, "lease not found")
        return envelope(held)


def release(emu: Emulator, app_name: str, machine_id: str, nonce: str | None) -> dict[str, Any]:
    """Release the machine's lease; the lease's ``nonce`` is required and must match."""
    if not nonce:
        raise bad_request("fly-machine-lease-nonce header is required")
    with emu.lock:
        machine = emu.machine(app_name, machine_id)
        check_lease(machine, nonce)
        machine.lease = None
        return {"ok": True}
