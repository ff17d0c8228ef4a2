"""The emulator's settings, with every default named here so docs can quote it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .faults import Faults

#: Port the emulator listens on: Fly's internal Machines API port (``http://_api.internal:4280``).
DEFAULT_PORT = 4280
#: Interface the emulator listens on.
DEFAULT_HOST = "127.0.0.1"
#: Region of machines created without one (and of ``FLY_REGION``/``PRIMARY_REGION``).
DEFAULT_REGION = "iad"
#: Org slug of apps created without one; Fly's alias for the caller's personal org.
DEFAULT_ORG = "personal"
#: Seconds a destroyed machine stays readable by GET and ``include_deleted`` listing.
#: Fly keeps them around ~48 h (NOTES §4); an emulator needs far less.
DEFAULT_DESTROYED_RETENTION = 3600.0
#: Longest ``/wait`` Fly allows, in seconds; longer requested timeouts are capped.
MAX_WAIT_TIMEOUT = 60.0
#: Default ``/wait`` timeout, in seconds.
DEFAULT_WAIT_TIMEOUT = 60.0
#: ``guest.memory_mb`` when a config has none (Fly's smallest shared-cpu-1x preset).
DEFAULT_MEMORY_MB = 256
#: Restarts allowed under ``on-failure`` when ``max_retries`` is not set.
DEFAULT_MAX_RETRIES = 10
#: Seconds a stop waits between its signal and SIGKILL when neither the request nor
#: ``stop_config`` says.
DEFAULT_STOP_TIMEOUT = 5.0
#: Default lease TTL in seconds.
DEFAULT_LEASE_TTL = 30
#: How often, in seconds, the supervisor thread polls processes, timers and memory.
TICK_SECONDS = 0.02


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes an emulator besides its faults.

    ``repr`` shows secret names, never their values.
    """

    #: The only accepted API token; ``None`` accepts any non-empty token.
    token: str | None = field(default=None, repr=False)
    #: Secrets every app's machines receive as environment variables.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: Default command of an image, by image reference (exact, or without its tag/digest).
    image_commands: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: Image reference -> directory standing for the image's filesystem (``--image REF=DIR``):
    #: a machine of a mapped image runs in a fresh copy of it, its command resolved as a
    #: container's (see :mod:`~balloons.fly.emulator.procs`). Matched like ``image_commands``.
    images: Mapping[str, Path] = field(default_factory=dict)
    #: The ``PATH`` machines get and mapped images' programs are looked up on: the emulator's
    #: own when it was configured.
    path: str = field(default_factory=lambda: os.environ.get("PATH", os.defpath))
    #: Command of an image found in neither ``image_commands`` nor the machine's config.
    default_command: Sequence[str] | None = None
    #: Extra environment every machine process gets, below Fly's variables.
    base_env: Mapping[str, str] = field(default_factory=dict)
    #: Region of machines created without one.
    region: str = DEFAULT_REGION
    #: Seconds destroyed machines stay readable.
    destroyed_retention: float = DEFAULT_DESTROYED_RETENTION
    #: Where per-machine directories go; ``None`` makes (and later removes) a temporary one.
    work_dir: Path | None = None
    #: Faults to inject.
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token:
            raise ValueError("token must be non-empty when given")
        for name in self.secrets:
            if not name or "=" in name:
                raise ValueError(f"invalid secret name {name!r}")
        for ref, directory in self.images.items():
            check_image(ref, directory)
        if self.destroyed_retention < 0:
            raise ValueError("destroyed_retention must not be negative")

    @property
    def secret_names(self) -> list[str]:
        """Names of the emulator-wide secrets (their values are never shown)."""
        return sorted(self.secrets)


def check_image(ref: str, directory: Path) -> None:
    """``ValueError`` naming the mapping unless ``ref`` is non-empty and ``directory`` exists."""
    if not ref:
        raise ValueError(f"image mapping ={directory}: the image reference is empty")
    if not Path(directory).is_dir():
        raise ValueError(
            f"image mapping {ref}={directory}: {str(directory)!r} is not an existing directory"
        )
