"""Settings of the Fly backend, resolved at the edge like :mod:`balloons.config`'s: argument >
``BALLOONS_FLY_*`` > the variables Fly sets on its own machines > default. Only the Fly backend
imports this module, so machines never pay for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

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
        """Settings from the arguments, else ``env``'s ``BALLOONS_FLY_*`` variables, else what
        Fly sets on a machine (``FLY_APP_NAME``, ``FLY_IMAGE_REF``, ``FLY_REGION``), else the
        defaults; ``ConfigError`` naming the variable of a missing one."""
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
