"""Reading a store: the connection to Redis (redis-py, sync and asyncio), running a script,
and every plain read of job records, indexes, slots and pools. :class:`balloons.store.writes.Store`
builds the writes on it. Connection failures become :class:`~balloons.errors.StoreError`
with the URL masked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import StoreDataError, StoreError
from ..info import JobInfo, JobStatus
from ..untrusted import json_object, number, shown, text
from . import lua, queries, replies
from .keys import (
    JobKeys,
    PoolKeys,
    machine_key,
    machines_key,
    script_keys,
)
from .queries import Query, Script, Step
from .records import (
    job_info,
    slot_entry,
)
from .redisurl import DEFAULT_TIMEOUT, mask_url, timeout_of

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

T = TypeVar("T")

_CONNECT_TIMEOUT = 5.0  # seconds to connect to Redis (a reply's: the store's timeout)
MAX_SECONDS = queries.MAX_SECONDS


class StoreReads:
    """Redis access for one app: the connection, the scripts, and every plain read (the
    writes are :class:`balloons.store.writes.Store`'s). ``url`` may carry a password; it is never
    shown unmasked."""

    def __init__(
        self,
        url: str,
        namespace: str,
        key: Callable[[], bytes | None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.namespace = namespace
        #: Seconds a reply may take (a blocking wait's: its block time and this), the URL's
        #: ``socket_timeout`` option first (see :data:`balloons.store.redisurl.DEFAULT_TIMEOUT`).
        self.timeout = timeout_of(url, timeout)
        #: Connections an asyncio client opens at most (None: redis-py's default, 100). A
        #: server holding one per blocked waiter (the job service's long-polls) raises it.
        self.async_connections: int | None = None
        self._key = key  # the app's signing key, read when first needed
        self._sync: Any = None  # redis.Redis; redis-py's own annotations are too loose to help
        # Made once for all threads: a second client, built beside it and dropped, would close
        # its pool on collection, cutting whatever command a thread still had in flight on it.
        self._sync_lock = threading.Lock()
        # One asyncio client per event loop: a client is bound to the loop that made it.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"Store({mask_url(self.url)!r}, namespace={self.namespace!r})"

    @property
    def redis(self) -> Any:
        """redis-py's client: ``redis.Redis``, or ``redis.cluster.RedisCluster`` when the
        server is a cluster node (asked once: ``INFO cluster``)."""
        client = self._sync
        if client is None:
            with self._sync_lock:
                client = self._sync
                if client is None:
                    from .cluster import redis_client

                    client = self._sync = redis_client(self.url, _CONNECT_TIMEOUT, self.timeout)
        return client

    @property
    def aredis(self) -> Any:
        """The asyncio client of the running event loop (one per loop, made on first use; a
        cluster client when the sync client found a cluster)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            from redis.cluster import RedisCluster

            from .cluster import async_redis_client

            # Cluster or not, as the sync client found (a round trip once per store).
            cluster = isinstance(self.redis, RedisCluster)
            client = self._async[loop] = async_redis_client(
                self.url, _CONNECT_TIMEOUT, self.timeout, cluster, self.async_connections
            )
        return client

    async def aclose(self) -> None:
        """Close this event loop's asyncio client (before the loop ends, to leave no socket
        for the garbage collector)."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    @contextmanager
    def errors(self, awaited: str = "") -> Iterator[None]:
        """Turn redis-py's errors into StoreError naming the (masked) URL; a reply that did
        not come within :attr:`timeout` names what was ``awaited`` (default: a command's
        reply)."""
        import redis as redis_mod

        try:
            yield
        except redis_mod.TimeoutError as exc:
            if "connect" in str(exc).lower():  # no connection made within _CONNECT_TIMEOUT
                raise store_error(self.url, exc) from None
            raise StoreError(
                f"Redis at {mask_url(self.url)} sent no reply within {self.timeout:g} s: "
                f"expected {awaited or 'the reply to a command'} (a server that accepts "
                "connections and never answers, or a network path that went silent; the "
                "timeout is BALLOONS_REDIS_TIMEOUT, App(redis_timeout=...) or the URL's "
                "socket_timeout option)"
            ) from None
        except (
            redis_mod.RedisError,
            OSError,
            redis_mod.exceptions.RedisClusterException,  # no node answers, a slot unserved
        ) as exc:
            raise store_error(self.url, exc) from None

    def signing_key(self) -> bytes | None:
        """The app's signing key, which verifies what machines wrote (None: none is set)."""
        return self._key() if self._key is not None else None

    def keys(self, job_id: str) -> JobKeys:
        """The keys of job ``job_id`` in this store's namespace."""
        return JobKeys.of(self.namespace, job_id)

    def _tagged(self, pk: PoolKeys, jobs: Sequence[str], args: Sequence[Any]) -> list[Any]:
        keys = script_keys(pk, *jobs)
        return [len(keys), *keys, pk.tag, time.time(), *args]

    def eval(self, script: str, pk: PoolKeys, *args: Any, jobs: Sequence[str] = ()) -> Any:
        """Run one of :mod:`balloons.store.lua`'s scripts against pool ``pk``, given the keys of
        the pool and of the ``jobs`` (ULIDs) that its arguments name. Returns its raw reply,
        for :mod:`balloons.store.replies` to decode."""
        import redis as redis_mod

        cmd = self._tagged(pk, jobs, args)
        with self.errors():
            try:
                return self.redis.evalsha(lua.sha(script), *cmd)
            except redis_mod.exceptions.NoScriptError:
                return self.redis.eval(script, *cmd)

    async def eval_async(
        self, script: str, pk: PoolKeys, *args: Any, jobs: Sequence[str] = ()
    ) -> Any:
        """:meth:`eval` on the asyncio client."""
        import redis as redis_mod

        cmd = self._tagged(pk, jobs, args)
        with self.errors():
            try:
                return await self.aredis.evalsha(lua.sha(script), *cmd)
            except redis_mod.exceptions.NoScriptError:
                return await self.aredis.eval(script, *cmd)

    # ---------------------------------------------------------------- queries
    def run(self, query: Query[T]) -> T:
        """Run a query of :mod:`balloons.store.queries` on redis-py's client."""
        try:
            step = next(query)
            while True:
                step = query.send(self._send(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def run_async(self, query: Query[T]) -> T:
        """Run a query of :mod:`balloons.store.queries` on redis-py's asyncio client (the same
        commands and decoding as :meth:`run`)."""
        try:
            step = next(query)
            while True:
                step = query.send(await self._send_async(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _send(self, step: Step) -> Any:
        if isinstance(step, Script):
            return self.eval(step.script, step.pk, *step.args, jobs=step.jobs)
        if not step:
            return []
        tolerant = isinstance(step, queries.Tolerant)
        with self.errors():
            if len(step) == 1 and not tolerant:  # no pipeline's machinery for one command
                method, args, kwargs = step[0]
                return [getattr(self.redis, method)(*args, **kwargs)]
            pipe = self.redis.pipeline(transaction=False)
            for method, args, kwargs in step:
                getattr(pipe, method)(*args, **kwargs)
            return pipe.execute(raise_on_error=not tolerant)

    async def _send_async(self, step: Step) -> Any:
        if isinstance(step, Script):
            return await self.eval_async(step.script, step.pk, *step.args, jobs=step.jobs)
        if not step:
            return []
        tolerant = isinstance(step, queries.Tolerant)
        with self.errors():
            if len(step) == 1 and not tolerant:
                method, args, kwargs = step[0]
                return [await getattr(self.aredis, method)(*args, **kwargs)]
            pipe = self.aredis.pipeline(transaction=False)
            for method, args, kwargs in step:
                getattr(pipe, method)(*args, **kwargs)
            return await pipe.execute(raise_on_error=not tolerant)

    # ------------------------------------------------------------------ reads
    def standby(self, pk: PoolKeys) -> dict[str, dict[str, Any]]:
        """The pool's stopped machines kept to be started again: machine id -> record."""
        with self.errors():
            raw = self.redis.hgetall(pk.standby)
        return {k.decode("utf-8", "replace"): json_object(v) or {} for k, v in raw.items()}

    def slot_info(self, pk: PoolKeys, slot: str) -> dict[str, Any] | None:
        """The slot's entry (job, attempt, machine, size, state, deadline); ``None`` when there
        is none or it cannot be read."""
        with self.errors():
            raw = self.redis.hget(pk.slot, slot)
        return slot_entry(raw) if raw else None

    def slots(self, pk: PoolKeys) -> list[tuple[str, float, dict[str, Any]]]:
        """Every slot of a pool: (slot, lease end, info)."""
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrange(pk.slots, 0, -1, withscores=True)
            pipe.hgetall(pk.slot)
            leases, infos = pipe.execute()
        out = []
        for member, lease in leases:
            raw = infos.get(member)
            out.append((member.decode("utf-8", "replace"), lease, slot_entry(raw) if raw else {}))
        return out

    def pool_stats(self, pool: str) -> dict[str, Any]:
        """Cap, machines (starting, running, idle), queued and delayed counts of one pool;
        ``unreadable``: None, or which of its keys holds another kind of value than balloons
        writes (altered in Redis), the counts then 0."""
        pk = PoolKeys(self.namespace, pool)
        keys = (pk.cfg, pk.slot, pk.queue, pk.delayed, pk.standby)
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for key, method in zip(
                keys, ("hgetall", "hvals", "zcard", "zcard", "hlen"), strict=True
            ):
                getattr(pipe, method)(key)
            got = pipe.execute(raise_on_error=False)
            bad = [key for key, reply in zip(keys, got, strict=True) if _wrong_type(reply)]
        if bad:
            got = [{}, [], 0, 0, 0]
        cfg, infos, queued, delayed, standby = got
        states = [slot_entry(raw).get("state", "?") for raw in infos]

        def setting(name: str) -> float:
            # The pool's settings as the last submit wrote them; 0 when altered in Redis.
            return number(cfg.get(name.encode()), 0, 1e12) or 0

        return {
            "pool": pool,
            "max_machines": int(setting("cap")),
            "min_machines": int(setting("min")),
            "idle_timeout": setting("idle"),
            "standby_max": int(setting("standby")),
            "standby": int(standby),
            # What the scripts run a job of the pool with: anything else stored is the default.
            "isolation": replies.isolation(cfg.get(b"iso", b"")),
            "machines": len(states),
            "starting": states.count("starting"),
            "running": states.count("running"),
            "idle": states.count("idle"),
            "queued": int(queued),
            "delayed": int(delayed),
            "unreadable": (
                f"{', '.join(bad)}: another kind of value than balloons writes (altered in Redis?)"
                if bad
                else None
            ),
        }

    def queue_position(self, jk: JobKeys) -> int | None:
        """The job's place in its pool's queue (1 for the next to get a machine); ``None`` when
        it is not queued."""
        return self.run(queries.queue_position(jk))

    def server_time(self, pk: PoolKeys | None = None) -> float:
        """The Redis server's clock (``TIME``), in seconds: the one every lease, deadline and
        due time is written in, so what is compared with them. On a cluster, the clock of the
        node serving pool ``pk`` (:data:`lua.CLOCK`), else of any node."""
        with self.errors():
            raw = self.eval(lua.CLOCK, pk) if pk is not None else self.redis.time()
        return replies.clock(raw)

    def status(self, jk: JobKeys) -> JobStatus | None:
        """The job's status (``INVALID`` for a record that has none it could have); None when
        there is no record."""
        return self.run(queries.status(jk))

    def record(self, jk: JobKeys) -> dict[str, bytes]:
        """The job's hash as stored (an empty dict when there is none)."""
        return self.run(queries.record(jk))

    async def record_async(self, jk: JobKeys) -> dict[str, bytes]:
        """:meth:`record` for asyncio."""
        return await self.run_async(queries.record(jk))

    def info(self, jk: JobKeys) -> JobInfo | None:
        """The job's status, attempts, timestamps and error, verified with the signing key;
        ``None`` when there is no record."""
        return self.run(queries.info(jk, self.signing_key()))

    async def wait_done_async(self, jk: JobKeys, timeout: float) -> bool:
        """:meth:`~balloons.store.writes.Store.wait_done` for asyncio, blocking for at most
        :meth:`block_cap` seconds (False after that, as after ``timeout``): redis-py's timeout
        is one for every command, and a block must end within it."""
        # BLMOVE from the list to itself rotates the single token and leaves it in place, so
        # every waiter, now or later, is woken by the one LPUSH of the finish script.
        block = self.block_cap(timeout)
        with self.errors(f"the BLMOVE wait of {block:g} s for job {jk.job_id}'s end"):
            got = await self.aredis.blmove(jk.done, jk.done, block, "LEFT", "LEFT")
        return got is not None

    def block_cap(self, seconds: float) -> float:
        """``seconds`` of a blocking command on a redis-py client, cut to half its reply
        timeout (:attr:`timeout`): its reply then comes well within that timeout, and a
        server that went silent is noticed at it."""
        return min(seconds, self.timeout / 2)

    def pools(self) -> list[str]:
        """The names of the namespace's pools (none, with a warning, when their index holds
        another kind of value than a set: altered in Redis)."""
        return self.run(queries.pools(self.namespace))

    def pool_index(self) -> tuple[list[str], str]:
        """The names of the namespace's pools and ``''``, or none and why their index cannot be
        read."""
        return self.run(queries.pool_index(self.namespace))

    def recent(self, limit: int = 50, pool: str | None = None) -> list[JobInfo]:
        """The newest jobs, across pools unless one is named."""
        return self.run(queries.recent(self.namespace, limit, pool, self.signing_key()))

    def index(self, pools: Sequence[str], limit: int, offset: int = 0) -> list[tuple[float, str]]:
        """``(created, job id)`` of each pool's jobs from the ``offset``-th newest, ``limit``
        of them per pool, newest first across pools."""
        return self.run(queries.index(self.namespace, pools, limit, offset))

    def index_sizes(self, pools: Sequence[str]) -> list[int]:
        """How many jobs each pool's index holds."""
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for p in pools:
                pipe.zcard(PoolKeys(self.namespace, p).jobs)
            return [int(n) for n in pipe.execute()]

    def fields(self, job_ids: Sequence[str], names: Sequence[str]) -> list[dict[str, bytes]]:
        """The named fields of each job's record (``{}`` for a record that is gone)."""
        return self.run(queries.fields(self.namespace, job_ids, names))

    def snapshot(self, jk: JobKeys, names: Sequence[str]) -> JobInfo | None:
        """:meth:`info` from the named fields only (``status`` first), without the arguments."""
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(jk.job, names)
            pipe.hgetall(jk.attempts)
            row, attempts = pipe.execute()
        if row[0] is None:
            return None
        rec = {n: v for n, v in zip(names, row, strict=True) if v is not None}
        return job_info(jk.job_id, rec, attempts, self.signing_key())

    def attempts_of(self, job_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        """Each job's raw attempts hash (attempt number -> JSON), pipelined."""
        return self.run(queries.attempts_of(self.namespace, job_ids))

    def usage(self, pools: Sequence[str]) -> dict[str, dict[str, float | None]]:
        """Each pool's ``usage`` hash (``idle:CPUS:MB`` -> seconds); None for seconds that are
        not a number of seconds (altered in Redis)."""
        return self.run(queries.usage(self.namespace, pools))

    def progress(self, jk: JobKeys) -> tuple[float, str] | None:
        """The job's last reported progress and note, if its task reported any. Progress whose
        tag does not verify with the app's secret reads as 0 with a note saying so."""
        return self.run(queries.progress(jk, self.signing_key()))

    def machine_records(self, limit: int = 1000) -> list[dict[str, str]]:
        """The newest machine records (``id``, ``state``, ``pool``, ...), newest first."""
        with self.errors():
            ids = self.redis.zrevrange(machines_key(self.namespace), 0, limit - 1)
            names = [machine_key(self.namespace, mid.decode(errors="replace")) for mid in ids]
            raws = read_hashes(self.redis, names)
        out = []
        for mid, raw in zip(ids, raws, strict=True):
            if raw:  # every value as text, whatever bytes it holds; "id" is the key's own
                rec = {k.decode("utf-8", "replace"): text(v) or "" for k, v in raw.items()}
                out.append({**rec, "id": mid.decode("utf-8", "replace")})
        return out

    def close(self) -> None:
        """Close the sync client's connections."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None


#: The index rows' reader (see :func:`balloons.store.queries.job_ids`), by its long-standing name.
_job_ids = queries.job_ids


def _wrong_type(reply: object) -> bool:
    """Whether a pipelined reply is the refusal of a key of another kind (``WRONGTYPE``); any
    other error is raised (and said as :meth:`StoreReads.errors` says it)."""
    if isinstance(reply, BaseException):
        if "WRONGTYPE" not in str(reply):
            raise reply
        return True
    return False


def read_hashes(redis: Any, names: Sequence[str]) -> list[dict[bytes, bytes]]:
    """``HGETALL`` of each key, pipelined. A key that holds no hash (altered: ``WRONGTYPE``)
    reads as no record, with a log line, where it failed every record's read."""
    from redis.exceptions import ResponseError

    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    out = []
    for name, raw in zip(names, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(raw, ResponseError):
            logging.getLogger("balloons.store").warning(
                "record %s cannot be read, so it is skipped: %s", shown(repr(name)), raw
            )
            raw = {}
        elif isinstance(raw, BaseException):
            raise raw
        out.append(raw)
    return out


def store_error(url: str, exc: BaseException) -> StoreError:
    """What a redis-py error means, as a :class:`StoreError` naming the masked ``url``."""
    import redis as redis_mod

    where = mask_url(url)
    if isinstance(exc, redis_mod.exceptions.InvalidResponse):
        return StoreError(
            f"the server at {where} does not speak the Redis protocol (is it a Redis URL?): {exc}"
        )
    if isinstance(exc, redis_mod.ResponseError):
        kind = StoreDataError if "WRONGTYPE" in str(exc) else StoreError
        return kind(f"Redis at {where} refused a command: {exc}")
    if isinstance(
        exc,
        redis_mod.ConnectionError
        | redis_mod.TimeoutError
        | OSError
        | redis_mod.exceptions.RedisClusterException,
    ):
        return StoreError(f"cannot reach Redis at {where}: {exc}")
    return StoreError(f"Redis at {where} answered wrongly: {exc!r}")
