"""Settings, and the one place where balloons reads its environment.

Precedence is always: explicit constructor argument > environment variable > default.
:func:`Settings.resolve` is called by the app factory (``App()``), the CLI and the worker
entrypoint; nothing else in balloons reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .keys import DEFAULT_NAMESPACE
from .resp import mask_url

__all__ = ["ENV_VARS", "FlySettings", "Settings", "default_state_dir", "mask_url"]

DEFAULT_RECORD_TTL = 24 * 3600  # seconds a job record and its result are kept
DEFAULT_MAX_ARG_BYTES = 1024 * 1024  # serialized arguments larger than this are refused
BACKENDS = ("local", "fly")

# Every environment variable balloons understands, with what it sets. Unknown BALLOONS_*
# names are refused, so a typo never silently falls back to a default.
ENV_VARS: dict[str, str] = {
    "BALLOONS_REDIS_URL": "Redis URL (falls back to REDIS_URL); unset: embedded Valkey",
    "BALLOONS_BACKEND": "machine backend: local (default) or fly",
    "BALLOONS_SECRET": "job signing key; required with an external Redis",
    "BALLOONS_NAMESPACE": f"prefix of every Redis key (default {DEFAULT_NAMESPACE})",
    "BALLOONS_HOME": "state directory (default ~/.local/state/balloons)",
    "BALLOONS_RECORD_TTL": f"seconds records and results are kept (default {DEFAULT_RECORD_TTL})",
    "BALLOONS_SERIALIZER": "json (default) or pickle",
    "BALLOONS_ENV_ALLOWLIST": "comma-separated names of variables passed on to machines",
    "BALLOONS_MAX_ARG_BYTES": f"largest serialized arguments (default {DEFAULT_MAX_ARG_BYTES})",
    # Set by balloons for machines; read by the worker entrypoint.
    "BALLOONS_JOB": "worker handoff: JOB_ID/ATTEMPT (set by balloons on each machine)",
    "BALLOONS_MACHINE_ID": "the machine's id (set by the local backend; FLY_MACHINE_ID on Fly)",
    "BALLOONS_PYTHONPATH": "import path entries of the submitting process (local backend)",
    "BALLOONS_FORKSERVER_IDLE": "seconds an idle local fork server lingers (default 30)",
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
}


def default_state_dir(env: Mapping[str, str]) -> Path:
    if env.get("BALLOONS_HOME"):
        return Path(env["BALLOONS_HOME"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "balloons"


def dashboard_token(env: Mapping[str, str]) -> str | None:
    """The dashboard token from ``BALLOONS_DASHBOARD_TOKEN``, if set."""
    return env.get("BALLOONS_DASHBOARD_TOKEN") or None


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


def _int(name: str, raw: str | int | None, default: int, minimum: int = 1) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True, repr=False)
class Settings:
    """Resolved settings of one app. ``repr`` masks the Redis password and the secret."""

    redis_url: str | None
    backend: str
    secret: str | None
    namespace: str
    state_dir: Path
    record_ttl: int
    serializer: str
    env_allowlist: tuple[str, ...]
    max_arg_bytes: int
    env: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        url = mask_url(self.redis_url) if self.redis_url else "embedded"
        return (
            f"Settings(redis_url={url!r}, backend={self.backend!r}, "
            f"secret={'***' if self.secret else None}, namespace={self.namespace!r}, "
            f"state_dir={str(self.state_dir)!r}, record_ttl={self.record_ttl})"
        )

    @property
    def embedded(self) -> bool:
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
    ) -> Settings:
        check_env_names(env)
        url = redis_url or env.get("BALLOONS_REDIS_URL") or env.get("REDIS_URL") or None
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"Redis URL {mask_url(url)!r} must start with redis://, rediss:// or unix://"
            )
        be = backend or env.get("BALLOONS_BACKEND") or "local"
        if be not in BACKENDS:
            raise ConfigError(f"unknown backend {be!r}: expected one of {', '.join(BACKENDS)}")
        ns = namespace or env.get("BALLOONS_NAMESPACE") or DEFAULT_NAMESPACE
        if not ns or any(c in ns for c in "{} \t\n"):
            raise ConfigError(f"namespace {ns!r} must be non-empty, without braces or spaces")
        allow = env_allowlist
        if allow is None:
            raw = env.get("BALLOONS_ENV_ALLOWLIST", "")
            allow = [n.strip() for n in raw.split(",") if n.strip()]
        return cls(
            redis_url=url,
            backend=be,
            secret=secret or env.get("BALLOONS_SECRET") or None,
            namespace=ns,
            state_dir=Path(state_dir) if state_dir is not None else default_state_dir(env),
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
        )


def _float(name: str, raw: str | None, default: float, minimum: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value:g}")
    return value


def pool_defaults(env: Mapping[str, str]) -> dict[str, float]:
    """Defaults of every pool not declared with ``app.pool(...)``, from the environment."""
    return {
        "max_machines": _int("BALLOONS_MAX_MACHINES", env.get("BALLOONS_MAX_MACHINES"), 10),
        "idle_timeout": _float("BALLOONS_IDLE_TIMEOUT", env.get("BALLOONS_IDLE_TIMEOUT"), 10, 0),
        "boot_timeout": _float("BALLOONS_BOOT_TIMEOUT", env.get("BALLOONS_BOOT_TIMEOUT"), 60, 1),
        "heartbeat": _float("BALLOONS_HEARTBEAT", env.get("BALLOONS_HEARTBEAT"), 2, 0.1),
    }


#: Where the Fly backend sends API requests unless told otherwise.
DEFAULT_FLY_API_URL = "https://api.machines.dev"
FLY_CPU_KINDS = ("shared", "performance")
_REGION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _regions(name: str, raw: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw or ())
    out = tuple(r.strip() for r in items if r.strip())
    for region in out:
        if not set(region) <= _REGION_CHARS or not 2 <= len(region) <= 8:
            raise ConfigError(
                f"{name}: {region!r} is not a Fly region code (expected e.g. iad, ord, ams)"
            )
    return out


@dataclass(frozen=True, repr=False)
class FlySettings:
    """Resolved settings of the Fly backend. ``repr`` never shows the token.

    Precedence: argument > ``BALLOONS_FLY_*`` > the variable Fly sets on its own machines
    (``FLY_APP_NAME``, ``FLY_IMAGE_REF``, ``FLY_REGION``) > default.
    """

    token: str
    app: str
    api_url: str
    image: str
    region: str | None
    fallback_regions: tuple[str, ...]
    cpu_kind: str

    def __repr__(self) -> str:
        return (
            f"FlySettings(app={self.app!r}, api_url={self.api_url!r}, image={self.image!r}, "
            f"region={self.region!r}, fallback_regions={self.fallback_regions!r}, "
            f"cpu_kind={self.cpu_kind!r}, token=***)"
        )

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str],
        *,
        token: str | None = None,
        app: str | None = None,
        api_url: str | None = None,
        image: str | None = None,
        region: str | None = None,
        fallback_regions: tuple[str, ...] | list[str] | str | None = None,
        cpu_kind: str | None = None,
    ) -> FlySettings:
        tok = (token or env.get("FLY_API_TOKEN") or "").strip()
        if not tok:
            raise ConfigError(
                "the Fly backend needs an API token: set FLY_API_TOKEN (for example to the "
                "output of `fly tokens create deploy -a APP`) or pass FlyBackend(token=...)"
            )
        name = app or env.get("BALLOONS_FLY_APP") or env.get("FLY_APP_NAME") or ""
        if not name:
            raise ConfigError(
                "the Fly backend needs the app its job machines belong to: set "
                "BALLOONS_FLY_APP (on Fly, FLY_APP_NAME is the default) or FlyBackend(app=...)"
            )
        url = (api_url or env.get("BALLOONS_FLY_API_URL") or DEFAULT_FLY_API_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"BALLOONS_FLY_API_URL {url!r} must start with http:// or https:// "
                f"(default {DEFAULT_FLY_API_URL})"
            )
        img = image or env.get("BALLOONS_FLY_IMAGE") or env.get("FLY_IMAGE_REF") or ""
        if not img:
            raise ConfigError(
                "the Fly backend needs the image job machines run: set BALLOONS_FLY_IMAGE "
                "(on Fly, FLY_IMAGE_REF, the web app's own image, is the default) or "
                "FlyBackend(image=...)"
            )
        primary = _regions(
            "BALLOONS_FLY_REGION", region or env.get("BALLOONS_FLY_REGION") or env.get("FLY_REGION")
        )
        if len(primary) > 1:
            raise ConfigError(
                f"BALLOONS_FLY_REGION must name one region, got {','.join(primary)!r}: "
                "list the others in BALLOONS_FLY_FALLBACK_REGIONS"
            )
        fallbacks = _regions(
            "BALLOONS_FLY_FALLBACK_REGIONS",
            fallback_regions
            if fallback_regions is not None
            else env.get("BALLOONS_FLY_FALLBACK_REGIONS"),
        )
        kind = cpu_kind or env.get("BALLOONS_FLY_CPU_KIND") or "shared"
        if kind not in FLY_CPU_KINDS:
            raise ConfigError(
                f"BALLOONS_FLY_CPU_KIND {kind!r} is not a Fly CPU kind: expected "
                f"{' or '.join(FLY_CPU_KINDS)}"
            )
        return cls(
            token=tok,
            app=name,
            api_url=url,
            image=img,
            region=primary[0] if primary else None,
            fallback_regions=tuple(r for r in fallbacks if r not in primary),
            cpu_kind=kind,
        )
