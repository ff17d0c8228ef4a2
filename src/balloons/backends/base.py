"""The machine backend contract.

A *machine* runs exactly one worker process, which runs one job attempt (or, with warm reuse,
several in a row) and then exits. A backend must:

* ``launch(spec)``: start a machine that runs ``python -m balloons.machine`` with
  ``spec.env`` (the handoff variable ``BALLOONS_JOB`` plus allow-listed names) and gives
  the worker a way to reach Redis and the signing key that does not pass through ``spec``;
  return at once with the machine's id. It must not wait for the job.
* ``inspect(id)``: what is known of the machine, including how it exited (exit code, signal,
  out-of-memory, requested stop) once it has; ``None`` if the backend has no such machine.
* ``stop(id)``: ask the machine to stop (``SIGTERM``, then ``SIGKILL`` after a grace period).
* ``destroy(id)``: remove the machine, stopping it by force if it still runs.
* ``list(**metadata)``: the machines balloons launched, filtered by metadata
  (``job``, ``pool``, ``attempt``, ``slot``).

Optional capabilities, each a sub-protocol the app checks with ``isinstance``:

* :class:`RateLimited`, ``launch_delay()``: the seconds the next ``launch`` would wait for a
  rate limit (``FlyBackend``); the app then launches from a thread of its own rather than hold
  its caller.
* :class:`BackgroundLaunches`, ``launches_in_background``: true when ``launch`` is a remote
  call (``FlyBackend``): the app always launches from that thread, so that a submit returns at
  once.
* :class:`MachineLaunches`, ``launches_from_machines``: true when a machine may itself
  launch machines (``LocalBackend``: its machines run on the launcher's host, as its user, and
  are told its state directory); a machine that advances a chain or group then launches the
  machine of a member no idle machine will take, rather than leave it for a supervisor. A
  Fly machine holds no API token: it has no such capability.
* :class:`Restartable`, ``start(id)``: run a stopped machine again, its worker with the env it
  was launched with (``FlyBackend``). A backend that has it gives pools *standby* machines: a
  spec with ``keep`` set is launched so that the machine stops, rather than being destroyed,
  when its worker exits; ``start`` raises (any error) when the machine is gone or refuses, and
  the app then creates a machine instead. A backend without it (``LocalBackend``) refuses pools
  with ``standby`` set.

A machine that dies without a word is noticed when its slot's lease lapses (the supervisor,
or a client waiting on the job), which then asks ``inspect`` (or, for a machine that never
claimed its job, ``list(slot=...)``) why.

The app calls ``bind(ctx)`` once, before anything else, to hand over settings the backend may
need (the Redis URL and secret for a backend that must pass them on, the namespace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..info import MachineInfo, MachineSpec

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, repr=False)
class BackendContext:
    """What the app hands a backend. ``repr`` never shows the URL or the secret."""

    redis_url: str
    secret: str
    namespace: str
    state_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"BackendContext(namespace={self.namespace!r}, state_dir={str(self.state_dir)!r})"


@runtime_checkable
class Backend(Protocol):
    """A machine backend: what starts, describes, stops and lists machines (the contract is in
    the module's docstring). ``LocalBackend``, ``FlyBackend`` and the test mode's
    ``InlineBackend`` implement it; so can any object with these methods and a ``name``."""

    name: str

    def bind(self, ctx: BackendContext) -> None:
        """Take the app's settings the backend may need (Redis URL, secret, namespace, state
        directory, environment); called once, before anything else."""

    def launch(self, spec: MachineSpec) -> MachineInfo:
        """Start a machine for ``spec`` and return at once with its id, without waiting for the
        job."""

    def inspect(self, machine_id: str) -> MachineInfo | None:
        """What is known of machine ``machine_id``, how it exited included once it has; ``None``
        when the backend has no such machine."""

    def stop(self, machine_id: str) -> None:
        """Ask the machine to stop: ``SIGTERM``, then ``SIGKILL`` after a grace period."""

    def destroy(self, machine_id: str) -> None:
        """Remove the machine, stopping it by force if it still runs."""

    def list(self, **metadata: str) -> list[MachineInfo]:
        """The machines balloons launched, filtered by metadata: ``job``, ``pool``, ``attempt``,
        ``slot``."""


@runtime_checkable
class RateLimited(Backend, Protocol):
    """A backend whose launches may wait for a rate limit."""

    def launch_delay(self) -> float:
        """Seconds the next ``launch`` would wait for the rate limit (0: none)."""
        ...


@runtime_checkable
class BackgroundLaunches(Backend, Protocol):
    """A backend whose ``launch`` may be a remote call, made from the app's launcher thread
    when ``launches_in_background`` is true."""

    launches_in_background: bool


@runtime_checkable
class MachineLaunches(Backend, Protocol):
    """A backend whose machines may launch machines (see :mod:`balloons.machine.links`) when
    ``launches_from_machines`` is true."""

    launches_from_machines: bool


@runtime_checkable
class Restartable(Backend, Protocol):
    """A backend that can start a stopped machine again (pools with ``standby`` machines)."""

    def start(self, machine_id: str) -> None:
        """Run the stopped machine again; raise when it is gone or refuses."""
        ...


@runtime_checkable
class Imaged(Backend, Protocol):
    """A backend whose machines all run one image: its reference is the code version of the
    app's jobs (see :mod:`balloons.compat`) unless the app names one."""

    @property
    def image(self) -> str: ...


def make_backend(name: str) -> Backend:
    """The backend named ``name`` (``local``, ``fly``, or ``inline``: the test mode of
    :mod:`balloons.testing`), unbound."""
    from ..errors import ConfigError

    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "fly":
        from .fly import FlyBackend

        return FlyBackend()  # its settings are read from the app's environment at bind
    if name == "inline":
        from ..testing import InlineBackend

        return InlineBackend()
    raise ConfigError(f"unknown backend {name!r}: expected 'local', 'fly' or 'inline'")
