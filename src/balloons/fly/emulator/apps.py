"""Apps and their secrets.

App names are global and unique (422 when taken, NOTES §1). Deleting an app destroys its
machines at once. Secrets set here join the emulator-wide ``secrets`` in the environment of
the app's machines when they next boot (Fly restarts machines on ``fly secrets set``; the
emulator leaves running ones alone). Secret *values* never appear in an answer: listings show
names and a digest, an HMAC under a key drawn per emulator, so equal values are recognisable
without being guessable.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as _secrets
import time
from collections.abc import Mapping
from typing import Any

from .config import DEFAULT_ORG
from .errors import ApiError, bad_request
from .model import App, MachineState, rfc3339
from .state import Emulator

#: Fly app names: lowercase letters, digits and dashes.
_APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DIGEST_KEY = _secrets.token_bytes(32)


def _count(emu: Emulator, app: App) -> int:
    return sum(
        1 for m in emu.machines.values()
        if m.app == app.name and m.state is not MachineState.DESTROYED
    )  # fmt: skip


def create(emu: Emulator, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create an app from ``name`` (current spec) or ``app_name`` (docs example)."""
    name = body.get("name") or body.get("app_name")
    if not isinstance(name, str) or not _APP_NAME.match(name):
        raise bad_request(f"invalid app name {name!r}: use lowercase letters, digits and dashes")
    org = str(body.get("org_slug") or DEFAULT_ORG)
    with emu.lock:
        if name in emu.apps:
            raise ApiError(422, f"app name {name!r} is already taken")
        app = App(
            id=emu.ids.token_hex(8),
            name=name,
            org_slug=org,
            network=str(body.get("network") or "default"),
            created_at=time.time(),
        )
        emu.apps[name] = app
        return app.to_json(0)


def get(emu: Emulator, name: str) -> dict[str, Any]:
    """App ``name`` as the API shows it; a 404 when there is none."""
    with emu.lock:
        app = emu.app(name)
        return app.to_json(_count(emu, app))


def list_apps(emu: Emulator, org_slug: str | None) -> dict[str, Any]:
    """The apps, oldest first, of organization ``org_slug`` (every app when none is given)."""
    with emu.lock:
        apps = [
            app.to_json(_count(emu, app))
            for app in sorted(emu.apps.values(), key=lambda a: a.created_at)
            if not org_slug or app.org_slug == org_slug
        ]
    return {"total_apps": len(apps), "apps": apps}


def delete(emu: Emulator, name: str) -> None:
    """Remove an app and everything in it, killing its machines."""
    with emu.lock:
        app = emu.app(name)
        for machine in [m for m in emu.machines.values() if m.app == app.name]:
            emu.forget(machine)
        del emu.apps[name]


# -- secrets --------------------------------------------------------------------------------


def _digest(value: str) -> str:
    return hmac.new(_DIGEST_KEY, value.encode(), hashlib.sha256).hexdigest()[:16]


def _describe(name: str, value: str, updated_at: float) -> dict[str, Any]:
    stamp = rfc3339(updated_at)
    return {"name": name, "digest": _digest(value), "created_at": stamp, "updated_at": stamp}


def list_secrets(emu: Emulator, app_name: str) -> dict[str, Any]:
    """Names and digests of the app's own secrets (never values, whatever ``show_secrets``)."""
    with emu.lock:
        app = emu.app(app_name)
        return {"secrets": [_describe(n, v, t) for n, (v, t) in sorted(app.secrets.items())]}


def get_secret(emu: Emulator, app_name: str, name: str) -> dict[str, Any]:
    """Secret ``name`` of the app, described by name and digest (never its value); a 404 when
    there is none."""
    with emu.lock:
        app = emu.app(app_name)
        if name not in app.secrets:
            raise ApiError(404, f"secret {name!r} not found")
        value, stamp = app.secrets[name]
        return _describe(name, value, stamp)


def _check_name(name: str) -> None:
    if not _SECRET_NAME.match(name):
        raise bad_request(f"invalid secret name {name!r}")


def update_secrets(emu: Emulator, app_name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Set several secrets at once (unset them one by one with ``DELETE``)."""
    values = body.get("values")
    if not isinstance(values, dict):
        raise bad_request("invalid request: values must be an object")
    for name, value in values.items():
        _check_name(str(name))
        if not isinstance(value, str):
            raise bad_request(f"invalid value for secret {name!r}: expected a string")
    with emu.lock:
        app = emu.app(app_name)
        now = time.time()
        for name, value in values.items():
            app.secrets[str(name)] = (value, now)
        app.secrets_version += 1
        described = [_describe(n, v, t) for n, (v, t) in sorted(app.secrets.items())]
        return {"version": app.secrets_version, "secrets": described}


def set_secret(emu: Emulator, app_name: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Set secret ``name`` to the body's ``value`` (a string); its description and the app's new
    secrets version."""
    _check_name(name)
    value = body.get("value")
    if not isinstance(value, str):
        raise bad_request("invalid request: value must be a string")
    with emu.lock:
        app = emu.app(app_name)
        app.secrets[name] = (value, time.time())
        app.secrets_version += 1
        return {**_describe(name, value, app.secrets[name][1]), "version": app.secrets_version}


def delete_secret(emu: Emulator, app_name: str, name: str) -> dict[str, Any]:
    """Delete secret ``name`` (a 404 when there is none); the app's new secrets version."""
    with emu.lock:
        app = emu.app(app_name)
        if name not in app.secrets:
            raise ApiError(404, f"secret {name!r} not found")
        del app.secrets[name]
        app.secrets_version += 1
        return {"version": app.secrets_version}
