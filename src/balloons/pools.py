"""``Pool``: a named group of machines with a cap, a warm floor and an idle timeout.

``app.pool("builds", max_machines=2, idle_timeout=10, cpus=4, memory_mb=4096)`` declares one;
tasks name it with ``@app.task(pool="builds")``. A pool never has more than ``max_machines``
machines (starting, running or idle) at once, however many processes submit: the cap is
checked by the same Lua script that takes a slot (:mod:`balloons.store.lua`). The pool's settings
travel to Redis with every submit, so workers and supervisors read the submitter's values.

``standby=N`` keeps up to N of the pool's machines *stopped* rather than destroyed when they
idle out, so that a later launch starts one (Fly: a start is rate-limited per machine, a
create per app) instead of creating a machine; a stopped machine costs only its root file
system. It needs a backend that can start a stopped machine again (``FlyBackend``).

``isolation`` says what one job may leave behind for the next:

* ``"process"`` (the default): every job runs in a fresh OS process. A warm machine keeps a
  clean parent (the task's module imported, no job run in it) and forks a child per job, so
  no module global, ``os.environ`` change or thread of a job is seen by the next.
* ``"machine"``: every job gets a machine of its own; a machine exits after its job.
* ``"none"``: one interpreter runs job after job on a warm machine: the fastest, and jobs
  share its state (globals, caches, environment, threads). An opt-in for throughput.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from .config import check_seconds
from .errors import ConfigError
from .store.keys import POOL_RE
from .untrusted import MAX_CPUS, MAX_MEMORY_MB

#: Most machines a pool may have.
MAX_MACHINES = 100_000
#: Longest idle and boot timeout: a week.
MAX_WAIT = 7 * 24 * 3600.0
#: Longest heartbeat period: an hour (a lease lasts five of them).
MAX_HEARTBEAT = 3600.0
#: A pool's defaults, which the scripts also assume when a pool's settings or a job's need are
#: missing in Redis (:mod:`balloons.store.lua` writes them into the scripts).
DEFAULT_CPUS = 1
DEFAULT_MEMORY_MB = 256
DEFAULT_MIN_MACHINES = 0
DEFAULT_STANDBY = 0
DEFAULT_IDLE_TIMEOUT = 10.0
DEFAULT_BOOT_TIMEOUT = 60.0
DEFAULT_HEARTBEAT = 2.0
#: What a job may leave behind for the next (see the module's doc), the default first.
ISOLATIONS = ("process", "machine", "none")
DEFAULT_ISOLATION = "process"
#: How a pool's machines reach their job: '' (the store, as workers) or 'http' (the worker
#: protocol, with only an attempt token: docs/worker-protocol.md).
PROTOCOLS = ("", "http")


class Pool:
    """A pool's settings, as ``app.pool(...)`` declares them (see the module's docstring):
    ``max_machines`` (the cap), ``idle_timeout``, ``min_machines`` (the warm floor), ``cpus`` and
    ``memory_mb`` (the default machine size), ``boot_timeout``, ``heartbeat``, ``standby`` and
    ``isolation`` (``"process"``, ``"machine"`` or ``"none"``). Each value is range-checked when
    given (``ConfigError`` naming it)."""

    __slots__ = (
        "_signed",
        "boot_timeout",
        "cpus",
        "heartbeat",
        "idle_timeout",
        "isolation",
        "max_machines",
        "memory_mb",
        "min_machines",
        "name",
        "protocol",
        "standby",
    )

    def __init__(
        self,
        name: str,
        *,
        max_machines: int,
        idle_timeout: float,
        min_machines: int = DEFAULT_MIN_MACHINES,
        cpus: int = DEFAULT_CPUS,
        memory_mb: int = DEFAULT_MEMORY_MB,
        boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
        heartbeat: float = DEFAULT_HEARTBEAT,
        standby: int = DEFAULT_STANDBY,
        isolation: str = DEFAULT_ISOLATION,
        protocol: str = "",
    ) -> None:
        if not isinstance(name, str) or not POOL_RE.match(name):
            raise ConfigError(
                f"pool name {name!r} must be 1-40 of a-z, 0-9, '_' or '-', starting with a "
                "letter or digit"
            )
        if not isinstance(isolation, str) or isolation not in ISOLATIONS:
            raise ConfigError(
                f"pool {name!r}: isolation {isolation!r} is not one of "
                f'{", ".join(map(repr, ISOLATIONS))} ("process": a fresh process per job, '
                'the default; "machine": a machine per job; "none": jobs share one '
                "interpreter)"
            )
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"pool {name!r}: protocol {protocol!r} is not '' (workers hold the store's "
                "credentials) or 'http' (the worker protocol: machines hold only an attempt token)"
            )
        if protocol and (min_machines or standby):
            raise ConfigError(
                f"pool {name!r}: a pool with protocol 'http' keeps no machines between jobs "
                "(min_machines and standby must be 0): each runs one attempt"
            )
        _positive_int("max_machines", max_machines, 1, MAX_MACHINES)
        _positive_int("min_machines", min_machines, 0, MAX_MACHINES)
        _positive_int("cpus", cpus, 1, MAX_CPUS)
        _positive_int("memory_mb", memory_mb, 64, MAX_MEMORY_MB)
        _positive_int("standby", standby, 0, MAX_MACHINES)
        for what, count in (("min_machines", min_machines), ("standby", standby)):
            if count > max_machines:
                raise ConfigError(
                    f"pool {name!r}: {what} ({count}) exceeds max_machines ({max_machines})"
                )
        for what, value, low, high in (
            ("idle_timeout", idle_timeout, 0.0, MAX_WAIT),
            ("boot_timeout", boot_timeout, 1.0, MAX_WAIT),
            ("heartbeat", heartbeat, 0.1, MAX_HEARTBEAT),
        ):
            check_seconds(f"pool {name!r}: {what}", value, low, high)
        self.name = name
        self.max_machines = max_machines
        self.idle_timeout = float(idle_timeout)
        self.min_machines = min_machines
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.boot_timeout = float(boot_timeout)
        self.heartbeat = float(heartbeat)
        self.standby = standby
        self.isolation = isolation
        self.protocol = protocol
        self._signed: tuple[bytes, str, str] | None = None  # the last signed_config's

    def __repr__(self) -> str:
        return (
            f"<Pool {self.name} max_machines={self.max_machines} min={self.min_machines} "
            f"idle_timeout={self.idle_timeout:g}s standby={self.standby} "
            f"isolation={self.isolation} "
            f"{self.cpus}cpu/{self.memory_mb}MB>"
        )

    def redis_config(self) -> str:
        """The settings as the SUBMIT script stores them (``name value`` pairs)."""
        return (
            f"cap {self.max_machines} boot {self.boot_timeout:g} idle {self.idle_timeout:g} "
            f"min {self.min_machines} hb {self.heartbeat:g} cpus {self.cpus} mem {self.memory_mb} "
            f"standby {self.standby} iso {self.isolation}"
        )

    def signed_config(self, secret: bytes, extra: str = "") -> str:
        """:meth:`redis_config` and ``extra`` (``name value`` pairs: the code version's), then
        ``sig HEX``: their signature with the app's secret (:func:`balloons.signing.sign_pool`),
        without which a supervisor keeps no warm floor of the pool
        (:mod:`balloons.control.poolconf`). Made once per secret and ``extra``."""
        last = self._signed
        if last is not None and last[0] == secret and last[1] == extra:
            return last[2]
        from .signing import sign_pool

        conf = self.redis_config() + extra
        signed = f"{conf} sig {sign_pool(secret, self.name, conf)}"
        self._signed = (secret, extra, signed)
        return signed


def _positive_int(what: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(
            f"{what} must be an integer of at least {low} (and at most {high}), got {value!r}"
        )


def check_standby(pool: Pool, backend: object, name: str) -> None:
    """:class:`ConfigError` unless the app's backend (``backend``, an object, else the one
    named ``name``) can start a stopped machine again, as a pool with ``standby`` needs."""
    if backend is None:  # by name: no backend imported on a machine's start-up path
        if name == "fly":
            return
        what = f"the {name!r} backend"
    else:
        from .backends.base import Restartable

        if isinstance(backend, Restartable):
            return
        what = type(backend).__name__
    raise ConfigError(
        f"pool {pool.name!r}: standby={pool.standby} needs a backend that can start a stopped "
        f"machine again (FlyBackend), but {what} has no start(): its machines are "
        "gone when they exit. Use standby=0 with it"
    )


class PoolSettings(TypedDict, total=False):
    """The keyword arguments of :meth:`balloons.App.pool` (see :class:`Pool`)."""

    max_machines: int | None
    idle_timeout: float | None
    min_machines: int
    cpus: int
    memory_mb: int
    boot_timeout: float | None
    heartbeat: float | None
    standby: int
    isolation: str
    protocol: str


def declared(name: str, env: Mapping[str, str], settings: PoolSettings) -> Pool:
    """The pool ``app.pool(name, **settings)`` declares: the settings left out (or None) of
    ``max_machines``, ``idle_timeout``, ``boot_timeout`` and ``heartbeat`` from the
    environment's defaults (:func:`balloons.config.pool_defaults`)."""
    from .config import pool_defaults

    given: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
    defaults = pool_defaults(env)
    for key in ("idle_timeout", "boot_timeout", "heartbeat"):
        given.setdefault(key, defaults[key])
    given.setdefault("max_machines", int(defaults["max_machines"]))
    return Pool(name, **given)
