"""``Task``: a registered function that can run locally or be submitted as a job."""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    dataclass_transform,
    overload,
)

from . import registry
from .config import seconds_in
from .errors import ConfigError, WorkerError
from .frozen import Frozen
from .store.keys import POOL_RE
from .untrusted import MAX_CPUS, MAX_MEMORY_MB

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Coroutine, Iterable, Mapping
    from typing import ClassVar, Concatenate, Literal, Self

    from .dispatch import Dispatcher
    from .errors import JobFailed
    from .fanout import Call, Mapped
    from .job import Job
    from .schedules import Cron

    OP = ParamSpec("OP")
    S = TypeVar("S")
    T = TypeVar("T")
    F = TypeVar("F", bound="Fields")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT = 600.0  # seconds a task may run before its attempt fails with reason timeout
#: Bounds of the options (NaN and infinity are refused too).
MAX_TIMEOUT = 1e9
MAX_RETRIES = 10_000
MAX_MEMORY_FACTOR = 64.0
MAX_COST = 1e6
MAX_PRIORITY = 1000


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Fields(Frozen):
    """A record whose fields are its class's annotated attributes, each with its default:
    one definition gives the names, their types (mypy reads the keyword arguments of the
    constructor from it, and :func:`keywords_of` hands them to other functions) and the
    defaults. ``__init__`` takes the fields by name and checks them with ``_check``."""

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            # A class's own annotations (3.10+: never its bases'), strings here.
            for name, kind in getattr(klass, "__annotations__", {}).items():
                if not name.startswith("_") and "ClassVar" not in str(kind).partition("[")[0]:
                    names[name] = None
        type.__setattr__(cls, "__match_args__", tuple(names))  # the fields, in their order
        cls._names = frozenset(names)
        cls._sorted = sorted(names)

    _names: ClassVar[frozenset[str]] = frozenset()
    _sorted: ClassVar[list[str]] = []
    _what: ClassVar[str] = "field"

    def __init__(self, **values: Any) -> None:
        unknown = values.keys() - self._names
        if unknown:
            raise TypeError(
                f"unknown {self._what}(s) {sorted(unknown)}: expected some of {self._sorted}"
            )
        self._check(values)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _check(self, values: Mapping[str, Any]) -> None:
        """Raise for a value out of its range (none is, here)."""

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy rebuild through __init__, which takes the fields by name.
        return (_rebuild, (type(self), dict(zip(self.__match_args__, self._values(), strict=True))))


class TaskOptions(Fields):
    """How a task's machine is sized, how long it may run and how it retries: the keyword
    arguments of ``@app.task(...)`` and ``task.options(...)`` (this class is their one
    definition), with these defaults:

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

    _what = "task option"

    def _check(self, values: Mapping[str, Any]) -> None:
        check_options(values)


class CallOptions(TaskOptions):
    """The options of ``task.options(...)``: the task options, and these, which concern one
    call (its job) only:

    * ``delay``: seconds from now (the Redis server's clock) before the job may run.
    * ``at``: a timezone-aware ``datetime`` before which the job does not run.
    * ``key``: an idempotency key: a submit returns the pool's job of that key while its
      record lives, and stores nothing.

    Both ``delay`` and ``at`` must fall within the record TTL. This record types those keyword
    arguments; a task keeps the per-call ones beside its :class:`TaskOptions`.
    """

    delay: float | None = None
    at: dt.datetime | None = None
    key: str | None = None


#: The options that concern one call, not the task.
CALL_ONLY = CallOptions._names - TaskOptions._names


class Registration(TaskOptions):
    """The keyword arguments of ``@app.task(...)``: the task options, the task's ``name``
    (default: the function's qualified name), and its ``schedule``: a cron expression (UTC)
    or a :class:`balloons.Cron` (with a time zone and a catch-up policy), on which the
    supervisor submits it with no arguments (see :meth:`balloons.App.schedule`)."""

    name: str | None = None
    schedule: str | Cron | None = None


def keywords_of(
    record: Callable[OP, object],
) -> Callable[[Callable[Concatenate[S, ...], T]], Callable[Concatenate[S, OP], T]]:
    """Give a method the keyword arguments of ``record``'s constructor, for mypy: the options
    are written once, in the record. At run time the method is left as it is."""

    def keep(method: Callable[Concatenate[S, ...], T]) -> Callable[Concatenate[S, OP], T]:
        return method

    return keep


def check_options(o: Mapping[str, Any]) -> None:
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


def _rebuild(cls: type[F], values: dict[str, Any]) -> F:
    return cls(**values)


def _whole(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an integer (not a bool) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class Submitter(Protocol):
    """What a task needs of its app: the dispatcher that submits its jobs."""

    @property
    def dispatcher(self) -> Dispatcher:
        """The app's dispatcher, which submits the task's jobs."""


class Task(Generic[P, R]):
    """A function registered with ``@app.task``.

    Calling it runs the function here; ``submit`` runs it as a job on a fresh machine and
    returns a :class:`~balloons.job.Job` at once. An ``async def`` function is an
    :class:`AsyncTask`: the same, its job's result the coroutine's.
    """

    #: The per-call options of ``options(delay=..., at=..., key=...)`` (see
    #: :class:`CallOptions`): none but for a task made by ``options()``.
    call_options: Mapping[str, Any] = MappingProxyType({})
    #: What checks a submit's arguments, once the first submit has needed it (``False``: the
    #: function has no signature to check against); see :func:`balloons.calls.check_call`.
    _binder: Callable[..., None] | bool | None = None

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
        """Store the job, start a machine for it, and return its handle without waiting.
        The arguments must bind to the function's signature (else ``TypeError``, and nothing
        is stored)."""
        return self.app.dispatcher.submit(self, self.opts, args, kwargs)

    async def submit_async(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """:meth:`submit` for asyncio: the job is stored and placed without blocking the event
        loop."""
        return await self.app.dispatcher.submit_async(self, self.opts, args, kwargs)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Call[P, R]:
        """One call of this task, not submitted yet (for :meth:`submit_many`): its arguments
        are checked against the function's signature now (``TypeError`` naming the task)."""
        from .fanout import Call

        return Call(self, args, kwargs)

    def submit_many(
        self, calls: Iterable[Call[P, R] | tuple[Any, ...]], *, batch_size: int = 500
    ) -> list[Job[R]]:
        """Submit one job per call, in pipelined batches of ``batch_size`` (one round trip
        each), and return their handles in call order. A call is ``task.s(*args, **kwargs)``
        or a tuple of positional arguments. Every call is checked and serialized before any
        job is stored: one that cannot bind or serialize raises, naming its index, and
        nothing is stored. If Redis fails midway, :class:`~balloons.errors.PartiallySubmitted`
        says which jobs are stored. Each job runs under its pool's cap and isolation."""
        from .fanout import submit_many

        return submit_many(self, calls, batch_size)

    async def submit_many_async(
        self, calls: Iterable[Call[P, R] | tuple[Any, ...]], *, batch_size: int = 500
    ) -> list[Job[R]]:
        """:meth:`submit_many` for asyncio (run in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.submit_many, list(calls), batch_size=batch_size)

    @overload
    def map(
        self,
        inputs: Iterable[Any],
        *,
        ordered: bool = ...,
        return_exceptions: Literal[False] = ...,
        timeout: float | None = ...,
    ) -> Mapped[R]: ...

    @overload
    def map(
        self,
        inputs: Iterable[Any],
        *,
        ordered: bool = ...,
        return_exceptions: Literal[True],
        timeout: float | None = ...,
    ) -> Mapped[R | JobFailed]: ...

    def map(
        self,
        inputs: Iterable[Any],
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> Mapped[Any]:
        """Submit one job per input (the task's one argument) now, as :meth:`submit_many`
        does, and return an iterable of their results: in input order, or as the jobs end
        with ``ordered=False``. A failed job raises its :class:`~balloons.JobFailed` at its
        position (or is given as the value with ``return_exceptions=True``); ``timeout``
        counts from this call, for all results. ``async for`` iterates it in asyncio (see
        :meth:`map_async`); ``.jobs`` holds the handles."""
        return self._mapped(((x,) for x in inputs), ordered, return_exceptions, timeout)

    @overload
    def starmap(
        self,
        inputs: Iterable[tuple[Any, ...]],
        *,
        ordered: bool = ...,
        return_exceptions: Literal[False] = ...,
        timeout: float | None = ...,
    ) -> Mapped[R]: ...

    @overload
    def starmap(
        self,
        inputs: Iterable[tuple[Any, ...]],
        *,
        ordered: bool = ...,
        return_exceptions: Literal[True],
        timeout: float | None = ...,
    ) -> Mapped[R | JobFailed]: ...

    def starmap(
        self,
        inputs: Iterable[tuple[Any, ...]],
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> Mapped[Any]:
        """:meth:`map` with each input a tuple of the task's positional arguments."""
        return self._mapped(inputs, ordered, return_exceptions, timeout)

    async def map_async(
        self,
        inputs: Iterable[Any],
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> Mapped[Any]:
        """:meth:`map` for asyncio: submits without blocking the event loop; iterate the
        results with ``async for``."""
        import asyncio

        calls = [(x,) for x in inputs]
        return await asyncio.to_thread(self._mapped, calls, ordered, return_exceptions, timeout)

    def _mapped(
        self,
        calls: Iterable[tuple[Any, ...]],
        ordered: bool,
        return_exceptions: bool,
        timeout: float | None,
    ) -> Mapped[Any]:
        from .fanout import Mapped, submit_many

        if timeout is not None:
            from .job import _timeout

            timeout = _timeout(timeout)
        jobs = submit_many(self, calls, 500)
        return Mapped(jobs, ordered=ordered, return_exceptions=return_exceptions, timeout=timeout)

    @keywords_of(CallOptions)
    def options(self, **overrides: Any) -> Task[P, R]:
        """The same task with other options for the calls made through it:
        ``task.options(memory_mb=512, timeout=60).submit(...)``, or for one job
        ``task.options(delay=30, key="order-42", priority=5).submit(...)``
        (see :class:`TaskOptions` and :class:`CallOptions`)."""
        return self._with(overrides)

    def _with(self, overrides: dict[str, Any]) -> Self:
        """A copy of this task (of its class) with ``overrides`` (see :meth:`options`)."""
        unknown = sorted(overrides.keys() - CallOptions._names)
        if unknown:
            raise ConfigError(
                f"unknown task option(s) {unknown}: expected some of {CallOptions._sorted}"
            )
        if self._binder is None:  # the call check, made once here and shared by every copy
            from .calls import binder_of

            self._binder = binder_of(self.fn)
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        call = {k: overrides.pop(k) for k in CALL_ONLY & overrides.keys()}
        if call:
            clone.call_options = {**self.call_options, **call}
        if overrides:
            clone.opts = self.opts.replace(**overrides)
        return clone


class AsyncTask(Task[P, R]):
    """A task whose function is an ``async def``: its job runs the coroutine in an event loop
    on the machine, and its result is what the coroutine returns. Calling it here returns
    the coroutine, as calling the function does."""

    def __call__(  # type: ignore[override]  # the coroutine whose result is R
        self, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        fn: Callable[P, Coroutine[Any, Any, R]] = self.fn  # type: ignore[assignment]
        return fn(*args, **kwargs)

    @keywords_of(CallOptions)
    def options(self, **overrides: Any) -> AsyncTask[P, R]:
        """See :meth:`Task.options`."""
        return self._with(overrides)


class Register(Protocol):
    """What ``@app.task(...)`` with options returns: it makes a function a task."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


def define(
    app: Submitter, fn: Callable[..., Any], name: str | None, opts: TaskOptions
) -> Task[..., Any]:
    """Make ``fn`` a task of ``app`` (an :class:`AsyncTask` for an ``async def``) named ``name``
    (by default its qualified name) and register it under its full name, checked as a machine
    would check it."""
    qual = name or fn.__qualname__
    if "<locals>" in qual:
        raise ConfigError(
            f"task {fn.__qualname__!r} is defined inside a function: a machine could not "
            "import it. Define tasks at module level."
        )
    full = registry.task_name(fn.__module__, qual)
    try:
        registry.check_task_name(full)
    except WorkerError as exc:  # the worker's refusal, said at registration
        raise ConfigError(str(exc)) from None
    kind = AsyncTask if is_coroutine_function(fn) else Task
    t = kind(app, fn, full, opts)
    registry.register(full, t)
    return t


def is_coroutine_function(fn: object) -> bool:
    """Whether ``fn`` is an ``async def`` function (without importing ``inspect``, which the
    machine's start-up path does without)."""
    code = getattr(fn, "__code__", None)
    return bool(getattr(code, "co_flags", 0) & _CO_COROUTINE)


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE
