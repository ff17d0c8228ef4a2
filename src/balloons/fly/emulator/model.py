"""The emulator's records (apps, machines, events, leases) and their JSON forms.

These are mutable on purpose: they are the live store, changed only by
:class:`~balloons.fly.emulator.state.Emulator` under its lock. Their ``to_json`` methods
produce exactly what the API returns.
"""

from __future__ import annotations

import copy
import enum
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class MachineState(enum.StrEnum):
    """The machine states the emulator goes through (Fly has a few more, NOTES §4)."""

    CREATED = "created"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


#: States a machine rests in; ``wait?state=settled`` returns in any of them.
SETTLED_STATES = frozenset({
    MachineState.CREATED, MachineState.STARTED, MachineState.STOPPED, MachineState.DESTROYED,
})  # fmt: skip
#: States that only pass; a machine in one is busy.
TRANSIENT_STATES = frozenset({
    MachineState.STARTING, MachineState.STOPPING, MachineState.DESTROYING,
})  # fmt: skip
#: States a machine never leaves.
TERMINAL_STATES = frozenset({MachineState.DESTROYED})


def rfc3339(epoch: float) -> str:
    """``2023-11-08T01:52:30Z``, the form Fly uses for ``created_at``/``updated_at``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(epoch: float) -> str:
    """``2023-09-07T09:28:59.832Z``, the form of an exit event's ``exited_at``."""
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass
class Event:
    """One machine event; ``timestamp`` is unix milliseconds."""

    id: str
    type: str
    status: str
    source: str
    timestamp: int
    request: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The event as the API shows it."""
        body: dict[str, Any] = {
            "id": self.id, "type": self.type, "status": self.status,
            "source": self.source, "timestamp": self.timestamp,
        }  # fmt: skip
        if self.request is not None:
            body["request"] = copy.deepcopy(self.request)
        return body


@dataclass
class Lease:
    """A machine lease; ``expires_at`` is unix seconds."""

    nonce: str
    expires_at: int
    owner: str
    description: str
    version: str

    def active(self, now: float) -> bool:
        """Whether the lease has not expired at ``now`` (unix seconds)."""
        return now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        """The ``data`` of Fly's lease envelope (not the spec's flat ``Lease``, NOTES §10)."""
        return {
            "nonce": self.nonce, "expires_at": self.expires_at, "owner": self.owner,
            "description": self.description, "version": self.version,
        }  # fmt: skip


@dataclass
class Process:
    """A running machine's local process (leader of its own process group)."""

    popen: subprocess.Popen[bytes]
    started_at: float  # time.monotonic()
    #: Monotonic time at which the kill fault strikes, if it does.
    kill_at: float | None = None
    #: Why the emulator signalled it, which shapes the exit event.
    requested_stop: bool = False
    #: Start again once stopped (a restart or an update of a running machine).
    restart_after: bool = False
    oom_killed: bool = False
    fault_killed: bool = False
    #: Monotonic time after which a requested stop escalates to SIGKILL.
    stop_deadline: float | None = None


@dataclass
class Machine:
    """A machine and everything the emulator tracks about it."""

    id: str
    app: str
    name: str
    region: str
    instance_id: str
    private_ip: str
    config: dict[str, Any]
    created_at: float
    updated_at: float
    state: MachineState = MachineState.CREATED
    #: Newest last (the API shows them newest first).
    events: list[Event] = field(default_factory=list)
    #: (ULID, state) for every state reached, for ``wait?from_event_id=``.
    transitions: list[tuple[str, MachineState]] = field(default_factory=list)
    lease: Lease | None = None
    process: Process | None = None
    restart_count: int = 0
    #: Monotonic time at which a ``starting`` machine spawns its process.
    boot_at: float | None = None
    #: Monotonic time at which a destroyed machine is forgotten.
    forget_at: float | None = None
    #: Nonce to show once, in the create response, when created with ``lease_ttl``.
    create_nonce: str | None = None

    def active_lease(self, now: float | None = None) -> Lease | None:
        """The lease if one is held and not expired."""
        if self.lease is not None and self.lease.active(time.time() if now is None else now):
            return self.lease
        return None

    def to_json(self, *, summary: bool = False, event_limit: int = 20) -> dict[str, Any]:
        """The API's ``Machine`` object (``summary`` leaves out config and events)."""
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": str(self.state),
            "region": self.region,
            "instance_id": self.instance_id,
            "version": self.instance_id,
            "private_ip": self.private_ip,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "image_ref": image_ref(str(self.config.get("image", ""))),
        }
        if summary:
            return body
        body["config"] = copy.deepcopy(self.config)
        body["events"] = [e.to_json() for e in reversed(self.events[-event_limit:])]
        body["checks"] = []
        body["host_status"] = "ok"
        return body


@dataclass
class App:
    """An app: a name, an org and the secrets set through the API."""

    id: str
    name: str
    org_slug: str
    network: str
    created_at: float
    #: Secrets set through ``/v1/apps/{app}/secrets`` (name -> (value, updated_at)).
    secrets: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    secrets_version: int = 0

    def to_json(self, machine_count: int) -> dict[str, Any]:
        """The app as the API shows it, with its machine count."""
        return {
            "id": self.id,
            "name": self.name,
            "status": "deployed" if machine_count else "pending",
            "machine_count": machine_count,
            "volume_count": 0,
            "network": self.network,
            "organization": {"name": self.org_slug, "slug": self.org_slug},
        }


def image_ref(image: str) -> dict[str, Any]:
    """Split ``registry/repository:tag@digest`` into Fly's ``image_ref`` object."""
    rest, _, digest = image.partition("@")
    first, _, remainder = rest.partition("/")
    # Docker's rule: the first component is a registry only if it looks like a host.
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "registry-1.docker.io", rest
        if "/" not in path:
            path = "library/" + path
    repository, sep, tag = path.rpartition(":")
    if not sep or "/" in tag:
        repository, tag = path, "latest"
    return {"registry": registry, "repository": repository, "tag": tag,
            "digest": digest, "labels": {}}  # fmt: skip


def exit_event(
    exit_code: int,
    sig: int,
    *,
    oom_killed: bool = False,
    requested_stop: bool = False,
    error: str = "",
) -> dict[str, Any]:
    """An exit event's ``exit_event`` (NOTES §4); ``restarting`` is filled in later."""
    return {
        "exit_code": exit_code,
        "guest_exit_code": exit_code,
        "signal": sig,
        "guest_signal": sig,
        "error": error,
        "guest_error": error,
        "oom_killed": oom_killed,
        "requested_stop": requested_stop,
        "restarting": False,
        # ISO string, as in the 2023 fixture and fly-go's time.Time; old docs used unix ms.
        "exited_at": rfc3339_ms(time.time()),
    }
