"""``Idempotency-Key`` for ``POST /v1/jobs``: one job per key and body, for 24 hours.

Each key of each API key is one Redis string (``NS:service:idem:SHA``) holding JSON: the
digest of the request body, and either ``pending`` (a submit under way, with a random token
and a short TTL, so a crashed submit frees the key) or the job's id (for
:data:`TTL`). The first request takes the key with ``SET NX``; a request that finds it:

* done, same body: the same job again (``200``);
* any other body: ``422 idempotency-key-reused``;
* pending, same body: ``409 idempotency-in-flight`` (with ``Retry-After``).

The end of a submit is a compare-and-set on the token (one script), so a late submit never
overwrites the answer of another.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store.keys import ULID_RE, service_idem_key, split_job_id
from .problems import Problem

if TYPE_CHECKING:
    from ..store.writes import Store

#: How long a key is honoured once its job exists.
TTL = 24 * 3600
#: How long a submit may hold a key before another request may take it.
PENDING_TTL = 60
MAX_KEY_LENGTH = 255

_FINISH = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, d = pcall(cjson.decode, v)
if not ok or type(d) ~= 'table' or d['token'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class Claim:
    """A key taken for one submit (:meth:`Idempotency.finish` or ``abandon`` it)."""

    key: str
    body: str
    token: str


def check_header(raw: str) -> str:
    """The header's value, or a 400 problem naming what is wrong with it."""
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in raw):
        raise Problem(
            400,
            "invalid-idempotency-key",
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters, "
            f"got {len(raw)} characters",
        )
    return raw


def body_digest(body: object) -> str:
    """The digest of a parsed body: the same for the same JSON however it is spelled."""
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


class Idempotency:
    """The Idempotency-Keys of one namespace in Redis."""

    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    async def begin(self, principal: str, header: str, body: str) -> Claim | str:
        """Take the key for a new submit (a :class:`Claim`), or the id of the job a replay
        gets; a 409 or 422 problem otherwise."""
        name = hashlib.sha256(f"{principal}\n{header}".encode()).hexdigest()
        key = service_idem_key(self.namespace, name)
        token = secrets.token_hex(16)
        pending = json.dumps({"body": body, "token": token})
        r = self.store.aredis
        for _ in range(3):  # the key may expire between the SET and the GET
            with self.store.errors():
                if await r.set(key, pending, nx=True, ex=PENDING_TTL):
                    return Claim(key, body, token)
                found = await r.get(key)
            if found is not None:
                return _existing(found, body)
        raise Problem(409, "idempotency-in-flight", "the key is changing hands", retry_after=1)

    async def finish(self, claim: Claim, job_id: str) -> None:
        """Record the job a claimed key made (for :data:`TTL`)."""
        done = json.dumps({"body": claim.body, "job": job_id})
        with self.store.errors():
            await self.store.aredis.eval(_FINISH, 1, claim.key, claim.token, done, TTL)

    async def abandon(self, claim: Claim) -> None:
        """Free the key of a submit that stored no job."""
        with self.store.errors():
            await self.store.aredis.eval(_FINISH, 1, claim.key, claim.token, "", 0)


def _existing(raw: bytes, body: str) -> str:
    """The job of a key already taken (see the module's rules)."""
    try:
        d: Any = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        d = None
    if not isinstance(d, dict) or not isinstance(d.get("body"), str):
        raise Problem(
            409,
            "idempotency-record-invalid",
            "what is stored for this Idempotency-Key cannot be read: use another key",
        )
    if d["body"] != body:
        raise Problem(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used with another request body",
        )
    job = d.get("job")
    if job is None:
        raise Problem(
            409,
            "idempotency-in-flight",
            "a request with this Idempotency-Key is being processed",
            retry_after=1,
        )
    if not isinstance(job, str) or not _is_job_id(job):
        raise Problem(
            409,
            "idempotency-record-invalid",
            "what is stored for this Idempotency-Key cannot be read: use another key",
        )
    return job


def _is_job_id(raw: str) -> bool:
    try:
        split_job_id(raw)
    except ValueError:
        return False
    return bool(ULID_RE.match(raw.rpartition(".")[2]))
