"""``Task``: a registered function that can run locally or be submitted as a job."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .errors import ConfigError
from .frozen import Frozen
from .keys import POOL_RE

if TYPE_CHECKING:
    from collections.abc import Callable

    from .app import App
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_CPUS = 1
DEFAULT_MEMORY_MB = 256
DEFAULT_TIMEOUT = 600.0  # seconds a task may run before its attempt fails with reason timeout


class TaskOptions(Frozen):
    """How a task's machine is sized and how long it may run. Per-call: ``task.options(...)``."""

    __slots__ = ("cpus", "memory_mb", "pool", "timeout")
    __match_args__ = ("cpus", "memory_mb", "timeout", "pool")
    cpus: int
    memory_mb: int
    timeout: float
    pool: str

    def __init__(
        self,
        cpus: int = DEFAULT_CPUS,
        memory_mb: int = DEFAULT_MEMORY_MB,
        timeout: float = DEFAULT_TIMEOUT,
        pool: str = "default",
    ) -> None:
        if not isinstance(cpus, int) or cpus < 1:
            raise ConfigError(f"cpus must be a positive integer, got {cpus!r}")
        if not isinstance(memory_mb, int) or memory_mb < 64:
            raise ConfigError(f"memory_mb must be an integer of at least 64, got {memory_mb!r}")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(pool, str) or not POOL_RE.match(pool):
            raise ConfigError(
                f"pool name {pool!r} must be 1-40 of a-z, 0-9, '_' or '-', starting with a "
                "letter or digit"
            )
        self._set(cpus, memory_mb, timeout, pool)


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
