"""The JSON the Fly backend sends and reads: the create request, and ``MachineInfo`` from a
machine object (its state, metadata and latest ``exit`` event)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..info import MachineInfo, MachineSpec

#: Metadata key of the tag every balloons machine carries; its value is the namespace.
TAG = "balloons"
#: ``list()`` filter names and the metadata keys they match.
FILTERS: Mapping[str, str] = {
    "job": "balloons_job",
    "attempt": "balloons_attempt",
    "pool": "balloons_pool",
    "slot": "balloons_slot",
}


def create_body(
    spec: MachineSpec,
    *,
    image: str,
    command: Sequence[str],
    cpu_kind: str,
    region: str | None,
    namespace: str,
    extra_env: Mapping[str, str],
) -> dict[str, Any]:
    """A ``POST /v1/apps/{app}/machines`` body for one attempt.

    The machine destroys itself when its worker exits (``auto_destroy``, restart policy
    ``no``), or, for a standby-capable machine (``spec.keep``), stops so that a later start
    runs its worker again with the same env; its env is ``spec.env`` (the handoff and
    allow-listed names) plus ``extra_env`` (nothing secret: the Redis URL and signing key come
    from the app's secrets).
    """
    if spec.command is not None:
        return _command_body(spec, spec.command, image, cpu_kind, region, namespace)
    env = dict(spec.env)
    env.update(extra_env)
    body: dict[str, Any] = {
        "name": spec.name,
        "config": {
            "image": image,
            "init": {"cmd": list(command)},
            "env": env,
            "guest": {"cpu_kind": cpu_kind, "cpus": spec.cpus, "memory_mb": spec.memory_mb},
            "auto_destroy": not spec.keep,
            "restart": {"policy": "no"},
            "metadata": {**spec.metadata, TAG: namespace},
        },
    }
    if spec.protocol:  # a worker of the worker protocol: none of the app's secrets
        body["config"]["processes"] = [{"cmd": list(command), "ignore_app_secrets": True}]
    if region:
        body["region"] = region
    return body


def _command_body(
    spec: MachineSpec,
    command: Mapping[str, Any],
    image: str,
    cpu_kind: str,
    region: str | None,
    namespace: str,
) -> dict[str, Any]:
    """The create body of a command job's machine: its image (default: the app's) runs its
    argv (``exec``: neither the image's entrypoint nor its command), with only its own env
    and none of the app's secrets (``ignore_app_secrets``: no Redis URL, no signing key), its
    input written by Fly (``files``)."""
    body: dict[str, Any] = {
        "name": spec.name,
        "config": {
            "image": command.get("image") or image,
            "processes": [{"exec": list(command["cmd"]), "ignore_app_secrets": True}],
            "env": dict(command["env"]),
            "files": [dict(f) for f in command["files"]],
            "guest": {"cpu_kind": cpu_kind, "cpus": spec.cpus, "memory_mb": spec.memory_mb},
            "auto_destroy": True,
            "restart": {"policy": "no"},
            "metadata": {**spec.metadata, TAG: namespace},
        },
    }
    if region:
        body["region"] = region
    return body


def _epoch(stamp: object) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def latest_exit(events: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The ``exit_event`` of the newest ``exit`` event (events come newest first)."""
    newest = sorted(events, key=lambda e: e.get("timestamp") or 0, reverse=True)
    for event in newest:
        if event.get("type") != "exit":
            continue
        request = event.get("request") or {}
        found = request.get("exit_event") or (request.get("MonitorEvent") or {}).get("exit_event")
        if isinstance(found, Mapping):
            return found
    return None


def machine_info(
    data: Mapping[str, Any], events: Sequence[Mapping[str, Any]] | None = None
) -> MachineInfo:
    """What the backend contract reports of a Fly machine object."""
    config = data.get("config") or {}
    meta = config.get("metadata") or {}
    exit_event = latest_exit(events if events is not None else data.get("events") or [])
    attempt = meta.get(FILTERS["attempt"])
    detail = {
        key: str(data[key])
        for key in ("name", "region", "instance_id", "private_ip")
        if data.get(key)
    }
    if meta.get(FILTERS["slot"]):
        detail["slot"] = str(meta[FILTERS["slot"]])
    exit_code = signal = None
    oom = requested = False
    if exit_event is not None:
        code = exit_event.get("exit_code")
        exit_code = int(code) if isinstance(code, int) else None
        sig = exit_event.get("signal")
        signal = int(sig) if isinstance(sig, int) and sig > 0 else None
        oom = bool(exit_event.get("oom_killed"))
        requested = bool(exit_event.get("requested_stop"))
        if exit_event.get("exited_at"):
            detail["exited_at"] = str(exit_event["exited_at"])
        if exit_event.get("error"):
            detail["exit_error"] = str(exit_event["error"])
    return MachineInfo(
        id=str(data.get("id", "")),
        backend="fly",
        state=str(data.get("state", "unknown")),
        job_id=meta.get(FILTERS["job"]) or None,
        attempt=int(attempt) if isinstance(attempt, str) and attempt.isdigit() else None,
        pool=meta.get(FILTERS["pool"]) or None,
        created_at=_epoch(data.get("created_at")),
        exit_code=exit_code,
        signal=signal,
        oom_killed=oom,
        requested_stop=requested,
        detail=detail,
    )
