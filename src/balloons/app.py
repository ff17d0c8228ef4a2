"""``App``: configuration, the task registry and the submit path.

``App()`` with no arguments uses the embedded default (a private Valkey server and local
machines). Everything else is a constructor argument or an environment variable, with
precedence argument > environment > default (see :mod:`balloons.config`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import registry
from .config import Settings
from .errors import (
    BackendError,
    ConfigError,
    JobFailed,
    JobNotFound,
    SerializationError,
    StoreError,
    WorkerError,
)
from .ids import ulid
from .job import Job, job_keys
from .keys import POOL_RE, JobKeys, PoolKeys
from .pools import Pool
from .resp import mask_url
from .serialize import JSONSerializer, Serializer, dumps_call, get_serializer
from .signing import result_serializer, sign, verify
from .states import Reason
from .task import DEFAULT_TIMEOUT, Task, TaskOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path
    from types import ModuleType
    from typing import ParamSpec

    from .backends.base import Backend
    from .cost import CostReport, PriceTable
    from .launcher import Launch, Launcher
    from .status import JobInfo, MachineSpec
    from .store import Store, SubmitRequest
    from .supervisor import Supervisor

    P = ParamSpec("P")

R = TypeVar("R")
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder, not one per submit
# Importing this module is on every machine's start-up path (a task module imports App), so
# asyncio, logging, the embedded server and the backends are imported where they are used.


class App:
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
        self._launcher: Launcher | None = None
        self._create_lock = threading.Lock()  # the launcher's creates, one at a time
        # (id(task), id(options)) -> (task, options, (cpus, memory_mb, main), payload head)
        self._heads: dict[tuple[int, int], tuple[Any, TaskOptions, tuple[Any, ...], str]] = {}

    def __repr__(self) -> str:
        where = mask_url(self.settings.redis_url) if self.settings.redis_url else "embedded"
        return f"<balloons.App redis={where} backend={self.settings.backend}>"

    # ------------------------------------------------------------ registration
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        cpus: int | None = None,
        memory_mb: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        pool: str = "default",
        retries: int = 0,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        retry_memory_factor: float = 1.0,
        retry_memory_max: int | None = None,
        priority: int = 0,
        max_cost: float | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        cpus: int | None = None,
        memory_mb: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        pool: str = "default",
        retries: int = 0,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        retry_memory_factor: float = 1.0,
        retry_memory_max: int | None = None,
        priority: int = 0,
        max_cost: float | None = None,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(memory_mb=512, ...)``.

        ``cpus`` and ``memory_mb`` default to the pool's. ``retries`` attempts more are made
        when the task raises one of ``retry_on`` or raises :class:`balloons.Retry`, or when its
        machine is lost, after ``retry_backoff * 2**(n-1)`` seconds (jittered, at most
        ``retry_backoff_max``); an out-of-memory attempt retries with ``retry_memory_factor``
        times the memory, up to ``retry_memory_max``. With ``max_cost`` (US dollars), an
        attempt whose machine has cost that much (at :attr:`prices`) is stopped and the job
        fails with reason ``cost_cap``.
        """
        opts = TaskOptions(
            cpus=cpus,
            memory_mb=memory_mb,
            timeout=timeout,
            pool=pool,
            retries=retries,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            retry_on=tuple(retry_on),
            retry_memory_factor=retry_memory_factor,
            retry_memory_max=retry_memory_max,
            priority=priority,
            max_cost=max_cost,
        )

        def wrap(f: Callable[..., Any]) -> Task[..., Any]:
            qual = name or f.__qualname__
            if "<locals>" in qual:
                raise ConfigError(
                    f"task {f.__qualname__!r} is defined inside a function: a machine could not "
                    "import it. Define tasks at module level."
                )
            full = registry.task_name(f.__module__, qual)
            try:
                registry.check_task_name(full)
            except WorkerError as exc:  # the worker's refusal, said at registration
                raise ConfigError(str(exc)) from None
            t = Task(self, f, full, opts)
            registry.register(full, t)
            return t

        return wrap(fn) if fn is not None else wrap

    # ------------------------------------------------------------------ pools
    def pool(
        self,
        name: str,
        *,
        max_machines: int | None = None,
        idle_timeout: float | None = None,
        min_machines: int = 0,
        cpus: int = 1,
        memory_mb: int = 256,
        boot_timeout: float | None = None,
        heartbeat: float | None = None,
        standby: int = 0,
    ) -> Pool:
        """Declare a pool of machines: ``app.pool("builds", max_machines=2, cpus=4, ...)``.

        Settings left out come from the environment (``BALLOONS_MAX_MACHINES``,
        ``BALLOONS_IDLE_TIMEOUT``, ``BALLOONS_BOOT_TIMEOUT``, ``BALLOONS_HEARTBEAT``).
        ``standby=N`` keeps up to N machines stopped when they idle out, for later launches
        to start rather than create (a backend with ``start``: ``FlyBackend``).
        """
        from .config import pool_defaults

        d = pool_defaults(self.settings.env)
        p = Pool(
            name,
            max_machines=max_machines if max_machines is not None else int(d["max_machines"]),
            idle_timeout=idle_timeout if idle_timeout is not None else d["idle_timeout"],
            min_machines=min_machines,
            cpus=cpus,
            memory_mb=memory_mb,
            boot_timeout=boot_timeout if boot_timeout is not None else d["boot_timeout"],
            heartbeat=heartbeat if heartbeat is not None else d["heartbeat"],
            standby=standby,
        )
        if p.standby and not _can_start(self._backend_obj, self.settings.backend):
            what = (
                type(self._backend_obj).__name__
                if self._backend_obj is not None
                else f"the {self.settings.backend!r} backend"
            )
            raise ConfigError(
                f"pool {name!r}: standby={standby} needs a backend that can start a stopped "
                f"machine again (FlyBackend), but {what} has no start(): its machines are "
                "gone when they exit. Use standby=0 with it"
            )
        self._pools[name] = p
        return p

    def get_pool(self, name: str) -> Pool:
        """The pool declared under ``name``, or one with the default settings."""
        found = self._pools.get(name)
        return found if found is not None else self.pool(name)

    @property
    def pools(self) -> dict[str, Pool]:
        return dict(self._pools)

    # ----------------------------------------------------------------- wiring
    @property
    def store(self) -> Store:
        """The Redis store, connecting (and starting the embedded server) on first use."""
        if self._store is None:
            from . import embedded
            from .store import Store

            url = self.settings.redis_url or embedded.ensure(
                self.settings.state_dir, namespace=self.settings.namespace
            )
            self._store = Store(url, self.settings.namespace, key=self._signing_key)
        return self._store

    @property
    def secret(self) -> str:
        if self._secret is None:
            if self.settings.secret:
                self._secret = self.settings.secret
            elif self.settings.embedded:
                from . import embedded
                from .config import check_secret

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

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            backend = self._backend_obj
            if backend is None:
                backend = _make_backend(self.settings.backend, self.settings.env)
            from .backends.base import BackendContext

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
            from .cost import PriceTable

            env = self.settings.env
            self._prices = PriceTable.load(
                self._prices_path or env.get("BALLOONS_PRICES") or None,
                cpu_kind=env.get("BALLOONS_FLY_CPU_KIND") or "shared",
                region=env.get("BALLOONS_FLY_REGION") or env.get("FLY_REGION") or None,
            )
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
        import dataclasses

        from .cost import report
        from .listing import scan
        from .store import attempts_from

        store = self.store
        names = list(pools) if pools is not None else store.pools()
        if jobs is None:
            fields = ("status", "payload", "created", "started", "finished")
            jobs = list(scan(store, names, limit, 500, fields))
        ids = [i.id for i in jobs]
        # What a first attempt's record may still be in (see store.attempts_from).
        firsts = store.fields(ids, ("attempt", "slot", "created", "need"))
        priced = []
        for info, rec, raw in zip(jobs, firsts, store.attempts_of(ids), strict=True):
            tries = attempts_from(info.id, rec, raw)
            priced.append((dataclasses.replace(info, attempts=tries), (1, 256)))
        return report(priced, store.usage(names), self.prices, time.time())

    def supervisor(self, **options: Any) -> Supervisor:
        """A :class:`~balloons.supervisor.Supervisor` for this app (not started)."""
        from .supervisor import Supervisor

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
        from .listing import MAX_PER_PAGE

        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PER_PAGE:
            raise ConfigError(f"limit must be an integer from 1 to {MAX_PER_PAGE}, got {limit!r}")
        if pool is not None and (not isinstance(pool, str) or not POOL_RE.match(pool)):
            raise ConfigError(f"{pool!r} is not a pool name")
        return self.store.recent(limit, pool)

    def retry(self, job_id: str) -> Job[Any]:
        """Submit a new job running the same task with the same options and arguments.

        The stored arguments are reused as they are (never decoded), after their signature is
        checked, so a record altered in Redis is refused rather than signed anew.
        """
        old = job_keys(self.settings.namespace, job_id)
        rec = self.store.record(old)
        if not rec:
            raise JobNotFound(job_id)
        payload, data = rec.get("payload", b""), rec.get("args", b"")
        if not verify(self.secret.encode(), payload, data, rec.get("sig", b"")):
            raise StoreError(
                f"the record of job {job_id} does not verify with this app's secret: "
                "refusing to retry it"
            )
        from .store import SubmitRequest

        p = json.loads(payload)
        opts = TaskOptions(
            cpus=p["cpus"], memory_mb=p["memory_mb"], timeout=p["timeout"], pool=old.pool.pool
        )
        now = time.time()
        new = JobKeys.of(self.settings.namespace, f"{opts.pool}.{ulid(now)}")
        fields = {"id": new.job_id, "created": now, "ttl": self.settings.record_ttl}
        body = json.dumps({**p, **fields}, separators=(",", ":")).encode()
        req = SubmitRequest(
            payload=body,
            args=data,
            sig=sign(self.secret.encode(), body, data),
            created=now,
            ttl=self.settings.record_ttl,
            pool_config=self.get_pool(opts.pool).redis_config(),
            due="",
            priority=0,
            cpus=int(p["cpus"]),
            memory_mb=int(p["memory_mb"]),
            key_digest="",
        )
        job, launch = self._after_submit(new, opts, self.store.submit(new, req))
        if launch is not None:
            self._launch(launch)
        return job

    def decode_result(self, job_id: str, rec: Mapping[str, bytes]) -> Any:
        """The result in a job's record (``result``, ``rsig``, ``attempt``), decoded with this
        app's serializer once its tag verifies with the app's secret for that job and attempt
        (JSON, the safe default, is read too). Nothing in the record chooses the decoder.

        Raises :class:`JobFailed` (reason ``result_invalid``) when the tag does not verify,
        :class:`SerializationError` when the result was encoded with another serializer than
        this app's or does not decode, and :class:`ConfigError` when no secret is set."""
        ser = self.serializer
        names = dict.fromkeys((ser.name, "json", "pickle"))
        found = result_serializer(self.secret.encode(), job_id, rec, names)
        if found is None:
            raise JobFailed(
                job_id,
                "FAILED",
                Reason.RESULT_INVALID.value,
                "",
                f"the result stored for job {job_id} does not verify with this app's secret "
                "(altered in Redis, copied from another job or attempt, or written with another "
                "secret): it was not decoded",
            )
        if found != ser.name and found != "json":
            raise SerializationError(
                f"the result of job {job_id} was encoded with the {found} serializer, but this "
                f"app decodes with {ser.name}: read it with App(serializer={found!r})"
            )
        decoder = ser if found == ser.name else JSONSerializer()
        try:
            return decoder.loads(rec.get("result") or b"")
        except Exception as exc:
            raise SerializationError(f"cannot decode the result of job {job_id}: {exc}") from exc

    def close(self) -> None:
        """Make the launches still waiting for a rate limit, then close the connections."""
        if self._launcher is not None:
            self._launcher.drain()
        if self._store is not None:
            self._store.close()

    # ----------------------------------------------------------------- submit
    def _prepare(
        self, task: Task[Any, Any], opts: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[JobKeys, bytes, bytes, str, float]:
        data = dumps_call(self.serializer, args, kwargs)
        if len(data) > self.settings.max_arg_bytes:
            raise SerializationError(
                f"the arguments of {task.name} are {len(data):,} bytes serialized, over the "
                f"limit of {self.settings.max_arg_bytes:,} (max_arg_bytes): pass a reference "
                "(a URL, a key) instead of the data"
            )
        pool = self.get_pool(opts.pool)
        now = time.time()
        jk = JobKeys.fresh(self.settings.namespace, opts.pool, ulid(now))
        job_id = jk.job_id
        main_path = None
        if task.name.startswith("__main__:"):
            main = sys.modules.get("__main__")
            main_file = getattr(main, "__file__", None)
            if not main_file:
                raise ConfigError(
                    f"task {task.name} lives in an interactive __main__ with no file: "
                    "define it in a module or a script file"
                )
            main_path = os.path.abspath(main_file)
        head = self._payload_head(task, opts, pool, main_path)
        payload = f'{head},"id":"{job_id}","created":{now!r}}}'.encode()
        sig = sign(self.secret.encode(), payload, data)
        return jk, payload, data, sig, now

    def _payload_head(
        self, task: Task[Any, Any], opts: TaskOptions, pool: Pool, main_path: str | None
    ) -> str:
        """The job payload's JSON without its closing brace and the two fields that change
        with every job (``id``, ``created``): the same for every call of one task with one set
        of options, so it is encoded once (the submit path is hot)."""
        key = (id(task), id(opts))
        hit = self._heads.get(key)
        if (
            hit is not None
            and hit[0] is task
            and hit[1] is opts
            and hit[2] == (pool.cpus, pool.memory_mb, main_path)
        ):
            return hit[3]
        head = _COMPACT.encode(
            {
                "v": 1,
                "task": task.name,
                "main": main_path,
                "ser": self.serializer.name,
                "timeout": opts.timeout,
                "memory_mb": opts.memory_mb or pool.memory_mb,
                "cpus": opts.cpus or pool.cpus,
                "retries": opts.retries,
                "backoff": opts.retry_backoff,
                "backoff_max": opts.retry_backoff_max,
                "mem_factor": opts.retry_memory_factor,
                "mem_max": opts.retry_memory_max,
                # How long the record may be run: a worker refuses it later (a replay).
                "ttl": self.settings.record_ttl,
                **self._cost_cap(opts, pool),
            }
        )[:-1]
        if len(self._heads) >= 256:  # per-call options() make new options objects
            self._heads.clear()
        self._heads[key] = (task, opts, (pool.cpus, pool.memory_mb, main_path), head)
        return head

    def _cost_cap(self, opts: TaskOptions, pool: Pool) -> dict[str, float]:
        """The payload fields a worker needs to enforce ``max_cost``: the cap and the price
        per second of the job's machine, so the machine needs no price table."""
        if opts.max_cost is None:
            return {}
        rate = self.prices.per_second(opts.cpus or pool.cpus, opts.memory_mb or pool.memory_mb)
        return {"max_cost": float(opts.max_cost), "usd_per_s": rate}

    def _spec(
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
        env = {"BALLOONS_JOB": f"{job_id}/{attempt}"}
        if keep:
            env["BALLOONS_STANDBY"] = "1"
        for name in self.settings.env_allowlist:
            if name in self.settings.env:
                env[name] = self.settings.env[name]
        return _machine_spec()(
            job_id=job_id if attempt else "",
            attempt=attempt,
            pool=pool,
            name=f"balloons-{ulid_}-{attempt}",
            cpus=cpus,
            memory_mb=memory_mb,
            timeout=timeout,
            env=env,
            metadata={
                "balloons_job": job_id if attempt else "",
                "balloons_attempt": str(attempt),
                "balloons_pool": pool,
                "balloons_slot": f"{ulid_}-{attempt}",
            },
            cwd=cwd,
            python_path=_import_path(cwd),
            keep=keep,
        )

    def launch_slot(
        self,
        pool: str,
        ulid_: str,
        attempt: int,
        cpus: int,
        memory_mb: int,
        timeout: float,
        keep: bool = False,
        spec: MachineSpec | None = None,
    ) -> bool:
        """Launch the machine of a slot the store granted (``spec``: its machine, when the
        caller already built it). On failure the slot is freed and the job's attempt fails
        with reason ``launch_failed``; returns whether it launched. ``keep``: a
        standby-capable machine (see :meth:`launch_standby`)."""
        events = _events()
        began = time.monotonic()
        job = f"{pool}.{ulid_}" if attempt else "-"
        try:
            # The machine's id reaches the record when its worker claims the attempt (or when
            # the local fork server reports its exit), so the happy path costs no extra write.
            if spec is None:
                spec = self._spec(pool, ulid_, attempt, cpus, memory_mb, timeout, keep)
            info = self.backend.launch(spec)
        except Exception as exc:
            import logging

            msg = f"could not launch a machine: {exc}"
            events.emit(
                "launch_failed",
                logging.ERROR,
                job=job,
                attempt=attempt,
                error=msg,
                launch_s=time.monotonic() - began,
            )
            self.store.lost(
                PoolKeys(self.settings.namespace, pool),
                f"{ulid_}-{attempt}",
                ulid_ if attempt else "",
                attempt,
                Reason.LAUNCH_FAILED.value,
                msg,
                ("", ""),
            )
            return False
        if events.enabled():
            events.emit(
                "launched",
                job=job,
                attempt=attempt,
                pool=pool,
                machine=info.id if info is not None else "-",
                size=f"{cpus}x{memory_mb}MB",
                launch_s=time.monotonic() - began,
            )
        if info is not None and info.id and not attempt:
            # A machine with no job of its own: its slot names it, so that a check of its boot
            # asks about this machine (a waiter's job may count on it).
            self.store.launched(PoolKeys(self.settings.namespace, pool), f"{ulid_}-0", info.id)
        if info is not None and info.detail.get("note") and attempt:
            # What the backend had to do (regions that refused, a lost answer recovered).
            self.store.note(
                PoolKeys(self.settings.namespace, pool), ulid_, attempt, info.detail["note"]
            )
        return True

    def _launch(self, launch: Launch, spec: MachineSpec | None = None) -> None:
        """Launch a granted slot's machine now; or from the app's launcher thread (in order)
        when the backend's launch is a remote call (``launches_in_background``: Fly's create,
        so that submit returns at once), or when the backend would make this caller wait for
        a rate limit (``launch_delay``) or launches already wait. A job whose machine has to
        wait goes back to the queue (``REQUEUE``): the pool's first free machine takes it, and
        the slot's machine, launched with no job of its own, joins the pool. In a pool with
        standby machines, see :meth:`launch_standby`."""
        if launch[6]:
            if _in_background(self):
                self._later(launch)  # the launcher's step starts or creates the machine
            else:
                self.launch_standby(launch, background=True)
            return
        launcher = self._launcher
        if (launcher is None or not launcher.busy()) and _launch_delay(self) <= 0:
            if not _in_background(self):
                self.launch_slot(*launch, spec=spec)
                return
            # Nothing waits: the launch keeps its job, and is made from the launcher thread.
        else:
            pool, ulid_, attempt, cpus, memory_mb, _timeout, _keep = launch
            fresh = ulid()
            pk = PoolKeys(self.settings.namespace, pool)
            if attempt and self.store.unpin(pk, f"{ulid_}-{attempt}", ulid_, fresh):
                launch = (pool, fresh, 0, cpus, memory_mb, DEFAULT_TIMEOUT, False)
        self._later(launch)

    def _later(self, launch: Launch) -> None:
        launcher = self._launcher
        if launcher is None:
            from .launcher import Launcher

            launcher = self._launcher = Launcher(self._launch_later, workers=LAUNCH_WORKERS)
        launcher.put(launch)

    def _launch_later(self, launch: Launch) -> None:
        """The launcher's step: wait out the rate limit, renew the slot's boot lease (it may
        have waited a while), then launch, unless the slot was reclaimed, claimed or given back
        meanwhile (a jobless slot when nothing is queued any more). In a pool with standby
        machines, a machine stopped meanwhile is started rather than one created."""
        pool, ulid_, attempt = launch[:3]
        pk = PoolKeys(self.settings.namespace, pool)
        if launch[6]:
            # A machine stopped since this launch was queued is started rather than created.
            if not self.store.booting(pk, f"{ulid_}-{attempt}"):
                return
            got = self._start_standby(launch)
            if not isinstance(got, tuple):
                return
            launch = got
            pool, ulid_, attempt = launch[:3]
        # Creates one at a time (the launcher's other threads start standby machines, each
        # limited on its own): each waits its turn at the app's create limit, then checks that
        # its slot still wants a machine, so no create is made for work already taken.
        with self._create_lock:
            delay = _launch_delay(self)
            while delay > 0:
                time.sleep(delay)
                delay = _launch_delay(self)
            if self.store.booting(pk, f"{ulid_}-{attempt}"):
                self.launch_slot(*launch)

    def launch_standby(self, launch: Launch, *, background: bool) -> bool:
        """A launch in a pool with standby machines (``PICK_MACHINE``): the slot's job goes back to
        the queue, and the slot becomes a machine's own (no job, attempt 0): a stopped machine
        of the pool's standby set, started (one ``start``, rate-limited per machine, so it
        never waits for the app's create limit), else a new standby-capable machine created
        as any other (from the launcher thread when the create would wait, with
        ``background``). A start that fails (the machine is gone, or refused) drops that
        machine and creates one instead. Returns whether a machine is on its way."""
        got = self._start_standby(launch)
        if not isinstance(got, tuple):
            return got
        launcher = self._launcher
        if background and ((launcher is not None and launcher.busy()) or _launch_delay(self) > 0):
            self._later(got)
            return True
        return self.launch_slot(*got)

    def _start_standby(self, launch: Launch) -> bool | Launch:
        """``PICK_MACHINE`` and start the stopped machine it gave: True when one was started, False
        when there is nothing to launch, else the create to make in its place."""
        from . import events

        pool, ulid_, attempt = launch[:3]
        pk = PoolKeys(self.settings.namespace, pool)
        got = self.store.assign(pk, f"{ulid_}-{attempt}", ulid())
        if got is None:
            return False
        if got[0] == "create":
            return (pool, got[1], 0, int(got[2]), int(got[3]), DEFAULT_TIMEOUT, True)
        machine, own, cpus, memory_mb = got[1], got[2], int(got[3]), int(got[4])
        began = time.monotonic()
        try:
            start = getattr(self.backend, "start", None)
            if start is None:
                raise BackendError(f"the {self.backend.name} backend cannot start a machine")
            start(machine)
        except Exception as exc:
            events.emit(
                "start_failed",
                30,  # logging.WARNING, without importing logging on this path
                pool=pool,
                machine=machine,
                error=f"could not start standby machine {machine}: {exc}",
            )
            fresh = ulid()
            if not self.store.reslot(pk, f"{own}-0", machine, fresh):
                return False  # the machine did start after all, and took its slot
            if getattr(exc, "status", None) != 404:
                import contextlib

                with contextlib.suppress(Exception):
                    self.backend.destroy(machine)
            return (pool, fresh, 0, cpus, memory_mb, DEFAULT_TIMEOUT, True)
        events.emit(
            "launched",
            job="-",
            attempt=0,
            pool=pool,
            machine=machine,
            size=f"{cpus}x{memory_mb}MB",
            started=1,
            launch_s=time.monotonic() - began,
        )
        return True

    def _submit_args(
        self, task: Task[Any, R], opts: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[JobKeys, SubmitRequest]:
        extra = {k: kwargs.pop(k) for k in _SUBMIT_KWARGS if k in kwargs} if kwargs else {}
        jk, payload, data, sig, now = self._prepare(task, opts, args, kwargs)
        pool = self.get_pool(opts.pool)
        due = (
            _due(extra.get("_delay"), extra.get("_at"), now, self.settings.record_ttl)
            if extra
            else ""
        )
        key = extra.get("_key")
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigError(f"_key must be a non-empty string, got {key!r}")
        priority = extra.get("_priority", opts.priority)
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or not -1000 <= priority <= 1000
        ):
            raise ConfigError(f"_priority must be an integer in -1000..1000, got {priority!r}")
        req = _submit_request()(
            payload=payload,
            args=data,
            sig=sig,
            created=now,
            ttl=self.settings.record_ttl,
            pool_config=pool.redis_config(),
            due=due,
            priority=priority,
            cpus=opts.cpus or pool.cpus,
            memory_mb=opts.memory_mb or pool.memory_mb,
            key_digest=hashlib.sha256(key.encode()).hexdigest()[:32] if key else "",
        )
        return jk, req

    def _after_submit(
        self, jk: JobKeys, opts: TaskOptions, reply: list[Any]
    ) -> tuple[Job[Any], Launch | None]:
        code = reply[0]
        if code == 2:
            return Job(self, f"{jk.pool.pool}.{_text(reply[1])}"), None
        if code != 1:
            raise StoreError(f"job id {jk.job_id} already exists")
        job: Job[Any] = Job(self, jk.job_id, jk)
        if reply[1] not in (b"launch", "launch"):
            return job, None
        u = _text(reply[3])
        return job, (
            jk.pool.pool,
            u,
            int(reply[4]),
            int(reply[5]),
            int(reply[6]),
            opts.timeout if u == jk.ulid else DEFAULT_TIMEOUT,
            self.get_pool(jk.pool.pool).standby > 0,
        )

    def _submit(
        self, task: Task[Any, R], opts: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job[R]:
        jk, req = self._submit_args(task, opts, args, kwargs)
        reply_of = self.store.submit_start(jk, req)
        try:
            # While Redis places the job: the machine it most likely gets (a new slot for its
            # first attempt), so that only the launch itself is left once the reply is in.
            spec = self._spec(jk.pool.pool, jk.ulid, 1, req.cpus, req.memory_mb, opts.timeout)
        finally:
            reply = reply_of()
        job, launch = self._after_submit(jk, opts, reply)
        _submitted(job, task.name, reply, req.created)
        if launch is not None:
            self._launch(launch, spec if launch[1] == jk.ulid and launch[2] == 1 else None)
        return job

    async def _submit_async(
        self, task: Task[Any, R], opts: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job[R]:
        jk, req = self._submit_args(task, opts, args, kwargs)
        reply = await self.store.submit_async(jk, req)
        job, launch = self._after_submit(jk, opts, reply)
        _submitted(job, task.name, reply, req.created)
        if launch is not None:
            import asyncio

            await asyncio.to_thread(self._launch, launch)
        return job

    def cancel(self, job_id: str, grace: float = 10.0, wait: bool = False) -> bool:
        """Cancel a job: a queued one never starts; a running one is told to stop (its worker
        notices within a heartbeat) and its machine is stopped after ``grace`` seconds if it
        is still on the job (from a daemon thread, or before returning with ``wait``).
        Returns False if the job had already ended."""
        from .config import check_seconds

        check_seconds("grace", grace, 0, MAX_GRACE)
        jk = job_keys(self.settings.namespace, job_id)
        prev, slot, _machine = self.store.cancel(jk)
        if prev is None:
            return False
        if prev in ("RUNNING", "STARTING") and slot:
            if wait:
                self._stop_if_still(jk, slot, grace)
            else:
                threading.Thread(
                    target=self._stop_if_still, args=(jk, slot, grace), daemon=True
                ).start()
        return True

    def _stop_if_still(self, jk: JobKeys, slot: str, grace: float) -> None:
        """Wait up to ``grace`` for the worker to leave the cancelled job, then stop its
        machine if it has not."""
        import contextlib

        deadline = time.monotonic() + grace
        with contextlib.suppress(Exception):
            while True:
                info = self.store.slot_info(jk.pool, slot)
                if not info or info.get("job") != jk.ulid:
                    return
                if time.monotonic() >= deadline:
                    if info.get("machine"):
                        self.backend.stop(str(info["machine"]))
                    return
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


_SUBMIT_KWARGS = ("_delay", "_at", "_key", "_priority")
#: Longest grace a cancel gives a running job before its machine is stopped.
MAX_GRACE = 24 * 3600.0
#: Threads of an app's launcher: standby machines are started up to this many at once (Fly
#: limits starts per machine), while creates are made one at a time.
LAUNCH_WORKERS = 4


def _submitted(job: Job[Any], task: str, reply: list[Any], created: float) -> None:
    events = _events()
    if events.enabled():
        placed = "existing" if reply[0] == 2 else _text(reply[1])
        submit_s = time.time() - created
        events.emit("submitted", job=job.id, task=task, placed=placed, submit_s=submit_s)


def _due(delay: Any, at: Any, now: float, ttl: int) -> str:
    """SUBMIT's due time: ``''`` (now), ``+SECONDS`` (``_delay``, counted from the Redis
    server's clock) or ``_at``'s epoch time (the server runs it at once when that has passed).
    It must fall due within the record TTL, which its record would not outlive."""
    if delay is not None and at is not None:
        raise ConfigError("pass _delay or _at, not both")
    if delay is not None:
        from .config import seconds_in

        if not seconds_in(delay, 0, ttl):
            raise ConfigError(
                f"_delay must be a number of seconds from 0 to the record TTL ({ttl} s, "
                f"record_ttl), got {delay!r}"
            )
        return f"+{float(delay)!r}" if delay > 0 else ""
    if at is not None:
        import datetime as dt

        if not isinstance(at, dt.datetime):
            raise ConfigError(f"_at must be a datetime, got {at!r}")
        if at.tzinfo is None:
            raise ConfigError(f"_at must be timezone-aware (for example UTC), got {at!r}")
        ts = at.timestamp()
        if ts > now + ttl:
            raise ConfigError(
                f"_at must be within the record TTL ({ttl} s from now, record_ttl), got {at!r}"
            )
        return repr(ts)
    return ""


def _in_background(app: App) -> bool:
    """Whether the backend's launches are made from the launcher thread (an optional
    attribute: a remote call, as Fly's create)."""
    try:
        return bool(getattr(app.backend, "launches_in_background", False))
    except Exception:  # a backend that cannot even be set up: launch_slot records why
        return False


def _launch_delay(app: App) -> float:
    """Seconds the backend's next launch would wait for a rate limit (an optional method)."""
    try:
        delay = getattr(app.backend, "launch_delay", None)
        return float(delay()) if delay is not None else 0.0
    except Exception:  # a backend that cannot even be set up: launch_slot records why
        return 0.0


def _can_start(backend: object, name: str) -> bool:
    """Whether the app's backend can start a stopped machine again (standby machines)."""
    if backend is not None:
        return callable(getattr(backend, "start", None))
    return name == "fly"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@functools.cache
def _events() -> ModuleType:
    """Lifecycle events (they import logging, which a machine's start-up path skips): loaded
    on first use, then one call away on the submit path rather than an import statement."""
    from . import events

    return events


@functools.cache
def _submit_request() -> type[SubmitRequest]:
    """The store (redis-py) is not on a machine's start-up path: imported on first submit."""
    from .store import SubmitRequest

    return SubmitRequest


@functools.cache
def _machine_spec() -> type[MachineSpec]:
    """The records (dataclasses) are not on a machine's start-up path: imported on first launch."""
    from .status import MachineSpec

    return MachineSpec


def _make_backend(name: str, env: Any) -> Backend:
    if name == "local":
        from .backends.local import LocalBackend

        return LocalBackend()
    if name == "fly":
        from .backends.fly import FlyBackend

        return FlyBackend()  # its settings are read from the app's environment at bind
    raise ConfigError(f"unknown backend {name!r}: expected 'local' or 'fly'")


_IMPORT_PATHS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _import_path(cwd: str) -> tuple[str, ...]:
    """This process's import path minus the interpreter's own entries, for local machines
    (``cwd``: this process's working directory). Cached per value of ``sys.path``, so entries
    added later still reach machines."""
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
    return found
