"""The control loop: what a step does to every pool, when steps run, and a waiter's check.

It runs as ``balloons supervise``, in a thread (``app.start_supervisor()``), and in part in
every client waiting on a job (:meth:`Supervisor.check_job`). Ending a slot whose machine is
gone lives in :mod:`.reclaim` (the fork server runs it too), the look at each slot that
decides it in :mod:`.slots`, and the sweep of machines that nothing holds in :mod:`.orphans`.

Each :meth:`Supervisor.step` visits every pool and

1. reclaims slots whose lease ran out (no heartbeat, or a machine that never booted), and
   slots still booting after ``boot_probe`` seconds whose machine the backend says is already
   gone: it asks the backend why the machine died (exit code, out of memory, requested stop)
   and ends the slot's attempt with that reason, which retries it if the task's policy allows;
2. stops machines still running a job cancelled more than ``cancel_grace`` seconds ago, or
   running past their job's deadline by more than the grace (a task stuck in C code);
3. re-routes or fails jobs of a code version gone (:mod:`.versions`), promotes due jobs, and
   takes slots for queued work under the cap and for the warm floor, then launches them;
4. every ``gc_interval`` seconds, destroys machines tagged by balloons whose slot no longer
   exists (their job finished, was reclaimed, or is unknown) and stopped machines that are
   not in their pool's standby set (which it trims to the pool's ``standby`` setting), and
   trims old index entries.

Every change is one atomic script guarded by what it expects to find, so several supervisors
can run at once without double work, and one that dies mid-step leaves nothing half done:
a slot taken but never launched runs out its boot lease and is reclaimed like any other.

A client waiting on a job does the first and third for its job's pool (:meth:`check_job`), so
a waited-on job needs no supervisor. Leases, deadlines and ages are compared with the Redis
server's clock (``TIME``), the one they are written in: this host's clock decides nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..ids import ulid
from ..info import MachineInfo
from ..launcher import Launch, Wiring
from ..store import lua, replies
from ..store.keys import JobKeys, PoolKeys
from . import launches, orphans, poolconf, versions
from .flows import plans
from .slots import SlotChecks

if TYPE_CHECKING:
    import asyncio

    from ..dispatch import Dispatcher
    from ..schedules import Schedule

log = logging.getLogger("balloons.control.supervisor")


class Control(Wiring, Protocol):
    """What the control plane needs of an app (:class:`~balloons.App`): what launching needs,
    its secret and its dispatcher."""

    @property
    def secret(self) -> str: ...

    @property
    def dispatcher(self) -> Dispatcher: ...

    schedules: dict[str, Schedule]  # by name; :mod:`.cron` submits their runs


#: Seconds for which a waiter that checked its pool's machines spares the other waiters of the
#: pool that work (:meth:`Supervisor.check_job`); each waiter checks every few seconds.
POOL_CHECK_TURN = 2.0


@dataclass
class StepReport:
    """What one step did (for logs, tests and ``balloons supervise --once``)."""

    reclaimed: list[tuple[str, str]] = field(default_factory=list)  # (slot, reason)
    stopped: list[str] = field(default_factory=list)  # machine ids
    launched: list[str] = field(default_factory=list)  # slots
    destroyed: list[str] = field(default_factory=list)  # orphaned machine ids
    scheduled: list[str] = field(default_factory=list)  # ids of the schedules' jobs submitted
    versions: list[tuple[str, str]] = field(default_factory=list)  # see .versions: (job, outcome)
    advanced: list[str] = field(default_factory=list)  # ids of the chains and groups advanced
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(v for k, v in vars(self).items() if k != "errors")


class Supervisor(SlotChecks):
    """Does what no machine can do for itself, for every pool (see the module's docstring): one
    :meth:`step` per ``interval`` seconds, in a thread (:meth:`start`), an asyncio task
    (:meth:`start_async`) or the caller (:meth:`run_forever`). ``cancel_grace`` and
    ``timeout_grace``: seconds before a cancelled or overdue job's machine is stopped;
    ``gc_interval``: seconds between sweeps of orphaned machines, which must be
    ``orphan_min_age`` seconds old; ``boot_probe``: seconds after which a booting machine is
    looked up; ``version_grace``: see :mod:`.versions`."""

    def __init__(
        self,
        app: Control,
        *,
        interval: float = 1.0,
        cancel_grace: float = 10.0,
        timeout_grace: float = 10.0,
        gc_interval: float = 30.0,
        orphan_min_age: float = 10.0,
        boot_probe: float = 5.0,
        version_grace: float = versions.DEFAULT_GRACE,
    ) -> None:
        from ..config import check_seconds

        for what, value in (
            ("interval", interval), ("cancel_grace", cancel_grace),
            ("timeout_grace", timeout_grace), ("gc_interval", gc_interval),
            ("orphan_min_age", orphan_min_age), ("boot_probe", boot_probe),
            ("version_grace", version_grace),
        ):  # fmt: skip
            check_seconds(f"supervisor {what}", value, 0, 7 * 24 * 3600)
        self.app = app
        self.interval = interval
        self.cancel_grace = cancel_grace
        self.timeout_grace = timeout_grace
        self.gc_interval = gc_interval
        self.orphan_min_age = orphan_min_age
        self.boot_probe, self.version_grace = boot_probe, version_grace
        self._last_gc = -math.inf  # time.monotonic() of the last sweep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped_machines: dict[str, float] = {}
        self._probed: dict[str, float] = {}  # slot -> when its booting machine was last asked
        self._schedules_synced = False  # undeclared schedules forgotten (at the first step)

    def __repr__(self) -> str:
        return f"<Supervisor interval={self.interval:g}s running={self.running}>"

    # ------------------------------------------------------------------ step
    def step(self, *, gc: bool | None = None) -> StepReport:
        """Visit every pool once: reclaim lapsed slots, stop machines of cancelled or overdue
        jobs, launch for queued work and the warm floor, and (``gc=True``, or every
        ``gc_interval`` seconds when ``None``) sweep orphaned machines. Returns what it did."""
        report = StepReport()
        store = self.app.store
        self._schedules_synced = plans(self.app, self._schedules_synced, report)
        for pool in store.pools():
            pk = PoolKeys(self.app.settings.namespace, pool)
            try:
                self._reclaim(pk, store.server_time(pk), report)
                versions.step(self.app, pk, self.version_grace, report)
                self._fill(pk, report)
            except Exception as exc:  # one bad pool must not stop the others
                log.exception("supervisor: pool %s: %s", pool, exc)
                report.errors.append(f"{pool}: {exc}")
        if gc or (gc is None and time.monotonic() - self._last_gc >= self.gc_interval):
            self._last_gc = time.monotonic()
            try:
                self.collect_orphans(report)
                orphans.expire(self.app, store.server_time())
            except Exception as exc:
                log.exception("supervisor: gc: %s", exc)
                report.errors.append(f"gc: {exc}")
        return report

    def check_job(self, jk: JobKeys) -> bool:
        """What a waiter does for its own job every few seconds, so that a waited-on job never
        depends on a supervisor. A running job: if its slot's lease lapsed (its machine died
        without a word), reclaim it now. A job waiting for a machine (queued, or starting):
        check that its pool has a live machine that will take it, as a step does for the pool:
        reclaim the pool's slots whose lease lapsed or whose booting machine already died (an
        idle machine, or one on its way, that is gone would otherwise keep the job queued), then
        take slots for queued work under the cap and launch. One waiter of a pool does the
        latter in each :data:`POOL_CHECK_TURN`. Returns whether anything was done."""
        store = self.app.store
        pk = jk.pool
        with store.errors():
            status_b, slot_b = store.redis.hmget(jk.job, "status", "slot")
        report = StepReport()
        if status_b in (b"QUEUED", b"STARTING"):
            with store.errors():
                turn = store.redis.set(pk.check, "1", nx=True, px=int(POOL_CHECK_TURN * 1000))
            if turn:
                self._reclaim(pk, store.server_time(pk), report)
                self._fill(pk, report)
            return bool(report)
        if status_b != b"RUNNING" or not slot_b:
            return False
        slot = slot_b.decode("utf-8", "replace")
        with store.errors():
            pipe = store.redis.pipeline(transaction=False)
            pipe.zscore(pk.slots, slot)
            pipe.hget(pk.slot, slot)
            lease, raw = pipe.execute()
        now = store.server_time(pk)
        if lease is None or float(lease) >= now:
            return False
        from ..store.writes import slot_entry

        info = slot_entry(raw) if raw else {}
        self._reclaim_slot(pk, slot, float(lease), info, now, report)
        return bool(report.reclaimed)

    def recover(self) -> StepReport:
        """After the Redis server restarted on an earlier run's data (the embedded default's
        start): reclaim every slot whose machine the backend says has ended, whatever its
        lease (machines that died, or gave up on Redis, while the server was down). Slots
        whose machine still runs keep their chance to heartbeat; one that does not is
        reclaimed when its lease lapses, as ever."""
        report = StepReport()
        store = self.app.store
        self._schedules_synced = plans(self.app, self._schedules_synced, report)
        for pool in store.pools():
            pk = PoolKeys(self.app.settings.namespace, pool)
            try:
                self._reclaim(pk, store.server_time(pk), report, True)
            except Exception as exc:
                log.exception("supervisor: recovering pool %s: %s", pool, exc)
                report.errors.append(f"{pool}: {exc}")
        return report

    def _fill(self, pk: PoolKeys, report: StepReport) -> None:
        store = self.app.store
        floor = poolconf.floor_of(store, self.app.secret.encode(), pk)  # signed, else none
        ids = " ".join(ulid() for _ in range(floor.min_machines))
        tag = self.app.compat().tag  # queued work and a floor of this app's tag only
        size = (floor.cpus, floor.memory_mb)
        signed = (*size, floor.max_machines)  # the cap too: never the hash's own field
        for g in replies.scale_up(store.eval(lua.SCALE_UP, pk, ids, tag, *signed)):
            if why := launches.refusal(store, self.app.secret.encode(), pk, g):
                log.warning("supervisor: no machine for slot %s: %s", g.slot, why)
                continue
            timeout = _timeout_of(store, pk, g.ulid)
            keep = floor.standby > 0
            launch = Launch(pk.pool, g.ulid, g.attempt, g.cpus, g.memory_mb, timeout, keep)
            if launch.keep:
                launched = self.app.dispatcher.launch_standby(launch, background=False)
            else:
                launched = self.app.dispatcher.launch_slot(launch)
            if launched:
                report.launched.append(g.slot)

    # ---------------------------------------------------------------- orphans
    def collect_orphans(
        self,
        report: StepReport | None = None,
        *,
        dry_run: bool = False,
        standby: bool = False,
        wait: float = 0.0,
    ) -> list[MachineInfo]:
        """Destroy machines tagged by balloons that nothing will use again: running ones whose
        slot no longer exists (their job finished or is unknown), and stopped ones that are
        not in their pool's standby set. Each pool's standby set is first trimmed to its
        ``standby`` setting (a pool set to 0 gives all of its stopped machines up); with
        ``standby``, every standby set is emptied. Returns the machines; with ``dry_run`` only
        lists them, changing nothing. Only one process sweeps at a time: this one returns
        nothing when another swept in the last ``gc_interval / 2`` seconds (at least 5), unless
        ``wait`` gives it that many seconds to take its turn (``balloons gc``); such a sweep
        hands the turn back when it is done."""
        return orphans.collect(
            self.app,
            report.destroyed if report is not None else [],
            gc_interval=self.gc_interval,
            min_age=self.orphan_min_age,
            dry_run=dry_run,
            standby=standby,
            wait=wait,
        )

    # ------------------------------------------------------------------- run
    @property
    def running(self) -> bool:
        """Whether the supervisor's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def run_forever(self) -> None:
        """Run a step every ``interval`` seconds in this thread until :meth:`stop`; a failed step
        (Redis down, say) is logged and tried again at the next interval."""
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception as exc:  # Redis down, say: try again next interval
                log.error("supervisor step failed: %s", exc)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> Supervisor:
        """Run in a daemon thread."""
        if not self.running:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.run_forever, name="balloons-supervisor", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, and wait up to ``timeout`` seconds for its thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def run_async(self) -> None:
        """The asyncio variant: steps run in a worker thread between async sleeps."""
        import asyncio

        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.step)
            except Exception as exc:
                log.error("supervisor step failed: %s", exc)
            await asyncio.sleep(self.interval)

    def start_async(self) -> asyncio.Task[None]:
        """Run :meth:`run_async` as a task of the running event loop; returns the task (cancel
        it, after :meth:`stop`, to end it at once)."""
        import asyncio

        return asyncio.get_running_loop().create_task(self.run_async())


def _timeout_of(store: Any, pk: PoolKeys, u: str) -> float:
    with contextlib.suppress(Exception):
        raw = store.redis.hget(pk.job(u), "payload")
        return float(json.loads(raw).get("timeout") or 600.0)
    return 600.0
