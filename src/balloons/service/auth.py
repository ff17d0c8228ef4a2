"""API keys of the job service: scopes, their store in Redis, and the bearer check.

A key is ``bk_`` and 43 random URL-safe characters, shown once when it is made
(``balloons keys create``). Redis keeps only its SHA-256 digest, under the key's name and
scopes (``NS:service:keys``, :mod:`balloons.store.keys`): reading Redis gives no key. A
request carries it as ``Authorization: Bearer KEY``. The bootstrap key
(``BALLOONS_SERVICE_TOKEN``, read by the CLI) is an ``admin`` key that is never stored.

Scopes: ``jobs:write`` (submit, cancel), ``jobs:read`` (read jobs, logs, tasks, pools) and
``admin`` (everything). A revoked key stops working within :data:`CACHE_TTL` seconds (the
time a looked-up key is remembered by one service process).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..store.keys import service_keys_key
from ..untrusted import describe, timestamp
from .problems import Problem

if TYPE_CHECKING:
    from ..store.writes import Store

SCOPES = ("jobs:write", "jobs:read", "admin")
#: A key's name: lower-case letters, digits, ``.``, ``_`` and ``-``.
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")
KEY_PREFIX = "bk_"
#: Shortest bootstrap token accepted.
MIN_TOKEN_LENGTH = 16
#: Seconds a service process remembers a key it looked up (and a key it did not find).
CACHE_TTL = 1.0
_MAX_CACHE = 10_000

# Adds a key unless its name is taken: one script, so two creates of one name cannot both win.
_CREATE = """
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local ok, d = pcall(cjson.decode, v)
  if ok and type(d) == 'table' and d['name'] == ARGV[3] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Drops every key of a name; returns how many.
_REVOKE = """
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local ok, d = pcall(cjson.decode, all[i + 1])
  if ok and type(d) == 'table' and d['name'] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i]); n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and its scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether this principal may use ``scope`` (``admin`` may use any)."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class KeyInfo:
    """A stored key as ``balloons keys list`` shows it (never the key itself)."""

    name: str
    scopes: tuple[str, ...]
    created: float | None
    prefix: str  # the first characters of its digest, to tell keys of one name apart


def digest(key: str) -> str:
    """The SHA-256 hex digest of a key: what Redis keeps."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def parse_scopes(raw: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes from ``"jobs:write,jobs:read"`` (or a list); ``ConfigError`` naming a bad one."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item not in SCOPES:
            raise ConfigError(f"unknown scope {item!r}: expected some of {', '.join(SCOPES)}")
        if item not in out:
            out.append(item)
    if not out:
        raise ConfigError(f"a key needs at least one scope: some of {', '.join(SCOPES)}")
    return tuple(out)


def _principal(raw: object) -> Principal | None:
    """The key a stored entry describes; None for an entry balloons did not write."""
    try:
        d = json.loads(raw) if isinstance(raw, bytes | str) else None
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return None
    if not isinstance(d, dict):
        return None
    name, scopes = d.get("name"), d.get("scopes")
    if not isinstance(name, str) or not NAME_RE.match(name) or not isinstance(scopes, list):
        return None
    if not scopes or not all(isinstance(s, str) and s in SCOPES for s in scopes):
        return None
    return Principal(name, frozenset(scopes))


class Keys:
    """The API keys of one namespace, in its Redis store."""

    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.key = service_keys_key(namespace)

    def create(self, name: str, scopes: Sequence[str]) -> str:
        """Make and store a key; returns it (the only time it is known). ``ConfigError`` for
        a bad name or scope, or a name already in use."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(
                f"key name {name!r} is not valid: expected 1-64 lower-case letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        checked = parse_scopes(scopes)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        entry = json.dumps({"name": name, "scopes": list(checked), "created": time.time()})
        with self.store.errors():
            made = self.store.redis.eval(_CREATE, 1, self.key, digest(key), entry, name)
        if not made:
            raise ConfigError(f"a key named {name!r} exists: revoke it first, or choose a name")
        return key

    def list(self) -> list[KeyInfo]:
        """Every stored key, by name (unreadable entries named as such)."""
        with self.store.errors():
            raw: dict[bytes, bytes] = self.store.redis.hgetall(self.key)
        out = []
        for d, entry in raw.items():
            p = _principal(entry)
            try:
                created = timestamp(json.loads(entry).get("created"))
            except (ValueError, AttributeError, RecursionError):
                created = None
            if p is None:
                out.append(KeyInfo(f"(unreadable: {describe(entry)[:40]})", (), None, ""))
                continue
            prefix = d.decode("ascii", "replace")[:8]
            out.append(KeyInfo(p.name, tuple(s for s in SCOPES if s in p.scopes), created, prefix))
        return sorted(out, key=lambda k: k.name)

    def revoke(self, name: str) -> int:
        """Drop the key(s) of ``name``; how many were dropped."""
        with self.store.errors():
            return int(self.store.redis.eval(_REVOKE, 1, self.key, name))

    async def find(self, key_digest: str) -> Principal | None:
        """The principal of a key digest, or None (unknown, revoked or altered)."""
        with self.store.errors():
            raw = await self.store.aredis.hget(self.key, key_digest)
        return None if raw is None else _principal(raw)


class Gate:
    """Checks a request's bearer key (the bootstrap token, else a stored key) and scope."""

    def __init__(self, keys: Keys, bootstrap: str | None, cache_ttl: float = CACHE_TTL) -> None:
        if bootstrap is not None and len(bootstrap) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"the service token is {len(bootstrap)} characters long: expected at least "
                f"{MIN_TOKEN_LENGTH} (python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        self.keys = keys
        self._bootstrap = bytes.fromhex(digest(bootstrap)) if bootstrap else None
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def __repr__(self) -> str:
        return "Gate(bootstrap=***)" if self._bootstrap else "Gate()"

    async def check(self, authorization: str | None, scope: str) -> Principal:
        """The principal of an ``Authorization`` header allowed ``scope``; else a 401 or 403
        problem."""
        scheme, _, value = (authorization or "").partition(" ")
        token = value.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("send 'Authorization: Bearer KEY'")
        d = digest(token)
        principal: Principal | None
        if self._bootstrap is not None and hmac.compare_digest(bytes.fromhex(d), self._bootstrap):
            principal = Principal("bootstrap", frozenset(SCOPES))
        else:
            principal = await self._lookup(d)
        if principal is None:
            raise _unauthenticated("the key is unknown or revoked")
        if not principal.allows(scope):
            raise Problem(
                403,
                "insufficient-scope",
                f"key {principal.name!r} has scopes {sorted(principal.scopes)}: this needs "
                f"{scope!r} (or 'admin')",
            )
        return principal

    async def _lookup(self, d: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(d)
        if hit is not None and now - hit[0] < self.cache_ttl:
            return hit[1]
        found = await self.keys.find(d)
        if self.cache_ttl > 0:
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            self._cache[d] = (now, found)
        return found


def _unauthenticated(why: str) -> Problem:
    return Problem(401, "unauthenticated", f"an API key is required: {why}")
