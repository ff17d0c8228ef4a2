"""``App``: configuration, the task registry and the submit path.

``App()`` with no arguments uses the embedded default (a private Valkey server and local
machines). Everything else is a constructor argument or an environment variable, with
precedence argument > environment > default (see :mod:`balloons.config`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import registry
from .config import Settings
from .errors import ConfigError, SerializationError
from .ids import ulid
from .job import Job
from .keys import JobKeys
from .resp import mask_url
from .serialize import Serializer, dumps_call, get_serializer
from .signing import sign
from .states import Reason
from .task import DEFAULT_CPUS, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, Task, TaskOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path
    from typing import ParamSpec

    from .backends.base import Backend
    from .status import JobInfo, MachineSpec
    from .store import Store

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
        cpus: int = DEFAULT_CPUS,
        memory_mb: int = DEFAULT_MEMORY_MB,
        timeout: float = DEFAULT_TIMEOUT,
        pool: str = "default",
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        cpus: int = DEFAULT_CPUS,
        memory_mb: int = DEFAULT_MEMORY_MB,
        timeout: float = DEFAULT_TIMEOUT,
        pool: str = "default",
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(memory_mb=512, ...)``."""
        opts = TaskOptions(cpus=cpus, memory_mb=memory_mb, timeout=timeout, pool=pool)

        def wrap(f: Callable[..., Any]) -> Task[..., Any]:
            qual = name or f.__qualname__
            if "<locals>" in qual:
                raise ConfigError(
                    f"task {f.__qualname__!r} is defined inside a function: a machine could not "
                    "import it. Define tasks at module level."
                )
            full = registry.task_name(f.__module__, qual)
            registry.check_task_name(full)
            t = Task(self, f, full, opts)
            registry.register(full, t)
            return t

        return wrap(fn) if fn is not None else wrap

    # ----------------------------------------------------------------- wiring
    @property
    def store(self) -> Store:
        """The Redis store, connecting (and starting the embedded server) on first use."""
        if self._store is None:
            from . import embedded
            from .store import Store

            url = self.settings.redis_url or embedded.ensure(self.settings.state_dir)
            self._store = Store(url, self.settings.namespace)
        return self._store

    @property
    def secret(self) -> str:
        if self._secret is None:
            if self.settings.secret:
                self._secret = self.settings.secret
            elif self.settings.embedded:
                from . import embedded

                self._secret = embedded.load_secret(self.settings.state_dir)
            else:
                raise ConfigError(
                    "a signing key is required with an external Redis "
                    f"({mask_url(self.settings.redis_url or '')}): set BALLOONS_SECRET or "
                    "App(secret=...) to the same value for the app and its workers"
                )
        return self._secret

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

    def job(self, job_id: str) -> Job[Any]:
        """The handle of an existing job, from its id (``JobNotFound`` on use if unknown)."""
        return Job(self, job_id)

    def jobs(self, limit: int = 50, pool: str | None = None) -> list[JobInfo]:
        """The newest jobs, newest first."""
        return self.store.recent(limit, pool)

    def decode_result(self, job_id: str, data: bytes, payload: bytes) -> Any:
        try:
            ser_name = json.loads(payload).get("ser", "json") if payload else "json"
        except ValueError:
            ser_name = "json"
        ser = self.serializer if self.serializer.name == ser_name else get_serializer(ser_name)
        try:
            return ser.loads(data)
        except Exception as exc:
            raise SerializationError(f"cannot decode the result of job {job_id}: {exc}") from exc

    def close(self) -> None:
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
        payload = _COMPACT.encode(
            {
                "v": 1,
                "id": job_id,
                "task": task.name,
                "main": main_path,
                "ser": self.serializer.name,
                "timeout": opts.timeout,
                "memory_mb": opts.memory_mb,
                "cpus": opts.cpus,
                "created": now,
            }
        ).encode()
        sig = sign(self.secret.encode(), payload, data)
        return jk, payload, data, sig, now

    def _spec(self, jk: JobKeys, opts: TaskOptions, attempt: int) -> MachineSpec:
        env = {"BALLOONS_JOB": f"{jk.job_id}/{attempt}"}
        for name in self.settings.env_allowlist:
            if name in self.settings.env:
                env[name] = self.settings.env[name]
        return _machine_spec()(
            job_id=jk.job_id,
            attempt=attempt,
            pool=opts.pool,
            name=f"balloons-{jk.ulid}-{attempt}",
            cpus=opts.cpus,
            memory_mb=opts.memory_mb,
            timeout=opts.timeout,
            env=env,
            metadata={
                "balloons_job": jk.job_id,
                "balloons_attempt": str(attempt),
                "balloons_pool": opts.pool,
            },
            cwd=os.getcwd(),
            python_path=_import_path(),
        )

    def _launch(self, jk: JobKeys, opts: TaskOptions, attempt: int) -> None:
        store = self.store
        try:
            # The machine's id reaches the record when its worker claims the attempt (or when
            # the local fork server reports its exit), so the happy path costs no extra write.
            self.backend.launch(self._spec(jk, opts, attempt))
        except Exception as exc:
            import logging

            msg = f"could not launch a machine: {exc}"
            logging.getLogger("balloons").error("job %s launch failed: %s", jk.job_id, msg)
            store.fail(jk, attempt, Reason.LAUNCH_FAILED.value, msg)

    def _submit(
        self, task: Task[Any, R], opts: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job[R]:
        jk, payload, data, sig, now = self._prepare(task, opts, args, kwargs)
        self.store.submit(jk, payload, data, sig, now, self.settings.record_ttl)
        self._launch(jk, opts, 1)
        return Job(self, jk.job_id, jk)

    async def _submit_async(
        self, task: Task[Any, R], opts: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job[R]:
        jk, payload, data, sig, now = self._prepare(task, opts, args, kwargs)
        await self.store.submit_async(jk, payload, data, sig, now, self.settings.record_ttl)
        import asyncio

        await asyncio.to_thread(self._launch, jk, opts, 1)
        return Job(self, jk.job_id)


@functools.cache
def _machine_spec() -> type[MachineSpec]:
    """The records (dataclasses) are not on a machine's start-up path: imported on first launch."""
    from .status import MachineSpec

    return MachineSpec


def _make_backend(name: str, env: Any) -> Backend:
    if name == "local":
        from .backends.local import LocalBackend

        return LocalBackend()
    raise ConfigError(f"backend {name!r} is not available in this version (expected 'local')")


_IMPORT_PATHS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _import_path() -> tuple[str, ...]:
    """This process's import path minus the interpreter's own entries, for local machines.
    Cached per value of ``sys.path``, so entries added later still reach machines."""
    key = (os.getcwd(), *sys.path)
    found = _IMPORT_PATHS.get(key)
    if found is None:
        prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
        out: list[str] = []
        for entry in sys.path:
            path = os.path.abspath(entry or os.getcwd())
            if not path.startswith(prefixes) and path not in out:
                out.append(path)
        found = _IMPORT_PATHS[key] = tuple(out)
    return found
