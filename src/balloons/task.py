"""``Task``: a registered function that can run locally or be submitted as a job."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:
    from .app import App
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_CPUS = 1
DEFAULT_MEMORY_MB = 256
DEFAULT_TIMEOUT = 600.0  # seconds a task may run before its attempt fails with reason timeout


@dataclass(frozen=True)
class TaskOptions:
    """How a task's machine is sized and how long it may run. Per-call: ``task.options(...)``."""

    cpus: int | None = None  # None: the pool's
    memory_mb: int | None = None  # None: the pool's
    timeout: float = DEFAULT_TIMEOUT
    pool: str = "default"
    retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))
    retry_memory_factor: float = 1.0
    retry_memory_max: int | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        from .keys import POOL_RE

        if self.cpus is not None and (not isinstance(self.cpus, int) or self.cpus < 1):
            raise ConfigError(f"cpus must be a positive integer, got {self.cpus!r}")
        if self.memory_mb is not None and (
            not isinstance(self.memory_mb, int) or self.memory_mb < 64
        ):
            raise ConfigError(
                f"memory_mb must be an integer of at least 64, got {self.memory_mb!r}"
            )
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {self.retries!r}")
        for what, value in (
            ("retry_backoff", self.retry_backoff),
            ("retry_backoff_max", self.retry_backoff_max),
        ):
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{what} must be a number of seconds >= 0, got {value!r}")
        if not isinstance(self.retry_memory_factor, (int, float)) or self.retry_memory_factor < 1:
            raise ConfigError(
                f"retry_memory_factor must be a number >= 1, got {self.retry_memory_factor!r}"
            )
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in self.retry_on
        ):
            raise ConfigError(
                f"retry_on must be a tuple of exception classes, got {self.retry_on!r}"
            )
        if not isinstance(self.priority, int) or not -1000 <= self.priority <= 1000:
            raise ConfigError(f"priority must be an integer in -1000..1000, got {self.priority!r}")
        if not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if not isinstance(self.pool, str) or not POOL_RE.match(self.pool):
            raise ConfigError(
                f"pool name {self.pool!r} must be 1-40 of a-z, 0-9, '_' or '-', starting with a "
                "letter or digit"
            )


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
        valid = {f.name for f in dataclasses.fields(TaskOptions)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ConfigError(f"unknown task option(s) {unknown}: expected some of {sorted(valid)}")
        clone: Task[P, R] = Task.__new__(Task)
        clone.__dict__.update(self.__dict__)
        clone.opts = dataclasses.replace(self.opts, **overrides)
        return clone
