"""Settings, and the one place where balloons reads its environment.

Precedence is always: explicit constructor argument > environment variable > default.
:func:`Settings.resolve` is called by the app factory (``App()``), the CLI and the worker
entrypoint; nothing else in balloons reads ``os.environ``.
"""

from __future__ import annotations

import math
import os

from .errors import ConfigError
from .frozen import Frozen
from .store.keys import DEFAULT_NAMESPACE
from .store.redisurl import DEFAULT_TIMEOUT, TIMEOUT_RANGE, check_url, mask_url

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["ENV_VARS", "Settings", "default_state_dir", "mask_url"]

DEFAULT_RECORD_TTL = 24 * 3600  # seconds a job record and its result are kept
DEFAULT_MAX_ARG_BYTES = 1024 * 1024  # serialized arguments larger than this are refused
#: Shortest signing key accepted, in bytes (the embedded default makes one of 64 hex digits).
MIN_SECRET_BYTES = 32
BACKENDS = ("local", "fly", "inline")

# Every environment variable balloons understands, with what it sets. Unknown BALLOONS_*
# names are refused, so a typo never silently falls back to a default.
ENV_VARS: dict[str, str] = {
    "BALLOONS_REDIS_URL": "Redis URL (falls back to REDIS_URL); unset: embedded Valkey",
    "BALLOONS_BACKEND": "machine backend: local (default), fly, or inline (tests)",
    "BALLOONS_SECRET": "job signing key; required with an external Redis",
    "BALLOONS_NAMESPACE": f"prefix of every Redis key (default {DEFAULT_NAMESPACE})",
    "BALLOONS_HOME": "state directory (default ~/.local/state/balloons)",
    "BALLOONS_RECORD_TTL": f"seconds records and results are kept (default {DEFAULT_RECORD_TTL})",
    "BALLOONS_SERIALIZER": "json (default), msgpack or pickle",
    "BALLOONS_REDIS_TIMEOUT": "seconds a Redis reply may take, a blocking wait's on top of its "
    "own time (default 10; the URL's socket_timeout option wins)",
    "BALLOONS_ENV_ALLOWLIST": "comma-separated names of variables passed on to machines",
    "BALLOONS_MAX_ARG_BYTES": f"largest serialized arguments (default {DEFAULT_MAX_ARG_BYTES})",
    "BALLOONS_VERSION": "the code version; machines take only jobs of theirs "
    "(default: the Fly image, else a digest of the task modules)",
    # Set by balloons for machines; read by the worker entrypoint.
    "BALLOONS_JOB": "worker handoff: JOB_ID/ATTEMPT (set by balloons on each machine)",
    "BALLOONS_MACHINE_ID": "the machine's id (set by the local backend; FLY_MACHINE_ID on Fly)",
    "BALLOONS_STANDBY": "1 on a machine kept stopped on standby at idle (set by balloons)",
    "BALLOONS_VERSION_FILES": "task module files whose source is a local machine's version "
    "(set by balloons)",
    "BALLOONS_PYTHONPATH": "import path entries of the submitting process (local backend)",
    "BALLOONS_FORKSERVER_IDLE": "seconds an idle local fork server lingers (default 30)",
    # The HTTP worker protocol (docs/worker-protocol.md)
    "BALLOONS_SERVICE_URL": "base URL of the job service that machines of the worker protocol "
    "call (App.service_url)",
    "BALLOONS_ATTEMPT_URL": "the attempt a worker-protocol machine reports to (set by balloons)",
    "BALLOONS_ATTEMPT_TOKEN": "that attempt's token (set by balloons)",
    "BALLOONS_INPUT_PATH": "the file holding a command job's input (set by balloons)",
    # Pool defaults (each pool can override them with app.pool(...))
    "BALLOONS_MAX_MACHINES": "default cap of machines per pool (default 10)",
    "BALLOONS_IDLE_TIMEOUT": "default seconds a finished machine waits for more work (default 10)",
    "BALLOONS_BOOT_TIMEOUT": "default seconds a machine may take to start its job (default 60)",
    "BALLOONS_HEARTBEAT": "seconds between worker heartbeats; a lease is 5 of them (default 2)",
    # Fly backend
    "BALLOONS_FLY_APP": "Fly app the job machines belong to (default FLY_APP_NAME)",
    "BALLOONS_FLY_API_URL": "Machines API base URL (default https://api.machines.dev)",
    "BALLOONS_FLY_IMAGE": "image for job machines (default FLY_IMAGE_REF)",
    "BALLOONS_FLY_REGION": "primary region for job machines",
    "BALLOONS_FLY_FALLBACK_REGIONS": "comma-separated regions tried on capacity refusals",
    "BALLOONS_FLY_CPU_KIND": "shared (default) or performance",
    "BALLOONS_DASHBOARD_TOKEN": "token required by the dashboard and /metrics",
    "BALLOONS_SERVICE_TOKEN": "admin key of the job service (balloons serve), for bootstrapping",
    "BALLOONS_WEBHOOK_SECRET": "the job service's Standard Webhooks secret (whsec_...), signing "
    "the job callbacks that give none of their own",
    "BALLOONS_PRICES": "JSON file overriding parts of the price table (balloons/prices.json)",
}


def default_state_dir(env: Mapping[str, str]) -> Path:
    """The default state directory: ``BALLOONS_HOME``, else ``$XDG_STATE_HOME/balloons``, else
    ``~/.local/state/balloons``."""
    from pathlib import Path

    return Path(_default_state_dir(env))


def _default_state_dir(env: Mapping[str, str]) -> str:
    if env.get("BALLOONS_HOME"):
        return os.path.expanduser(env["BALLOONS_HOME"])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "balloons")


def dashboard_token(env: Mapping[str, str]) -> str | None:
    """The dashboard token from ``BALLOONS_DASHBOARD_TOKEN``, if set."""
    return env.get("BALLOONS_DASHBOARD_TOKEN") or None


def service_token(env: Mapping[str, str]) -> str | None:
    """The job service's bootstrap admin key from ``BALLOONS_SERVICE_TOKEN``, if set."""
    return env.get("BALLOONS_SERVICE_TOKEN") or None


def webhook_secret(env: Mapping[str, str]) -> str | None:
    """The job service's webhook secret from ``BALLOONS_WEBHOOK_SECRET``, if set."""
    return env.get("BALLOONS_WEBHOOK_SECRET") or None


def check_env_names(env: Mapping[str, str]) -> None:
    """Refuse ``BALLOONS_*`` variables balloons does not know, suggesting the closest name."""
    for name in env:
        if name.startswith("BALLOONS_") and name not in ENV_VARS:
            import difflib

            close = difflib.get_close_matches(name, list(ENV_VARS), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(
                f"unknown environment variable {name}{hint} "
                f"(known: {', '.join(sorted(k for k in ENV_VARS if k.startswith('BALLOONS_')))})"
            )


def seconds_in(value: object, low: float, high: float) -> bool:
    """Whether ``value`` is a number (not a bool) from ``low`` to ``high``: NaN and infinity
    are not."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


def check_seconds(what: str, value: object, low: float, high: float) -> float:
    """``value`` as a float; ``ConfigError`` naming it unless it is a number of seconds from
    ``low`` to ``high`` (NaN and infinity never are)."""
    if not seconds_in(value, low, high):
        raise ConfigError(
            f"{what} must be a number of seconds from {low:g} to {high:g}, got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def check_secret(secret: str, what: str = "BALLOONS_SECRET, or App(secret=...)") -> None:
    """Refuse a signing key shorter than :data:`MIN_SECRET_BYTES` bytes (UTF-8): a short key
    can be guessed, and a guessed key runs anything on the machines. Never quotes the key."""
    size = len(secret.encode("utf-8", "surrogatepass"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the signing key ({what}) is {size} bytes long: "
            f"expected at least {MIN_SECRET_BYTES} bytes of random data, e.g. "
            "python -c 'import secrets; print(secrets.token_hex(32))'"
        )


def _int(
    name: str, raw: str | int | None, default: int, minimum: int = 1, maximum: int = 2**31 - 1
) -> int:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or (isinstance(raw, str) and len(raw) > 20):
        raise ConfigError(f"{name} must be an integer from {minimum} to {maximum}, got {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


class Settings(Frozen):
    """Resolved settings of one app. ``repr`` masks the Redis password and the secret."""

    __slots__ = (
        "_state_dir",
        "backend",
        "env",
        "env_allowlist",
        "max_arg_bytes",
        "namespace",
        "record_ttl",
        "redis_timeout",
        "redis_url",
        "secret",
        "serializer",
        "version",
    )
    __match_args__ = (
        "redis_url",
        "backend",
        "secret",
        "namespace",
        "state_dir",
        "record_ttl",
        "serializer",
        "env_allowlist",
        "max_arg_bytes",
        "env",
        "version",
        "redis_timeout",
    )
    redis_url: str | None
    backend: str
    secret: str | None
    namespace: str
    _state_dir: str
    record_ttl: int
    serializer: str
    env_allowlist: tuple[str, ...]
    max_arg_bytes: int
    env: Mapping[str, str]
    #: The code version the app names (``App(version=...)``, ``BALLOONS_VERSION``), or None:
    #: then the Fly backend's image, else a digest of the task modules (``balloons.compat``).
    version: str | None
    #: Seconds a Redis reply may take (a blocking wait's: its own time and this), after which
    #: the command fails with a ``StoreError``: :data:`balloons.store.redisurl.DEFAULT_TIMEOUT`
    #: unless ``App(redis_timeout=...)`` or ``BALLOONS_REDIS_TIMEOUT`` says otherwise.
    redis_timeout: float

    def __init__(
        self,
        redis_url: str | None,
        backend: str,
        secret: str | None,
        namespace: str,
        state_dir: str | os.PathLike[str],
        record_ttl: int,
        serializer: str,
        env_allowlist: tuple[str, ...],
        max_arg_bytes: int,
        env: Mapping[str, str] | None = None,
        version: str | None = None,
        redis_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        values = (
            redis_url,
            backend,
            secret,
            namespace,
            os.fspath(state_dir),
            record_ttl,
            serializer,
            env_allowlist,
            max_arg_bytes,
            {} if env is None else env,
            version,
            redis_timeout,
        )
        for name, value in zip(self.__match_args__, values, strict=True):
            # state_dir is kept as a string: pathlib is not on a machine's start-up path.
            object.__setattr__(self, "_state_dir" if name == "state_dir" else name, value)

    @property
    def state_dir(self) -> Path:
        """The state directory, as a ``Path``."""
        from pathlib import Path

        return Path(self._state_dir)

    def __repr__(self) -> str:
        url = mask_url(self.redis_url) if self.redis_url else "embedded"
        return (
            f"Settings(redis_url={url!r}, backend={self.backend!r}, "
            f"secret={'***' if self.secret else None}, namespace={self.namespace!r}, "
            f"state_dir={str(self.state_dir)!r}, record_ttl={self.record_ttl})"
        )

    @property
    def embedded(self) -> bool:
        """Whether the app uses the embedded Valkey (no Redis URL set)."""
        return self.redis_url is None

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str],
        *,
        redis_url: str | None = None,
        backend: str | None = None,
        secret: str | None = None,
        namespace: str | None = None,
        state_dir: str | Path | None = None,
        record_ttl: int | None = None,
        serializer: str | None = None,
        env_allowlist: tuple[str, ...] | list[str] | None = None,
        max_arg_bytes: int | None = None,
        version: str | None = None,
        redis_timeout: float | None = None,
    ) -> Settings:
        """Settings from the constructor's arguments, else ``env``'s ``BALLOONS_*`` variables,
        else the defaults; every value checked (``ConfigError`` naming it, and an unknown
        ``BALLOONS_*`` name with the closest known one)."""
        check_env_names(env)
        url = redis_url or env.get("BALLOONS_REDIS_URL") or env.get("REDIS_URL") or None
        if url is not None and "sentinel" in url.partition("://")[0].lower():
            raise ConfigError(
                f"Redis URL {mask_url(url)!r}: Redis Sentinel is not supported; give the "
                "primary's redis:// or rediss:// URL (or a name that follows failovers), or "
                "use a Redis Cluster: the URL of any of its nodes"
            )
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"Redis URL {mask_url(url)!r} must start with redis://, rediss:// or unix://"
            )
        if url is not None:
            check_url(url)  # the options machines' client reads, and none other
        be = backend or env.get("BALLOONS_BACKEND") or "local"
        if be not in BACKENDS:
            raise ConfigError(f"unknown backend {be!r}: expected one of {', '.join(BACKENDS)}")
        ns = namespace or env.get("BALLOONS_NAMESPACE") or DEFAULT_NAMESPACE
        if not ns or any(c in ns for c in "{} \t\n"):
            raise ConfigError(f"namespace {ns!r} must be non-empty, without braces or spaces")
        key = secret or env.get("BALLOONS_SECRET") or None
        if key is not None:
            check_secret(key)
        ver = version or env.get("BALLOONS_VERSION") or None
        if ver is not None:
            from .compat import check_version

            try:
                check_version(ver)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        allow = env_allowlist
        if allow is None:
            raw = env.get("BALLOONS_ENV_ALLOWLIST", "")
            allow = [n.strip() for n in raw.split(",") if n.strip()]
        return cls(
            redis_url=url,
            backend=be,
            secret=key,
            namespace=ns,
            state_dir=state_dir if state_dir is not None else _default_state_dir(env),
            record_ttl=_int(
                "record_ttl", record_ttl or env.get("BALLOONS_RECORD_TTL"), DEFAULT_RECORD_TTL
            ),
            serializer=serializer or env.get("BALLOONS_SERIALIZER") or "json",
            env_allowlist=tuple(allow),
            max_arg_bytes=_int(
                "max_arg_bytes",
                max_arg_bytes or env.get("BALLOONS_MAX_ARG_BYTES"),
                DEFAULT_MAX_ARG_BYTES,
            ),
            env=dict(env),
            version=ver,
            redis_timeout=_redis_timeout(redis_timeout, env),
        )


def _redis_timeout(given: float | None, env: Mapping[str, str]) -> float:
    """The seconds a Redis reply may take: ``App(redis_timeout=)``, else
    ``BALLOONS_REDIS_TIMEOUT``, else the default."""
    low, high = TIMEOUT_RANGE
    if given is not None:
        return check_seconds("redis_timeout", given, low, high)
    return _float(
        "BALLOONS_REDIS_TIMEOUT", env.get("BALLOONS_REDIS_TIMEOUT"), DEFAULT_TIMEOUT, low, high
    )


def _float(name: str, raw: str | None, default: float, minimum: float, maximum: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not minimum <= value <= maximum:  # NaN too
        raise ConfigError(f"{name} must be from {minimum:g} to {maximum:g} seconds, got {raw!r}")
    return value


def pool_defaults(env: Mapping[str, str]) -> dict[str, float]:
    """Defaults of every pool not declared with ``app.pool(...)``, from the environment."""
    from .pools import (
        DEFAULT_BOOT_TIMEOUT,
        DEFAULT_HEARTBEAT,
        DEFAULT_IDLE_TIMEOUT,
        MAX_HEARTBEAT,
        MAX_MACHINES,
        MAX_WAIT,
    )

    return {
        "max_machines": _int(
            "BALLOONS_MAX_MACHINES", env.get("BALLOONS_MAX_MACHINES"), 10, maximum=MAX_MACHINES
        ),
        "idle_timeout": _float(
            "BALLOONS_IDLE_TIMEOUT",
            env.get("BALLOONS_IDLE_TIMEOUT"),
            DEFAULT_IDLE_TIMEOUT,
            0,
            MAX_WAIT,
        ),
        "boot_timeout": _float(
            "BALLOONS_BOOT_TIMEOUT",
            env.get("BALLOONS_BOOT_TIMEOUT"),
            DEFAULT_BOOT_TIMEOUT,
            1,
            MAX_WAIT,
        ),
        "heartbeat": _float(
            "BALLOONS_HEARTBEAT",
            env.get("BALLOONS_HEARTBEAT"),
            DEFAULT_HEARTBEAT,
            0.1,
            MAX_HEARTBEAT,
        ),
    }
