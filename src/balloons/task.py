"""``Task``: a registered function that can run locally or be submitted as a job."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypedDict, TypeVar

from .config import seconds_in
from .errors import ConfigError
from .frozen import Frozen
from .store.keys import POOL_RE
from .untrusted import MAX_CPUS, MAX_MEMORY_MB

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Unpack

    from .dispatch import Dispatcher
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT = 600.0  # seconds a task may run before its attempt fails with reason timeout
#: Bounds of the options (NaN and infinity are refused too).
MAX_TIMEOUT = 1e9
MAX_RETRIES = 10_000
MAX_MEMORY_FACTOR = 64.0
MAX_COST = 1e6
MAX_PRIORITY = 1000


class Options(TypedDict, total=False):
    """The task options, as keyword arguments of ``@app.task(...)``, ``task.options(...)`` and
    :class:`TaskOptions` (their defaults and meaning: :class:`TaskOptions`)."""

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


class TaskOptions(Frozen):
    """How a task's machine is sized, how long it may run and how it retries. Per-call:
    ``task.options(...)``. The fields are those of :class:`Options`, with these defaults:

    * ``cpus``, ``memory_mb``: the machine's size; ``None``: the pool's.
    * ``timeout``: seconds an attempt may run (``DEFAULT_TIMEOUT``).
    * ``pool``: the pool whose machines run it.
    * ``retries`` attempts more, after ``retry_backoff * 2**(n-1)`` seconds (jittered, at most
      ``retry_backoff_max``), when the task raises one of ``retry_on``; an out-of-memory
      attempt retries with ``retry_memory_factor`` times the memory, up to
      ``retry_memory_max``.
    * ``priority``: -1000..1000, higher first among the pool's queued jobs.
    * ``max_cost``: US dollars an attempt's machine may cost before it is stopped.
    """

    cpus: int | None = None
    memory_mb: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    pool: str = "default"
    retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    retry_memory_factor: float = 1.0
    retry_memory_max: int | None = None
    priority: int = 0
    max_cost: float | None = None
    # The record's fields are the options, in their order (checked below: one list).
    __match_args__: tuple[str, ...] = tuple(Options.__annotations__)

    def __init__(self, **options: Unpack[Options]) -> None:
        unknown = options.keys() - _NAMES
        if unknown:
            raise TypeError(f"unknown task option(s) {sorted(unknown)}: expected some of {_SORTED}")
        check_options(options)
        for name, value in options.items():
            object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy rebuild through __init__, which takes the options by name.
        return (_rebuild, (dict(zip(self.__match_args__, self._values(), strict=True)),))


def check_options(o: Options) -> None:
    """Raise :class:`ConfigError` naming the first option in ``o`` out of its range."""
    for name in ("cpus", "memory_mb", "retry_memory_max"):
        value = o.get(name)
        low, high = (1, MAX_CPUS) if name == "cpus" else (64, MAX_MEMORY_MB)
        if value is not None and not _whole(value, low, high):
            raise ConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    timeout = o.get("timeout", DEFAULT_TIMEOUT)
    if not seconds_in(timeout, 0, MAX_TIMEOUT) or not timeout:
        raise ConfigError(
            f"timeout must be a positive number of seconds (at most {MAX_TIMEOUT:g}), "
            f"got {timeout!r}"
        )
    pool = o.get("pool", "default")
    if not isinstance(pool, str) or not POOL_RE.match(pool):
        raise ConfigError(
            f"pool name {pool!r} must be 1-40 of a-z, 0-9, '_' or '-', starting with a "
            "letter or digit"
        )
    retries = o.get("retries", 0)
    if not _whole(retries, 0, MAX_RETRIES):
        raise ConfigError(f"retries must be an integer from 0 to {MAX_RETRIES}, got {retries!r}")
    for name in ("retry_backoff", "retry_backoff_max"):
        value = o.get(name, 0.0)
        if not seconds_in(value, 0, MAX_TIMEOUT):
            raise ConfigError(
                f"{name} must be a number of seconds from 0 to {MAX_TIMEOUT:g}, got {value!r}"
            )
    factor = o.get("retry_memory_factor", 1.0)
    if not seconds_in(factor, 1, MAX_MEMORY_FACTOR):
        raise ConfigError(
            f"retry_memory_factor must be a number from 1 to {MAX_MEMORY_FACTOR:g}, got {factor!r}"
        )
    retry_on = o.get("retry_on", ())
    if not isinstance(retry_on, tuple) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in retry_on
    ):
        raise ConfigError(f"retry_on must be a tuple of exception classes, got {retry_on!r}")
    check_priority("priority", o.get("priority", 0))
    max_cost = o.get("max_cost")
    if max_cost is not None and (not seconds_in(max_cost, 0, MAX_COST) or not max_cost):
        raise ConfigError(
            f"max_cost must be a positive number of US dollars (at most {MAX_COST:g}), "
            f"got {max_cost!r}"
        )


def check_priority(what: str, value: object) -> None:
    """:class:`ConfigError` unless ``value`` is a priority (an integer in -1000..1000)."""
    if not _whole(value, -MAX_PRIORITY, MAX_PRIORITY):
        raise ConfigError(
            f"{what} must be an integer in -{MAX_PRIORITY}..{MAX_PRIORITY}, got {value!r}"
        )


_NAMES = frozenset(TaskOptions.__match_args__)
_SORTED = sorted(_NAMES)
if {n for n in vars(TaskOptions) if not n.startswith("_")} != _NAMES:
    raise TypeError("TaskOptions must give every field of Options a default, and no other")


def _rebuild(options: Options) -> TaskOptions:
    return TaskOptions(**options)


def _whole(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an integer (not a bool) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class Submitter(Protocol):
    """What a task needs of its app: the dispatcher that submits its jobs."""

    @property
    def dispatcher(self) -> Dispatcher: ...


class Task(Generic[P, R]):
    """A function registered with ``@app.task``.

    Calling it runs the function here; ``submit`` runs it as a job on a fresh machine and
    returns a :class:`~balloons.job.Job` at once.
    """

    def __init__(self, app: Submitter, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
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
        return self.app.dispatcher.submit(self, self.opts, args, kwargs)

    async def submit_async(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await self.app.dispatcher.submit_async(self, self.opts, args, kwargs)

    def options(self, **overrides: Unpack[Options]) -> Task[P, R]:
        """The same task with other machine options for the calls made through it:
        ``task.options(memory_mb=512, timeout=60).submit(...)``."""
        unknown = sorted(overrides.keys() - _NAMES)
        if unknown:
            raise ConfigError(f"unknown task option(s) {unknown}: expected some of {_SORTED}")
        clone: Task[P, R] = Task.__new__(Task)
        clone.__dict__.update(self.__dict__)
        clone.opts = self.opts.replace(**overrides)
        return clone
