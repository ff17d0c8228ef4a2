"""The emulator's store and the machine state machine.

::

    created ──start──▶ starting ──(boot delay, spawn)──▶ started
                          ▲                                 │ process exits / stop / kill
                          └──── restart policy says so ◀────┤
                                                            ▼
    destroyed ◀── destroying ◀── auto_destroy or delete ── stopped (or stopping first)

One :class:`Emulator` holds every app and machine behind one re-entrant lock. Request handlers
change machines directly; a supervisor thread, started with the first machine, does what takes
time: spawning processes once their boot delay has passed, noticing exits, escalating stops to
SIGKILL, the memory watchdog, the kill fault and forgetting destroyed machines after
``destroyed_retention``. Because the thread starts lazily, the emulator works without an ASGI
lifespan (``httpx.ASGITransport`` runs none); :meth:`Emulator.shutdown` kills every process it
started, and a finalizer does the same at interpreter exit if nobody called it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

from . import procs
from .config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MEMORY_MB,
    TICK_SECONDS,
    EmulatorConfig,
)
from .errors import APP_NOT_FOUND, MACHINE_NOT_FOUND, ApiError
from .faults import FaultInjector
from .ids import IdSource
from .model import App, Event, Machine, MachineState, Process, exit_event
from .waiters import ChangeNotifier

log = logging.getLogger("balloons.fly.emulator")

#: Events and transitions kept per machine (Fly shows at most 50 events).
MAX_EVENTS = 100
#: Restart back-off: the n-th restart waits min(BASE * 2**(n-1), MAX) seconds, so a machine
#: that fails at once under ``always`` does not spin.
RESTART_BACKOFF_BASE = 0.05
RESTART_BACKOFF_MAX = 2.0
#: Exit code of a machine whose command could not be executed, as a shell reports it.
EXEC_FAILED_EXIT_CODE = 127


class Emulator:
    """Apps, machines and their processes; everything the HTTP layer serves."""

    def __init__(self, config: EmulatorConfig, injector: FaultInjector | None = None) -> None:
        self.config = config
        self.faults = injector or FaultInjector(config.faults)
        self.ids = IdSource(self.faults.seed)
        self.lock = threading.RLock()
        self.apps: dict[str, App] = {}
        self.machines: dict[str, Machine] = {}
        #: API calls by ``"METHOD /route/{template}"``, for ``GET /_emulator/stats``.
        self.calls: Counter[str] = Counter()
        self.notifier = ChangeNotifier()
        #: Process group ids of every machine process ever started (tests check them).
        self.spawned_pgids: list[int] = []
        self._live: dict[int, subprocess.Popen[bytes]] = {}
        self._work_dir = config.work_dir
        self._owns_work_dir = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False
        # Kill leftovers at interpreter exit even if nobody called shutdown().
        self._finalizer = weakref.finalize(self, procs.kill_all, self._live)

    def __repr__(self) -> str:
        return f"<Emulator apps={len(self.apps)} machines={len(self.machines)}>"

    # -- lookups ---------------------------------------------------------------------------

    def app(self, name: str) -> App:
        """The app called ``name``, or 404 ``app not found``."""
        found = self.apps.get(name)
        if found is None:
            raise ApiError(404, APP_NOT_FOUND)
        return found

    def machine(self, app_name: str, machine_id: str) -> Machine:
        """A machine of ``app_name`` (destroyed ones too, until forgotten), or 404."""
        self.app(app_name)
        found = self.machines.get(machine_id)
        if found is None or found.app != app_name:
            raise ApiError(404, MACHINE_NOT_FOUND)
        return found

    def secrets_for(self, app: App) -> dict[str, str]:
        """Secrets a machine of ``app`` gets: emulator-wide ones, then the app's own."""
        merged = dict(self.config.secrets)
        merged.update({name: value for name, (value, _) in app.secrets.items()})
        return merged

    def machine_dir(self, machine_id: str) -> Path:
        """The directory holding a machine's root (``FLY_EMULATOR_ROOT``) and output log."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="fly-emulator-"))
            self._owns_work_dir = True
        return self._work_dir / machine_id

    def log_path(self, machine_id: str) -> Path:
        """Where a machine's stdout and stderr go."""
        return self.machine_dir(machine_id) / "output.log"

    # -- state changes (callers hold the lock) ----------------------------------------------

    def set_state(self, machine: Machine, state: MachineState) -> None:
        """Move ``machine`` to ``state``, record the transition and wake the waiters."""
        machine.state = state
        machine.updated_at = time.time()
        machine.transitions.append((self.ids.ulid(), state))
        del machine.transitions[:-MAX_EVENTS]
        log.info("machine %s (%s) → %s", machine.id, machine.app, state)
        self.notifier.notify()

    def add_event(
        self,
        machine: Machine,
        type_: str,
        status: str,
        source: str,
        request: dict[str, Any] | None = None,
    ) -> Event:
        """Record an event of ``machine`` (kept to the latest ones) and wake the waiters; returns
        it."""
        event = Event(self.ids.ulid(), type_, status, source, int(time.time() * 1000), request)
        machine.events.append(event)
        del machine.events[:-MAX_EVENTS]
        self.notifier.notify()
        return event

    def begin_start(self, machine: Machine, delay: float = 0.0) -> None:
        """Move to ``starting``; the supervisor spawns the process once the boot delay passes."""
        if self._closed:
            raise ApiError(503, "emulator is shutting down")
        machine.boot_at = time.monotonic() + self.config.faults.boot_delay + delay
        self.set_state(machine, MachineState.STARTING)
        self._ensure_supervisor()
        self._wake.set()

    def tick_soon(self) -> None:
        """Have the supervisor look at every machine now rather than at its next tick."""
        self._wake.set()

    def request_stop(
        self, machine: Machine, sig: int, timeout: float, *, then_start: bool = False
    ) -> None:
        """Signal the process, SIGKILL it after ``timeout``; ends ``stopped`` (or restarted)."""
        process = machine.process
        if process is None:  # still booting: there is nothing to signal
            machine.boot_at = None
            self.set_state(machine, MachineState.STOPPING)
            if then_start:
                self.begin_start(machine)
            else:
                self._settle_stopped(machine)
            return
        process.requested_stop = True
        process.restart_after = then_start
        process.stop_deadline = time.monotonic() + timeout
        self.set_state(machine, MachineState.STOPPING)
        procs.signal_leader(process.popen, sig)
        self._wake.set()

    def destroy(self, machine: Machine) -> None:
        """Kill the machine if it runs, then mark it ``destroyed``."""
        self.set_state(machine, MachineState.DESTROYING)
        machine.boot_at = None
        if machine.process is None:
            self._mark_destroyed(machine)
            return
        machine.process.requested_stop = True
        procs.kill_group(machine.process.popen.pid)
        self._wake.set()  # the supervisor reaps it and finishes the destroy

    def forget(self, machine: Machine) -> None:
        """Drop a machine entirely, killing and reaping its process first."""
        if machine.process is not None:
            self._reap_now(machine.process.popen)
            machine.process = None
        self.machines.pop(machine.id, None)
        shutil.rmtree(self.machine_dir(machine.id), ignore_errors=True)
        self.notifier.notify()

    # -- process lifecycle (supervisor thread, under the lock) -----------------------------

    def _spawn(self, machine: Machine, now: float) -> None:
        machine.boot_at = None
        app = self.app(machine.app)
        secrets = self.secrets_for(app)
        config = machine.config
        memory_mb = int((config.get("guest") or {}).get("memory_mb") or DEFAULT_MEMORY_MB)
        directory = self.machine_dir(machine.id)
        root = directory / "root"
        image_dir = procs.lookup_image(self.config.images, str(config.get("image", "")))
        try:
            argv = procs.command_for(
                config,
                self.config.image_commands,
                self.config.default_command,
                mapped=image_dir is not None,
            )
            if image_dir is None:
                root.mkdir(parents=True, exist_ok=True)
            else:
                argv = procs.resolve_program(argv, self.config.path)
                directory.mkdir(parents=True, exist_ok=True)
                procs.copy_image(image_dir, root)
            procs.write_files(root, config.get("files") or [], secrets)
            env = procs.machine_env(
                base_env=self.config.base_env,
                fly_env=self._fly_env(machine, memory_mb),
                secrets={} if procs.ignores_app_secrets(config) else secrets,
                config_env=config.get("env") or {},
                root=root,
                path=self.config.path,
            )
            popen = procs.spawn(argv, env, root, self.log_path(machine.id), memory_mb)
        except (ApiError, OSError, ValueError) as exc:
            # Like an init that cannot exec its command: the machine starts and exits at once.
            message = exc.message if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
            log.warning("machine %s could not start its command: %s", machine.id, message)
            self.set_state(machine, MachineState.STARTED)
            self.add_event(machine, "start", "started", "flyd")
            self._finish(machine, exit_event(EXEC_FAILED_EXIT_CODE, -1, error=message))
            return
        kill_after = self.faults.kill_after()
        machine.process = Process(
            popen, started_at=now, kill_at=None if kill_after is None else now + kill_after
        )
        self._live[popen.pid] = popen
        self.spawned_pgids.append(popen.pid)
        log.info("machine %s started pid %d", machine.id, popen.pid)
        self.set_state(machine, MachineState.STARTED)
        self.add_event(machine, "start", "started", "flyd")

    def _fly_env(self, machine: Machine, memory_mb: int) -> dict[str, str]:
        # Fly Launch records a machine's process group in this metadata key.
        group = (machine.config.get("metadata") or {}).get("fly_process_group", "app")
        return {
            "FLY_APP_NAME": machine.app,
            "FLY_MACHINE_ID": machine.id,
            "FLY_ALLOC_ID": machine.id,
            "FLY_REGION": machine.region,
            "FLY_IMAGE_REF": str(machine.config.get("image", "")),
            "FLY_PRIVATE_IP": machine.private_ip,
            "FLY_PROCESS_GROUP": str(group),
            "FLY_VM_MEMORY_MB": str(memory_mb),
            "FLY_MACHINE_VERSION": machine.instance_id,
            "PRIMARY_REGION": self.config.region,
        }

    def _on_exit(self, machine: Machine, returncode: int) -> None:
        process = machine.process
        assert process is not None
        machine.process = None
        self._live.pop(process.popen.pid, None)  # its group was killed by procs.reap
        sig = -returncode if returncode < 0 else -1
        exit_code = returncode if returncode >= 0 else 128 + sig
        event = exit_event(
            exit_code, sig, oom_killed=process.oom_killed, requested_stop=process.requested_stop
        )
        log.info("machine %s exited with code %d (signal %d)", machine.id, exit_code, sig)
        self._finish(machine, event, restart_after_stop=process.restart_after)

    def _finish(
        self, machine: Machine, exit_event: dict[str, Any], *, restart_after_stop: bool = False
    ) -> None:
        """Record the exit and move on: destroyed, restarted or stopped."""
        destroying = machine.state is MachineState.DESTROYING
        restart = not destroying and (
            restart_after_stop
            or (not exit_event["requested_stop"] and self._policy_restarts(machine, exit_event))
        )
        exit_event["restarting"] = restart
        request = {"exit_event": exit_event, "restart_count": machine.restart_count}
        self.add_event(machine, "exit", "stopped", "flyd", request)
        if destroying:
            self._mark_destroyed(machine)
        elif restart:
            delay = 0.0
            if not restart_after_stop:
                machine.restart_count += 1
                delay = min(
                    RESTART_BACKOFF_BASE * 2 ** (machine.restart_count - 1), RESTART_BACKOFF_MAX
                )
            self.begin_start(machine, delay)
        else:
            self._settle_stopped(machine)

    def _policy_restarts(self, machine: Machine, exit_event: dict[str, Any]) -> bool:
        restart = machine.config.get("restart") or {}
        # Fly's documented default is on-failure (spec, fly.MachineRestart.policy).
        policy = restart.get("policy") or "on-failure"
        if policy == "always":
            return True
        if policy == "on-failure":
            retries = restart.get("max_retries")
            limit = DEFAULT_MAX_RETRIES if retries is None else int(retries)
            return exit_event["exit_code"] != 0 and machine.restart_count < limit
        return False  # "no", and "spot-price", which the emulator does not model

    def _settle_stopped(self, machine: Machine) -> None:
        self.set_state(machine, MachineState.STOPPED)
        if machine.config.get("auto_destroy"):
            self.set_state(machine, MachineState.DESTROYING)
            self._mark_destroyed(machine)

    def _mark_destroyed(self, machine: Machine) -> None:
        machine.lease = None
        machine.forget_at = time.monotonic() + self.config.destroyed_retention
        self.set_state(machine, MachineState.DESTROYED)

    # -- supervisor ------------------------------------------------------------------------

    def _ensure_supervisor(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._supervise, name="fly-emulator-supervisor", daemon=True
            )
            self._thread.start()

    def _supervise(self) -> None:
        while not self._closed:
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.tick()
            except Exception:  # one bad tick must not end supervision of every machine
                log.exception("emulator supervisor tick failed")

    def tick(self) -> None:
        """One supervision pass over every machine."""
        now = time.monotonic()
        with self.lock:
            if self._closed:
                return
            for machine in list(self.machines.values()):
                process = machine.process
                if machine.state is MachineState.STARTING and machine.boot_at is not None:
                    if now >= machine.boot_at:
                        self._spawn(machine, now)
                elif process is not None:
                    returncode = procs.reap(process.popen)
                    if returncode is not None:
                        self._on_exit(machine, returncode)
                    else:
                        self._police(machine, process, now)
                elif machine.forget_at is not None and now >= machine.forget_at:
                    self.forget(machine)

    def _police(self, machine: Machine, process: Process, now: float) -> None:
        """Stop escalation, the kill fault and the memory watchdog for a live process."""
        pid = process.popen.pid
        if process.stop_deadline is not None and now >= process.stop_deadline:
            process.stop_deadline = None
            procs.kill_group(pid)
        if process.kill_at is not None and now >= process.kill_at:
            process.kill_at = None
            process.fault_killed = True
            log.info("machine %s: injected kill", machine.id)
            procs.kill_group(pid)
        memory_mb = int((machine.config.get("guest") or {}).get("memory_mb") or DEFAULT_MEMORY_MB)
        rss = procs.rss_bytes(pid)
        if not process.oom_killed and rss is not None and rss > memory_mb * procs.MIB:
            process.oom_killed = True
            log.info("machine %s: out of memory (%d MiB > %d MiB)", machine.id,
                     rss // procs.MIB, memory_mb)  # fmt: skip
            procs.kill_group(pid)

    # -- shutdown --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` has run."""
        return self._closed

    def shutdown(self) -> None:
        """Kill every machine process, stop the supervisor, remove a temporary work dir.

        Idempotent; called by the ASGI lifespan's shutdown, by ``server.run`` and by tests.
        """
        with self.lock:
            self._closed = True
            self._wake.set()
            for machine in self.machines.values():
                if machine.process is not None:
                    self._reap_now(machine.process.popen)
                    machine.process = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        procs.kill_all(self._live)
        procs.wait_groups_gone(self.spawned_pgids)
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        self.notifier.notify()

    def _reap_now(self, popen: subprocess.Popen[bytes]) -> None:
        if popen.returncode is None:  # a reaped pid may be another process's by now
            procs.kill_group(popen.pid)
        popen.wait(timeout=10)
        self._live.pop(popen.pid, None)
