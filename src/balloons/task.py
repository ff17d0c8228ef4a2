"""``Task``: a registered function that can run locally or be submitted as a job."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .config import seconds_in
from .errors import ConfigError
from .frozen import Frozen
from .keys import POOL_RE
from .untrusted import MAX_CPUS, MAX_MEMORY_MB

if TYPE_CHECKING:
    from collections.abc import Callable

    from .app import App
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT = 600.0  # seconds a task may run before its attempt fails with reason timeout
#: Bounds of the options (NaN and infinity are refused too).
MAX_TIMEOUT = 1e9
MAX_RETRIES = 10_000
MAX_MEMORY_FACTOR = 64.0
MAX_COST = 1e6


class TaskOptions(Frozen):
    """How a task's machine is sized, how long it may run and how it retries. Per-call:
    ``task.options(...)``. ``cpus`` and ``memory_mb`` of ``None`` mean the pool's."""

    __slots__ = (
        "cpus",
        "max_cost",
        "memory_mb",
        "pool",
        "priority",
        "retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_memory_factor",
        "retry_memory_max",
        "retry_on",
        "timeout",
    )
    __match_args__ = (
        "cpus",
        "memory_mb",
        "timeout",
        "pool",
        "retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_on",
        "retry_memory_factor",
        "retry_memory_max",
        "priority",
        "max_cost",
    )
    cpus: int | None
    memory_mb: int | None
    timeout: float
    pool: str
    retries: int
    retry_backoff: float
    retry_backoff_max: float
    retry_on: tuple[type[BaseException], ...]
    retry_memory_factor: float
    retry_memory_max: int | None
    priority: int
    max_cost: float | None

    def __init__(
        self,
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
    ) -> None:
        if cpus is not None and not _whole(cpus, 1, MAX_CPUS):
            raise ConfigError(f"cpus must be an integer from 1 to {MAX_CPUS}, got {cpus!r}")
        if memory_mb is not None and not _whole(memory_mb, 64, MAX_MEMORY_MB):
            raise ConfigError(
                f"memory_mb must be an integer from 64 to {MAX_MEMORY_MB}, got {memory_mb!r}"
            )
        if not seconds_in(timeout, 0, MAX_TIMEOUT) or not timeout:
            raise ConfigError(
                f"timeout must be a positive number of seconds (at most {MAX_TIMEOUT:g}), "
                f"got {timeout!r}"
            )
        if not isinstance(pool, str) or not POOL_RE.match(pool):
            raise ConfigError(
                f"pool name {pool!r} must be 1-40 of a-z, 0-9, '_' or '-', starting with a "
                "letter or digit"
            )
        if not _whole(retries, 0, MAX_RETRIES):
            raise ConfigError(
                f"retries must be an integer from 0 to {MAX_RETRIES}, got {retries!r}"
            )
        for what, value in (
            ("retry_backoff", retry_backoff),
            ("retry_backoff_max", retry_backoff_max),
        ):
            if not seconds_in(value, 0, MAX_TIMEOUT):
                raise ConfigError(
                    f"{what} must be a number of seconds from 0 to {MAX_TIMEOUT:g}, got {value!r}"
                )
        if not seconds_in(retry_memory_factor, 1, MAX_MEMORY_FACTOR):
            raise ConfigError(
                f"retry_memory_factor must be a number from 1 to {MAX_MEMORY_FACTOR:g}, "
                f"got {retry_memory_factor!r}"
            )
        if retry_memory_max is not None and not _whole(retry_memory_max, 64, MAX_MEMORY_MB):
            raise ConfigError(
                f"retry_memory_max must be an integer from 64 to {MAX_MEMORY_MB}, "
                f"got {retry_memory_max!r}"
            )
        if not isinstance(retry_on, tuple) or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in retry_on
        ):
            raise ConfigError(f"retry_on must be a tuple of exception classes, got {retry_on!r}")
        if not _whole(priority, -1000, 1000):
            raise ConfigError(f"priority must be an integer in -1000..1000, got {priority!r}")
        if max_cost is not None and (not seconds_in(max_cost, 0, MAX_COST) or not max_cost):
            raise ConfigError(
                f"max_cost must be a positive number of US dollars (at most {MAX_COST:g}), "
                f"got {max_cost!r}"
            )
        self._set(
            cpus,
            memory_mb,
            timeout,
            pool,
            retries,
            retry_backoff,
            retry_backoff_max,
            retry_on,
            retry_memory_factor,
            retry_memory_max,
            priority,
            max_cost,
        )


def _whole(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an integer (not a bool) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class Task(Generic[P, R]):
    """A function registered with ``@app.task``.

    Calling it runs the function here; ``submit`` runs it as a job on a fresh machine and
    returns a :class:`~balloons.job.Job` at once.
    """

    def __init__(self, app: App, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.opts = options
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name} pool={self.opts.pool}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Store the job, start a machine for it, and return its handle without waiting."""
        return self.app._submit(self, self.opts, args, kwargs)

    async def submit_async(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await self.app._submit_async(self, self.opts, args, kwargs)

    def options(self, **overrides: Any) -> Task[P, R]:
        """The same task with other machine options for the calls made through it:
        ``task.options(memory_mb=512, timeout=60).submit(...)``."""
        valid = set(TaskOptions.__match_args__)
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ConfigError(f"unknown task option(s) {unknown}: expected some of {sorted(valid)}")
        clone: Task[P, R] = Task.__new__(Task)
        clone.__dict__.update(self.__dict__)
        clone.opts = self.opts.replace(**overrides)
        return clone
