"""Launching the machines of the slots the store grants: now, or from a thread of its own.

:class:`SlotLauncher` (one per app, held by its :class:`~balloons.dispatch.Dispatcher`) builds
a slot's :class:`~balloons.info.MachineSpec` and calls the backend's ``launch``; in a pool
with standby machines it goes through ``PICK_MACHINE`` and starts a stopped machine, else creates
one. A failed launch frees the slot and fails the attempt (``launch_failed``).

A pool that grows under Fly's create limit (about one machine per second per app) would
otherwise hold the submitting thread a second per new machine, while the machines already up
run out of queued work. Such launches (and every launch while some are pending, so that they
keep their order) go to the app's :class:`~balloons.backlog.Launcher`: the submit returns at
once, the launcher's thread waits for the limiter. With several workers, launches that do not share
a limit (starts of stopped machines, limited per machine) are made at once; creates are made
one at a time. Pending launches are made before the interpreter exits and when the app is
closed; a forked child leaves them to its parent.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .backlog import Launcher
from .errors import BackendError, StoreError
from .ids import ulid
from .states import Reason
from .store import replies
from .store.keys import PoolKeys
from .store.replies import Picked
from .task import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from .backends.base import Backend
    from .compat import Compat
    from .config import Settings
    from .info import MachineSpec
    from .pools import Pool
    from .store.writes import Store

#: Threads of an app's launcher: standby machines are started up to this many at once (Fly
#: limits starts per machine), while creates are made one at a time.
LAUNCH_WORKERS = 4


class Launch(NamedTuple):
    """A machine to launch for slot ``ULID-ATTEMPT`` of ``pool`` (attempt 0: a machine with no
    job of its own), sized ``cpus`` x ``memory_mb``, its first job's ``timeout``. ``keep``: a
    pool with standby machines, launched through ``PICK_MACHINE`` and created to stop rather than
    be destroyed when it idles out."""

    pool: str
    ulid: str
    attempt: int
    cpus: int
    memory_mb: int
    timeout: float
    keep: bool = False
    #: The slot is another queued job's than the submitter's: its record is checked before a
    #: machine is made for it (:mod:`balloons.control.launches`).
    other: bool = False


class Assigned(NamedTuple):
    """What ``PICK_MACHINE`` gave a launch in a pool with standby machines (:func:`assigned`)."""

    #: ``start``: the stopped ``machine`` now owns slot ``ulid``-0; ``create``: make a machine
    #: for slot ``ulid``-0.
    action: str
    machine: str
    ulid: str
    cpus: int
    memory_mb: int


def assigned(got: Picked | list[str]) -> Assigned:
    """``PICK_MACHINE``'s reply, decoded by :func:`balloons.store.replies.pick_machine` (from the
    words of ``Store.assign`` too: the reply after its code)."""
    if not isinstance(got, Picked):
        picked = replies.pick_machine([1, *got])
        if picked is None:  # a code in the words: not what Store.assign gives
            raise StoreError(f"no machine to launch in {got!r}")
        got = picked
    action = "start" if got.start else "create"
    return Assigned(action, got.machine, got.own, got.cpus, got.memory_mb)


class Wiring(Protocol):
    """What launching needs of an app (:class:`~balloons.App`)."""

    @property
    def settings(self) -> Settings:
        """The app's settings."""

    @property
    def store(self) -> Store:
        """The app's Redis store."""

    @property
    def backend(self) -> Backend:
        """The app's machine backend."""

    def compat(self) -> Compat:
        """The code version of the app's jobs and their compatibility tag."""

    def get_pool(self, name: str) -> Pool: ...


class SlotLauncher:
    """Launches the machines of an app's granted slots (``app.dispatcher.slots``)."""

    def __init__(self, app: Wiring) -> None:
        self.app = app
        self._launcher: Launcher | None = None
        self._create_lock = threading.Lock()  # the launcher's creates, one at a time
        # Whether the backend launches in the background, its launch_delay (or None), and
        # whether its machines run images (a command job gets a machine of its own).
        self._caps: tuple[bool, Callable[[], float] | None, bool] | None = None
        # keep -> (the code version and settings it was made for, the environment).
        self._envs: dict[bool, tuple[Compat, Settings, dict[str, str]]] = {}

    def spec(
        self,
        pool: str,
        ulid_: str,
        attempt: int,
        cpus: int,
        memory_mb: int,
        timeout: float,
        keep: bool = False,
    ) -> MachineSpec:
        """The machine for slot ``ULID-ATTEMPT``: the first job it runs is that attempt of job
        ``POOL.ULID`` (attempt 0: a machine with no job yet, which takes queued work; with
        ``keep``, one that stops when it idles out, to be started again under the same
        handoff)."""
        job_id = f"{pool}.{ulid_}"
        cwd = os.getcwd()
        env = {"BALLOONS_JOB": f"{job_id}/{attempt}", **self._env(keep)}
        protocol = self.app.get_pool(pool).protocol if attempt else ""
        if protocol:  # the worker protocol: an attempt token in the place of the handoff
            from .commands import attempt_env

            env.update(attempt_env(self.app, pool, ulid_, attempt, timeout))
            del env["BALLOONS_JOB"]
        slot, job = f"{ulid_}-{attempt}", job_id if attempt else ""
        return spec_of(
            {
                "job_id": job,
                "attempt": attempt,
                "pool": pool,
                "name": f"balloons-{slot}",
                "cpus": cpus,
                "memory_mb": memory_mb,
                "timeout": timeout,
                "env": env,
                "metadata": {
                    "balloons_job": job,
                    "balloons_attempt": str(attempt),
                    "balloons_pool": pool,
                    "balloons_slot": slot,
                },
                "cwd": cwd,
                "python_path": _import_path(cwd),
                "keep": keep,
                "command": None,
                "protocol": protocol,
            }
        )

    def _env(self, keep: bool) -> dict[str, str]:
        """A machine's environment besides its handoff: ``BALLOONS_STANDBY`` with ``keep``,
        how it knows its code version, the allow-listed names. Made once per code version
        (the submit path is hot); copied by the caller."""
        compat, settings = self.app.compat(), self.app.settings
        hit = self._envs.get(keep)
        if hit is not None and hit[0] is compat and hit[1] is settings:
            return hit[2]
        env = {"BALLOONS_STANDBY": "1"} if keep else {}
        env.update(compat.env)
        for name in settings.env_allowlist:
            if name in settings.env:
                env[name] = settings.env[name]
        self._envs[keep] = (compat, settings, env)
        return env

    def launch_slot(self, launch: Launch, spec: MachineSpec | None = None) -> bool:
        """Launch the machine of a slot the store granted (``spec``: its machine, when the
        caller already built it). On failure the slot is freed and the job's attempt fails
        with reason ``launch_failed``; returns whether it launched. ``launch.keep``: a
        standby-capable machine (see :meth:`launch_standby`)."""
        events = _events()
        began = time.monotonic()
        pool, ulid_, attempt = launch.pool, launch.ulid, launch.attempt
        job = f"{pool}.{ulid_}" if attempt else "-"
        try:
            # The machine's id reaches the record when its worker claims the attempt (or when
            # the local fork server reports its exit), so the happy path costs no extra write.
            if spec is None:
                spec = self.spec(*launch[:7])
            if attempt and self._capabilities()[2]:
                from .commands import with_command  # a command job gets a machine of its own

                spec = with_command(self.app, spec, launch)
            info = self.app.backend.launch(spec)
        except Exception as exc:
            msg = f"could not launch a machine: {exc}"
            events.emit(
                "launch_failed",
                40,  # logging.ERROR, without importing logging on this path
                job=job,
                attempt=attempt,
                error=msg,
                launch_s=time.monotonic() - began,
            )
            lost = Reason.LAUNCH_FAILED.value
            self.app.store.lost(
                PoolKeys(self.app.settings.namespace, pool),
                f"{ulid_}-{attempt}",
                ulid_ if attempt else "",
                attempt,
                lost,
                msg,
                None,
            )
            return False
        if events.enabled():
            events.emit(
                "launched",
                job=job,
                attempt=attempt,
                pool=pool,
                machine=info.id if info is not None else "-",
                size=f"{launch.cpus}x{launch.memory_mb}MB",
                launch_s=time.monotonic() - began,
            )
        if info is not None and info.id and not attempt:
            # A machine with no job of its own: its slot names it, so that a check of its boot
            # asks about this machine (a waiter's job may count on it).
            pk = PoolKeys(self.app.settings.namespace, pool)
            self.app.store.launched(pk, f"{ulid_}-0", info.id)
        if info is not None and info.detail.get("note") and attempt:
            # What the backend had to do (regions that refused, a lost answer recovered).
            pk = PoolKeys(self.app.settings.namespace, pool)
            self.app.store.note_attempt(pk, ulid_, attempt, info.detail["note"])
        return True

    def launch(self, launch: Launch, spec: MachineSpec | None = None) -> None:
        """Launch a granted slot's machine now; or from the app's launcher thread (in order)
        when the backend's launch is a remote call (``launches_in_background``: Fly's create,
        so that submit returns at once), or when the backend would make this caller wait for
        a rate limit (``launch_delay``) or launches already wait. A job whose machine has to
        wait goes back to the queue (``REQUEUE``): the pool's first free machine takes it, and
        the slot's machine, launched with no job of its own, joins the pool. In a pool with
        standby machines, see :meth:`launch_standby`."""
        if launch.other:
            from .control.launches import refused  # the record of another job than the caller's

            if refused(self.app, launch):
                return
        if launch.keep:
            if self._in_background():
                self._later(launch)  # the launcher's step starts or creates the machine
            else:
                self.launch_standby(launch, background=True)
            return
        launcher = self._launcher
        if (launcher is None or not launcher.busy()) and self._launch_delay() <= 0:
            if not self._in_background():
                self.launch_slot(launch, spec)
                return
            # Nothing waits: the launch keeps its job, and is made from the launcher thread.
        else:
            fresh = ulid()
            pk = PoolKeys(self.app.settings.namespace, launch.pool)
            slot = f"{launch.ulid}-{launch.attempt}"
            if (
                launch.attempt
                and not self._one_job(launch)
                and self.app.store.requeue(pk, slot, launch.ulid, fresh)
            ):
                launch = launch._replace(ulid=fresh, attempt=0, timeout=DEFAULT_TIMEOUT)
        self._later(launch)

    def _one_job(self, launch: Launch) -> bool:
        """Whether the slot's job must keep it while its launch waits, its machine running
        only that job (never a worker that takes queued work): a job of a pool of the worker
        protocol, or a command job on a backend that runs images (its record read: the
        launches that wait are rate-limited ones)."""
        if self.app.get_pool(launch.pool).protocol:
            return True
        if not getattr(self.app.backend, "runs_images", False):
            return False
        from .commands import read_command

        return read_command(self.app, launch.pool, launch.ulid) is not None

    def _later(self, launch: Launch) -> None:
        launcher = self._launcher
        if launcher is None:
            launcher = self._launcher = Launcher(self._launch_later, workers=LAUNCH_WORKERS)
        launcher.put(launch)

    def _launch_later(self, launch: Launch) -> None:
        """The launcher's step: wait out the rate limit, renew the slot's boot lease (it may
        have waited a while), then launch, unless the slot was reclaimed, claimed or given back
        meanwhile (a jobless slot when nothing is queued any more). In a pool with standby
        machines, a machine stopped meanwhile is started rather than one created."""
        store = self.app.store
        pk = PoolKeys(self.app.settings.namespace, launch.pool)
        if launch.keep:
            # A machine stopped since this launch was queued is started rather than created.
            if not store.confirm_launch(pk, f"{launch.ulid}-{launch.attempt}"):
                return
            got = self._start_standby(launch)
            if not isinstance(got, Launch):
                return
            launch = got
        # Creates one at a time (the launcher's other threads start standby machines, each
        # limited on its own): each waits its turn at the app's create limit, then checks that
        # its slot still wants a machine, so no create is made for work already taken.
        with self._create_lock:
            delay = self._launch_delay()
            while delay > 0:
                time.sleep(delay)
                delay = self._launch_delay()
            if store.confirm_launch(pk, f"{launch.ulid}-{launch.attempt}"):
                self.launch_slot(launch)

    def launch_standby(self, launch: Launch, *, background: bool) -> bool:
        """A launch in a pool with standby machines (``PICK_MACHINE``): the slot's job goes back to
        the queue, and the slot becomes a machine's own (no job, attempt 0): a stopped machine
        of the pool's standby set, started (one ``start``, rate-limited per machine, so it
        never waits for the app's create limit), else a new standby-capable machine created
        as any other (from the launcher thread when the create would wait, with
        ``background``). A start that fails (the machine is gone, or refused) drops that
        machine and creates one instead. Returns whether a machine is on its way."""
        got = self._start_standby(launch)
        if not isinstance(got, Launch):
            return got
        launcher = self._launcher
        if background and ((launcher is not None and launcher.busy()) or self._launch_delay() > 0):
            self._later(got)
            return True
        return self.launch_slot(got)

    def _start_standby(self, launch: Launch) -> bool | Launch:
        """``PICK_MACHINE`` and start the stopped machine it gave: True when one was started, False
        when there is nothing to launch, else the create to make in its place."""
        events = _events()
        pool = launch.pool
        pk = PoolKeys(self.app.settings.namespace, pool)
        reply = self.app.store.pick_machine(pk, f"{launch.ulid}-{launch.attempt}", ulid())
        if reply is None:
            return False
        got = assigned(reply)
        size = (launch.cpus, launch.memory_mb)  # a create's: never a standby record's size
        if got.action == "create":
            return Launch(pool, got.ulid, 0, *size, DEFAULT_TIMEOUT, True)
        machine = got.machine
        began = time.monotonic()
        try:
            _start(self.app.backend, machine)
        except Exception as exc:
            events.emit(
                "start_failed",
                30,  # logging.WARNING, without importing logging on this path
                pool=pool,
                machine=machine,
                error=f"could not start standby machine {machine}: {exc}",
            )
            fresh = ulid()
            if not self.app.store.start_failed(pk, f"{got.ulid}-0", machine, fresh, size):
                return False  # the machine did start after all, and took its slot
            if getattr(exc, "status", None) != 404:
                import contextlib

                with contextlib.suppress(Exception):
                    self.app.backend.destroy(machine)
            return Launch(pool, fresh, 0, *size, DEFAULT_TIMEOUT, True)
        events.emit(
            "launched",
            job="-",
            attempt=0,
            pool=pool,
            machine=machine,
            size=f"{got.cpus}x{got.memory_mb}MB",
            started=1,
            launch_s=time.monotonic() - began,
        )
        return True

    def _capabilities(self) -> tuple[bool, Callable[[], float] | None, bool]:
        """Whether the backend launches in the background, its ``launch_delay`` (or None),
        and whether it runs images (``runs_images``): checked once, against the capability
        protocols of :mod:`balloons.backends.base`. Raises as ``app.backend`` does for a
        backend that cannot even be set up."""
        caps = self._caps
        if caps is None:
            from .backends.base import BackgroundLaunches, RateLimited

            backend = self.app.backend
            background = isinstance(backend, BackgroundLaunches) and bool(
                backend.launches_in_background
            )
            delay = backend.launch_delay if isinstance(backend, RateLimited) else None
            images = bool(getattr(backend, "runs_images", False))
            caps = self._caps = (background, delay, images)
        return caps

    def _in_background(self) -> bool:
        """Whether the backend's launches are made from the launcher thread (a remote call,
        as Fly's create)."""
        try:
            return self._capabilities()[0]
        except Exception:  # a backend that cannot even be set up: launch_slot records why
            return False

    def _launch_delay(self) -> float:
        """Seconds the backend's next launch would wait for a rate limit."""
        try:
            delay = self._capabilities()[1]
            return float(delay()) if delay is not None else 0.0
        except Exception:  # a backend that cannot even be set up: launch_slot records why
            return 0.0

    def close(self) -> None:
        """Make the launches still waiting for a rate limit."""
        if self._launcher is not None:
            self._launcher.drain()


def _start(backend: Backend, machine: str) -> None:
    from .backends.base import Restartable

    if not isinstance(backend, Restartable):
        raise BackendError(f"the {backend.name} backend cannot start a machine")
    backend.start(machine)


@functools.cache
def _events() -> ModuleType:
    """Lifecycle events (they import logging): loaded on first use."""
    from . import lifecycle

    return lifecycle


@functools.cache
def _machine_spec() -> type[MachineSpec]:
    """The records (dataclasses) are not on a machine's start-up path: imported on first launch."""
    from .info import MachineSpec

    return MachineSpec


def spec_of(fields: dict[str, Any]) -> MachineSpec:
    """``MachineSpec(**fields)``, every field given, made without the dataclass's
    ``__init__``, which sets each field of a frozen dataclass through ``object.__setattr__``:
    half of the cost of a spec, made on every submit that launches (``tests/test_launcher.py``
    checks that both make equal specs)."""
    spec = object.__new__(_machine_spec())
    spec.__dict__.update(fields)
    return spec


_IMPORT_PATHS: dict[tuple[str, ...], tuple[str, ...]] = {}
#: The last answer: the cwd, a copy of ``sys.path`` then, the import path (one tuple: threads).
_last_path: tuple[str, list[str], tuple[str, ...]] = ("", [], ())


def _import_path(cwd: str) -> tuple[str, ...]:
    """This process's import path minus the interpreter's own entries, for local machines
    (``cwd``: this process's working directory). Cached per value of ``sys.path``, so entries
    added later still reach machines."""
    global _last_path
    last = _last_path
    if last[0] == cwd and last[1] == sys.path:  # the same entries: compared by identity first
        return last[2]
    key = (cwd, *sys.path)
    found = _IMPORT_PATHS.get(key)
    if found is None:
        prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
        out: list[str] = []
        for entry in sys.path:
            path = os.path.abspath(os.path.join(cwd, entry))
            if not path.startswith(prefixes) and path not in out:
                out.append(path)
        found = _IMPORT_PATHS[key] = tuple(out)
    _last_path = (cwd, list(sys.path), found)
    return found
