"""Client-side access to the job records in Redis (redis-py, sync and asyncio).

Every multi-key change goes through a script from :mod:`balloons.lua`; reads are plain
commands. The submit write, the client's hottest path, uses balloons' own RESP client.
Connection failures become :class:`~balloons.errors.StoreError` with the URL masked.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import lua
from .errors import StoreError
from .keys import JobKeys, PoolKeys, pools_key
from .resp import RespClient, RespError, mask_url
from .status import AttemptInfo, JobInfo, JobStatus

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

_CONNECT_TIMEOUT = 5.0  # seconds to connect to Redis; commands wait as long as they take


def _decode(raw: dict[bytes, bytes]) -> dict[str, bytes]:
    return {k.decode(): v for k, v in raw.items()}


def job_info(job_id: str, rec: dict[str, bytes], attempts: dict[bytes, bytes]) -> JobInfo:
    """Build a :class:`JobInfo` from a raw job hash and its attempts hash."""

    def s(name: str) -> str | None:
        v = rec.get(name)
        return v.decode() if v else None

    def f(name: str) -> float | None:
        v = s(name)
        return float(v) if v else None

    try:
        payload = json.loads(rec.get("payload") or b"{}")
    except ValueError:
        payload = {}
    error: dict[str, Any] = {}
    if rec.get("error"):
        try:
            error = json.loads(rec["error"])
        except ValueError:
            error = {"message": rec["error"].decode("utf-8", "replace")}
    tries = sorted(
        (AttemptInfo.from_dict(json.loads(v)) for v in attempts.values()), key=lambda a: a.number
    )
    return JobInfo(
        id=job_id,
        task=str(payload.get("task", "?")) if isinstance(payload, dict) else "?",
        pool=job_id.rpartition(".")[0],
        status=JobStatus(s("status") or "QUEUED"),
        attempt=int(s("attempt") or 0),
        machine_id=s("machine"),
        created_at=f("created") or 0.0,
        started_at=f("started"),
        finished_at=f("finished"),
        reason=s("reason"),
        error_type=error.get("type") or None,
        error_message=error.get("message") or None,
        traceback=error.get("traceback") or None,
        attempts=tuple(tries),
    )


class Store:
    """Redis access for one app: ``url`` may carry a password; it is never shown unmasked."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._idle: list[RespClient] = []  # connections of the submit path, not in use
        self._pid = os.getpid()
        self._sync: Any = None  # redis.Redis; redis-py's own annotations are too loose to help
        # One asyncio client per event loop: a client is bound to the loop that made it.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"Store({mask_url(self.url)!r}, namespace={self.namespace!r})"

    @property
    def redis(self) -> Any:
        if self._sync is None:
            import redis as redis_mod

            self._sync = redis_mod.Redis.from_url(self.url, socket_connect_timeout=_CONNECT_TIMEOUT)
        return self._sync

    @property
    def aredis(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            import redis.asyncio as aredis_mod

            client = self._async[loop] = aredis_mod.Redis.from_url(
                self.url, socket_connect_timeout=5
            )
        return client

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn redis-py connection errors into StoreError naming the (masked) URL."""
        import redis as redis_mod

        try:
            yield
        except (redis_mod.ConnectionError, redis_mod.TimeoutError, OSError) as exc:
            raise StoreError(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None
        except redis_mod.ResponseError as exc:
            raise StoreError(f"Redis at {mask_url(self.url)} refused a command: {exc}") from None

    def keys(self, job_id: str) -> JobKeys:
        return JobKeys.of(self.namespace, job_id)

    # ----------------------------------------------------------------- writes
    def submit_args(
        self, jk: JobKeys, payload: bytes, args: bytes, sig: str, created: float, ttl: int
    ) -> tuple[list[str], list[Any]]:
        return (
            [jk.job, jk.attempts, jk.pool.jobs],  # attempts: same slot, written at claim
            [payload, args, sig, repr(created), ttl, jk.ulid],
        )

    def submit(
        self, jk: JobKeys, payload: bytes, args: bytes, sig: str, created: float, ttl: int
    ) -> None:
        k, a = self.submit_args(jk, payload, args, sig, created, ttl)
        ok = self._eval(
            lua.SUBMIT, k, a, before=[["SADD", pools_key(self.namespace), jk.pool.pool]]
        )
        if ok != 1:
            raise StoreError(f"job id {jk.job_id} already exists")

    def _eval(self, script: str, keys: list[str], args: list[Any], before: list[list[Any]]) -> Any:
        """``before`` and one script (``EVALSHA``) in a single write, on a connection of the
        submit path: balloons' own RESP client, since redis-py's pool checkout and pipeline
        machinery cost more than the rest of a submit. One client per concurrent caller."""
        if self._pid != os.getpid():  # forked: the idle connections belong to the parent
            self._pid, self._idle = os.getpid(), []
        try:
            client = self._idle.pop()
        except IndexError:
            client = RespClient(self.url, timeout=None, connect_timeout=_CONNECT_TIMEOUT)
        try:
            return client.eval(script, keys, args, before)
        except RespError as exc:
            raise StoreError(f"Redis at {mask_url(self.url)} refused a command: {exc}") from None
        except BaseException:
            client.close()  # whatever interrupted it may have left a reply unread
            raise
        finally:
            self._idle.append(client)

    async def submit_async(
        self, jk: JobKeys, payload: bytes, args: bytes, sig: str, created: float, ttl: int
    ) -> None:
        k, a = self.submit_args(jk, payload, args, sig, created, ttl)
        with self.errors():
            pipe = self.aredis.pipeline(transaction=False)
            pipe.sadd(pools_key(self.namespace), jk.pool.pool)
            pipe.eval(lua.SUBMIT, len(k), *k, *a)
            _, ok = await pipe.execute()
        if ok != 1:
            raise StoreError(f"job id {jk.job_id} already exists")

    def fail(self, jk: JobKeys, attempt: int, reason: str, message: str) -> bool:
        """Fail an attempt that never ran (e.g. its machine could not be launched)."""
        error = json.dumps({"type": "", "message": message, "traceback": "", "reason": reason})
        with self.errors():
            ok = self.redis.eval(
                lua.FINISH,
                3,
                jk.job,
                jk.attempts,
                jk.done,
                attempt,
                "",
                "FAILED",
                "",
                error,
                reason,
                time.time(),
            )
        return bool(ok == 1)

    def forget(self, jk: JobKeys) -> None:
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(jk.job, jk.attempts, jk.done)
            pipe.zrem(jk.pool.jobs, jk.ulid)
            pipe.execute()

    # ------------------------------------------------------------------ reads
    def status(self, jk: JobKeys) -> JobStatus | None:
        with self.errors():
            raw = self.redis.hget(jk.job, "status")
        return JobStatus(raw.decode()) if raw else None

    def record(self, jk: JobKeys) -> dict[str, bytes]:
        with self.errors():
            return _decode(self.redis.hgetall(jk.job))

    async def record_async(self, jk: JobKeys) -> dict[str, bytes]:
        with self.errors():
            return _decode(await self.aredis.hgetall(jk.job))

    def info(self, jk: JobKeys) -> JobInfo | None:
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(jk.job)
            pipe.hgetall(jk.attempts)
            rec, attempts = pipe.execute()
        return job_info(jk.job_id, _decode(rec), attempts) if rec else None

    def wait_done(self, jk: JobKeys, timeout: float) -> bool:
        """Block until the job's done token exists (no polling): True if it does."""
        # BLMOVE from the list to itself rotates the single token and leaves it in place, so
        # every waiter, now or later, is woken by the one LPUSH of the finish script.
        import redis as redis_mod

        with self.errors():
            try:
                got = self.redis.blmove(jk.done, jk.done, timeout, "LEFT", "LEFT")
            except redis_mod.TimeoutError:
                return False  # a read timeout at the edge of the block: the caller re-reads
        return got is not None

    async def wait_done_async(self, jk: JobKeys, timeout: float) -> bool:
        import redis as redis_mod

        with self.errors():
            try:
                got = await self.aredis.blmove(jk.done, jk.done, timeout, "LEFT", "LEFT")
            except redis_mod.TimeoutError:
                return False
        return got is not None

    def pools(self) -> list[str]:
        with self.errors():
            return sorted(p.decode() for p in self.redis.smembers(pools_key(self.namespace)))

    def recent(self, limit: int = 50, pool: str | None = None) -> list[JobInfo]:
        """The newest jobs, across pools unless one is named."""
        pools = [pool] if pool else self.pools()
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for p in pools:
                pipe.zrevrange(PoolKeys(self.namespace, p).jobs, 0, limit - 1, withscores=True)
            ranked = sorted(
                (
                    (score, f"{p}.{ulid.decode()}")
                    for p, rows in zip(pools, pipe.execute(), strict=True)
                    for ulid, score in rows
                ),
                reverse=True,
            )[:limit]
            pipe = self.redis.pipeline(transaction=False)
            for _, jid in ranked:
                jk = self.keys(jid)
                pipe.hgetall(jk.job)
                pipe.hgetall(jk.attempts)
            raw = pipe.execute()
        out = []
        for i, (_, jid) in enumerate(ranked):
            rec, attempts = raw[2 * i], raw[2 * i + 1]
            if rec:
                out.append(job_info(jid, _decode(rec), attempts))
        return out

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            client.close()
        if self._sync is not None:
            self._sync.close()
            self._sync = None
