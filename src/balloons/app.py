"""``App``: settings, the task registry, pools and the wiring of store, backend and dispatcher.

``App()`` with no arguments uses the embedded default (a private Valkey server and local
machines). Everything else is a constructor argument or an environment variable, with
precedence argument > environment > default (see :mod:`balloons.config`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import registry
from .commands import CommandJobs
from .config import Settings
from .errors import BackendError, ConfigError
from .job import Job
from .pools import Pool, check_standby, declared
from .serialize import Serializer, get_serializer
from .store.keys import JobKeys
from .store.redisurl import mask_url
from .task import AsyncTask, Registration, Task, TaskOptions, define, keywords_of

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence
    from pathlib import Path
    from typing import ParamSpec, Unpack

    from .backends.base import Backend
    from .compat import Compat
    from .control.supervisor import Supervisor
    from .cost import CostReport, PriceTable
    from .dispatch import Dispatcher
    from .info import JobInfo, MachineSpec
    from .pools import PoolSettings
    from .schedules import Schedule, ScheduleOptions
    from .store.queries import Query
    from .store.writes import Store
    from .task import Register

    P = ParamSpec("P")

R = TypeVar("R")
# Importing this module is on every machine's start-up path (a task module imports App), so
# asyncio, logging, the embedded server, the backends and the dispatcher are imported where
# they are used.


class App(CommandJobs):
    """A balloons application: where jobs are stored and how their machines start."""

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        backend: str | Backend | None = None,
        secret: str | None = None,
        namespace: str | None = None,
        state_dir: str | Path | None = None,
        record_ttl: int | None = None,
        serializer: str | Serializer | None = None,
        env_allowlist: Sequence[str] | None = None,
        max_arg_bytes: int | None = None,
        prices: str | None = None,
        version: str | None = None,
        redis_timeout: float | None = None,
    ) -> None:
        self.settings = Settings.resolve(
            os.environ,
            redis_url=redis_url,
            backend=backend if isinstance(backend, str) else None,
            secret=secret,
            namespace=namespace,
            state_dir=state_dir,
            record_ttl=record_ttl,
            serializer=serializer if isinstance(serializer, str) else None,
            env_allowlist=tuple(env_allowlist) if env_allowlist is not None else None,
            max_arg_bytes=max_arg_bytes,
            version=version,
            redis_timeout=redis_timeout,
        )
        self.serializer = get_serializer(
            serializer
            if serializer is not None and not isinstance(serializer, str)
            else self.settings.serializer
        )
        self._backend_obj = (
            backend if backend is not None and not isinstance(backend, str) else None
        )
        self._backend: Backend | None = None
        self._store: Store | None = None
        self._secret: str | None = None
        self._pools: dict[str, Pool] = {}
        self._checker: Supervisor | None = None
        self._prices_path = prices
        self._prices: PriceTable | None = None
        self._dispatcher: Dispatcher | None = None
        self._compat: tuple[int, Compat] | None = None
        #: The schedules declared in code (:meth:`schedule`), by name.
        self.schedules: dict[str, Schedule] = {}

    def __repr__(self) -> str:
        where = mask_url(self.settings.redis_url) if self.settings.redis_url else "embedded"
        return f"<balloons.App redis={where} backend={self.settings.backend}>"

    # ------------------------------------------------------------ registration
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    @keywords_of(Registration)
    def task(self, **options: Any) -> Register: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(memory_mb=512, ...)``
        (the options: :class:`~balloons.TaskOptions`; ``name``: the task's name, by default
        the function's qualified name). An ``async def`` function makes an
        :class:`~balloons.task.AsyncTask`, run in an event loop on its machine.

        ``cpus`` and ``memory_mb`` default to the pool's. ``retries`` attempts more are made
        when the task raises one of ``retry_on`` or raises :class:`balloons.Retry`, or when its
        machine is lost, after ``retry_backoff * 2**(n-1)`` seconds (jittered, at most
        ``retry_backoff_max``); an out-of-memory attempt retries with ``retry_memory_factor``
        times the memory, up to ``retry_memory_max``. With ``max_cost`` (US dollars), an
        attempt whose machine has cost that much (at :attr:`prices`) is stopped and the job
        fails with reason ``cost_cap``.
        """
        name = options.pop("name", None)
        schedule = options.pop("schedule", None)
        if "retry_on" in options:  # any iterable of exception classes
            options["retry_on"] = tuple(options["retry_on"])
        opts = TaskOptions(**options)

        def wrap(f: Callable[..., Any]) -> Task[..., Any]:
            t = define(self, f, name, opts)
            if schedule is not None:
                _declare_cron(self.schedules, t, schedule)
            return t

        return wrap(fn) if fn is not None else wrap

    def schedule(
        self, task: Task[Any, Any], *, cron: str, **options: Unpack[ScheduleOptions]
    ) -> Schedule:
        """Run ``task(*args, **kwargs)`` on the cron expression ``cron``, submitted by the
        supervisor (``args``, ``kwargs``, ``name``, ``tz``, ``catch_up``: see
        :func:`balloons.schedules.declare`)."""
        return _declare(self.schedules, task, cron, options)

    # ------------------------------------------------------------------ pools
    def pool(self, name: str, **settings: Unpack[PoolSettings]) -> Pool:
        """Declare a pool of machines: ``app.pool("builds", max_machines=2, cpus=4, ...)``.

        The settings (:class:`~balloons.pools.PoolSettings`): ``max_machines``,
        ``idle_timeout``, ``boot_timeout`` and ``heartbeat`` left out come from the environment
        (``BALLOONS_MAX_MACHINES``, ``BALLOONS_IDLE_TIMEOUT``, ``BALLOONS_BOOT_TIMEOUT``,
        ``BALLOONS_HEARTBEAT``); ``min_machines`` (0), ``cpus`` (1), ``memory_mb`` (256).
        ``standby=N`` keeps up to N machines stopped when they idle out, for later launches
        to start rather than create (a backend with ``start``: ``FlyBackend``).
        ``isolation`` is what a job may leave behind for the next: ``"process"`` (the
        default: a fresh process per job, forked from a clean pre-imported parent on a warm
        machine), ``"machine"`` (a machine per job, no reuse) or ``"none"`` (one interpreter
        runs job after job, sharing its globals, environment and threads: the fastest).
        ``protocol="http"``: its machines hold no store credentials, only their attempt's
        token, and run one attempt each over the worker protocol (needs :attr:`service_url`;
        tasks with JSON arguments; docs/worker-protocol.md).
        """
        p = declared(name, self.settings.env, settings)
        if p.standby:
            check_standby(p, self._backend_obj, self.settings.backend)
        self._pools[name] = p
        return p

    def get_pool(self, name: str) -> Pool:
        """The pool declared under ``name``, or one with the default settings."""
        found = self._pools.get(name)
        return found if found is not None else self.pool(name)

    @property
    def pools(self) -> dict[str, Pool]:
        """The pools declared with :meth:`pool`, by name (a copy)."""
        return dict(self._pools)

    # ----------------------------------------------------------------- wiring
    @property
    def store(self) -> Store:
        """The Redis store, connecting (and starting the embedded server) on first use."""
        if self._store is None:
            from .store import embedded
            from .store.writes import Store

            url = self.settings.redis_url or embedded.ensure(
                self.settings.state_dir, namespace=self.settings.namespace
            )
            ns, timeout = self.settings.namespace, self.settings.redis_timeout
            self._store = Store(url, ns, key=self._signing_key, timeout=timeout)
        return self._store

    @property
    def secret(self) -> str:
        """The signing key: ``App(secret=...)`` or ``BALLOONS_SECRET``, else, with the embedded
        default, the one generated once in the state directory; ``ConfigError`` when an external
        Redis is set without one."""
        if self._secret is None:
            if self.settings.secret:
                self._secret = self.settings.secret
            elif self.settings.embedded:
                from .config import check_secret
                from .store import embedded

                key = embedded.load_secret(self.settings.state_dir)
                check_secret(key, f"the file {self.settings.state_dir / 'secret'}")
                self._secret = key
            else:
                raise ConfigError(
                    "a signing key is required with an external Redis "
                    f"({mask_url(self.settings.redis_url or '')}): set BALLOONS_SECRET or "
                    "App(secret=...) to the same value for the app and its workers"
                )
        return self._secret

    def _signing_key(self) -> bytes | None:
        """The secret as a key, or None when none is configured (readers then verify nothing,
        so they trust nothing a machine wrote)."""
        try:
            return self.secret.encode()
        except ConfigError:
            return None

    def compat(self) -> Compat:
        """The code version of this app's jobs and their compatibility tag (see
        :mod:`balloons.compat`), worked out again when more tasks are registered."""
        got = self._compat
        if got is not None and got[0] == len(registry.TASKS):  # the submit path: one check
            return got[1]
        from .backends.base import Imaged
        from .compat import compat_of

        try:
            backend = self.backend
            image, known = (backend.image if isinstance(backend, Imaged) else None), True
        except (ConfigError, BackendError):  # said by the launch, which fails the job
            image, known = None, False
        new = compat_of(self.secret.encode(), self.settings.version, image, registry.TASKS)
        if known:
            self._compat = (len(registry.TASKS), new)
        return new

    def pin_compat(self, compat: Compat) -> None:
        """Give this app's jobs ``compat`` until more tasks are registered: a machine's app,
        whose jobs (a chain's next link) carry the machine's own code version, as its launcher
        named it, not one worked out from the task modules its process happens to import."""
        self._compat = (len(registry.TASKS), compat)

    def require_backend_installed(self) -> None:
        """Raise ``ConfigError`` naming the extra to install when the backend named by the
        settings (``BALLOONS_BACKEND``) needs a library that is missing: checked before a job
        is stored, so that none is left to fail its launch for it."""
        if self._backend_obj is None and self._backend is None and self.settings.backend == "fly":
            from .backends.fly import require_httpx

            require_httpx()

    @property
    def backend(self) -> Backend:
        """The machine backend, made from the settings (or the object given) and bound to this
        app on first use."""
        if self._backend is None:
            from .backends.base import BackendContext, make_backend

            backend = self._backend_obj
            if backend is None:
                backend = make_backend(self.settings.backend)
            backend.bind(
                BackendContext(
                    redis_url=self.store.url,
                    secret=self.secret,
                    namespace=self.settings.namespace,
                    state_dir=self.settings.state_dir,
                    env=self.settings.env,
                )
            )
            self._backend = backend
        return self._backend

    @property
    def prices(self) -> PriceTable:
        """The price table costs are reckoned with: ``balloons/prices.json``, with the parts
        named by ``App(prices=PATH)`` or ``BALLOONS_PRICES`` replaced."""
        if self._prices is None:
            from .cost import prices_for

            self._prices = prices_for(self._prices_path, self.settings.env)
        return self._prices

    def costs(
        self,
        pools: Sequence[str] | None = None,
        limit: int = 100_000,
        jobs: Sequence[JobInfo] | None = None,
    ) -> CostReport:
        """Cost totals per task, pool and hour of the jobs kept in Redis (newest ``limit`` per
        pool), and each pool's idle warm-machine time. ``jobs``: summaries already read (with
        ``created``), whose attempts are read here."""
        return self.store.run(self._costs(pools, limit, jobs))

    async def costs_async(
        self,
        pools: Sequence[str] | None = None,
        limit: int = 100_000,
        jobs: Sequence[JobInfo] | None = None,
    ) -> CostReport:
        """:meth:`costs` for asyncio."""
        return await self.store.run_async(self._costs(pools, limit, jobs))

    def _costs(
        self, pools: Sequence[str] | None, limit: int, jobs: Sequence[JobInfo] | None
    ) -> Query[CostReport]:
        from .cost import stored_report

        return stored_report(self.settings.namespace, pools, limit, jobs, self.prices)

    def supervisor(self, **options: Any) -> Supervisor:
        """A :class:`~balloons.control.supervisor.Supervisor` for this app (not started)."""
        from .control.supervisor import Supervisor

        return Supervisor(self, **options)

    def start_supervisor(self, interval: float = 1.0, **options: Any) -> Supervisor:
        """Run the supervisor in a daemon thread of this process; returns it (``.stop()``).
        For asyncio apps: ``app.supervisor().start_async()`` inside the running loop."""
        return self.supervisor(interval=interval, **options).start()

    def check_lapsed(self, jk: JobKeys) -> bool:
        """Reclaim the job's slot if its machine stopped heartbeating (a waiter's check: so a
        job whose machine died is failed, or retried, even with no supervisor running)."""
        import contextlib

        if self._checker is None:
            self._checker = self.supervisor()
        with contextlib.suppress(Exception):
            return self._checker.check_job(jk)
        return False

    def job(self, job_id: str) -> Job[Any]:
        """The handle of an existing job, from its id: :class:`~balloons.JobNotFound` now
        for a string that is no job id, on use for a job that does not exist."""
        return Job(self, job_id)

    def jobs(self, limit: int = 50, pool: str | None = None) -> list[JobInfo]:
        """The newest jobs, newest first (``limit``: 1 to 10,000)."""
        return self.store.run(self._jobs(limit, pool))

    async def jobs_async(self, limit: int = 50, pool: str | None = None) -> list[JobInfo]:
        """:meth:`jobs` for asyncio."""
        return await self.store.run_async(self._jobs(limit, pool))

    def _jobs(self, limit: int, pool: str | None) -> Query[list[JobInfo]]:
        from .listing import newest

        return newest(self.settings.namespace, limit, pool, self.store.signing_key())

    def retry(self, job_id: str) -> Job[Any]:
        """Submit a new job running the same task with the same options and arguments.

        The stored arguments are reused as they are (never decoded), after their signature is
        checked, so a record altered in Redis is refused rather than signed anew.
        """
        return self.dispatcher.resubmit(job_id)

    async def retry_async(self, job_id: str) -> Job[Any]:
        """:meth:`retry` for asyncio."""
        return await self.dispatcher.resubmit_async(job_id)

    def decode_result(self, job_id: str, rec: Mapping[str, bytes]) -> Any:
        """The result in a job's record (``result``, ``rsig``, ``attempt``), decoded with this
        app's serializer once its tag verifies with the app's secret for that job and attempt
        (JSON, the safe default, is read too). Nothing in the record chooses the decoder.

        Raises :class:`JobFailed` (reason ``result_invalid``) when the tag does not verify,
        :class:`SerializationError` when the result was encoded with another serializer than
        this app's or does not decode, and :class:`ConfigError` when no secret is set."""
        from .job import decode_result

        return decode_result(job_id, rec, self.serializer, self.secret.encode())

    def cancel(self, job_id: str, grace: float = 10.0, wait: bool = False) -> bool:
        """Cancel a job: a queued one never starts; a running one is told to stop (its worker
        notices within a heartbeat) and its machine is stopped after ``grace`` seconds if it
        is still on the job (from a daemon thread, or before returning with ``wait``).
        Returns False if the job had already ended."""
        return self.dispatcher.cancel(job_id, grace, wait)

    async def cancel_async(self, job_id: str, grace: float = 10.0, wait: bool = False) -> bool:
        """:meth:`cancel` for asyncio."""
        return await self.dispatcher.cancel_async(job_id, grace, wait)

    def close(self) -> None:
        """Make the launches still waiting for a rate limit, then close the connections (a
        backend's too, when the app made it: one given to it is the caller's to close)."""
        if self._dispatcher is not None:
            self._dispatcher.close()
        if self._store is not None:
            self._store.close()
        if self._backend is not None and self._backend_obj is None:
            getattr(self._backend, "close", lambda: None)()

    async def aclose(self) -> None:
        """:meth:`close`, and this event loop's asyncio connections first (call it before the
        loop ends, to leave no socket for the garbage collector)."""
        import asyncio

        if self._store is not None:
            await self._store.aclose()
        await asyncio.to_thread(self.close)

    # ---------------------------------------------------------------- dispatch
    @property
    def dispatcher(self) -> Dispatcher:
        """Submits this app's jobs, launches their machines and cancels them (loaded on first
        use: a machine that only runs jobs never needs it)."""
        d = self._dispatcher
        if d is None:
            from .dispatch import Dispatcher

            d = self._dispatcher = Dispatcher(self)
        return d

    def launch_slot(self, *launch: Any, spec: MachineSpec | None = None) -> bool:
        """Launch the machine of a slot the store granted: ``pool, ulid, attempt, cpus,
        memory_mb, timeout[, keep]`` (see :meth:`balloons.launcher.SlotLauncher.launch_slot`)."""
        from .launcher import Launch

        return self.dispatcher.launch_slot(Launch(*launch), spec)

    def _spec(self, *args: Any) -> MachineSpec:
        return self.dispatcher.slots.spec(*args)

    def _submit_args(self, *args: Any) -> Any:
        return self.dispatcher.submit_args(*args)


def _declare(
    schedules: dict[str, Schedule], task: Task[Any, Any], cron: str, options: ScheduleOptions
) -> Schedule:
    """:func:`balloons.schedules.declare`, imported when an app first declares a schedule (a
    machine importing the app's module never needs it)."""
    from .schedules import declare

    return declare(schedules, task, cron, **options)


def _declare_cron(schedules: dict[str, Schedule], task: Task[Any, Any], spec: Any) -> None:
    """:func:`balloons.schedules.declare_cron`, imported when first needed."""
    from .schedules import declare_cron

    declare_cron(schedules, task, spec)
