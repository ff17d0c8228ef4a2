"""A local emulator of the Fly.io Machines REST API, to test balloons' Fly backend end to end.

Machines run as local processes; apps, machines, events, leases, metadata and secrets behave
as Fly's do (with the deviations listed in ``docs``/the package's modules), and faults can be
injected from a seed. Build it in-process with :func:`create_app` (mount it with
``httpx.ASGITransport``) or serve it with :func:`~balloons.fly.emulator.server.run` /
``python -m balloons.fly.emulator``.

Modules, one concept each: ``app`` (the Starlette app), ``routes`` and ``web`` (HTTP),
``state`` (store and state machine), ``machines``/``apps``/``metadata``/``leases``/``wait``
(operations), ``procs`` (local processes), ``faults`` (fault injection), ``ids``, ``model``,
``parsing``, ``config``, ``server`` (uvicorn runner), ``cli`` (the command line).

The names below are imported on first use, so that the command line (``cli``) can be loaded
without Starlette and uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import EmulatorConfig
    from .faults import Faults
    from .state import Emulator

__all__ = ["Emulator", "EmulatorConfig", "Faults", "create_app"]

_WHERE = {
    "create_app": ".app",
    "EmulatorConfig": ".config",
    "Faults": ".faults",
    "Emulator": ".state",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
