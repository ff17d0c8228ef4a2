"""The submit write for asyncio (:meth:`balloons.store.writes.Store.submit_async`): one write
on balloons' own asyncio RESP client (:mod:`balloons.store.aresp`), the pool's ``SADD`` when it
is due, ``EVALSHA SUBMIT`` and any reads the caller wants answered in the same round trip (the
job service reads the job it made back this way).

On a Redis Cluster, the first redirect (or the cluster client the store already chose) turns
this path to redis-py's cluster client for good: a ``MOVED`` or ``ASK`` command did not run,
so sending it again there stores the job once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from . import lua, replies
from .aresp import AsyncResp
from .keys import pools_key
from .reads import _CONNECT_TIMEOUT
from .redisurl import mask_url
from .replies import Submitted
from .resp import Redirect, RespError
from .wire import submit_wire

if TYPE_CHECKING:
    from .keys import JobKeys
    from .writes import Store, SubmitRequest


async def submit_read(
    store: Store, jk: JobKeys, req: SubmitRequest, reads: list[list[Any]]
) -> tuple[Submitted, list[Any]]:
    """Store and place a job as ``SUBMIT`` does, with ``reads`` run right behind it in the same
    round trip: its decoded reply and theirs (error replies as
    :class:`~balloons.store.resp.RespError` values; a hash as a flat list, as RESP sends it)."""
    client = _client(store)
    if client is None:
        return await _submit_redis_py(store, jk, req, reads)
    k, a = store._submit_cmd(jk, req)
    pool = jk.pool.pool
    before = store._list_pool(pool)
    wire = submit_wire(lua.sha(lua.SUBMIT), k, a)
    try:
        got = await client.pipeline(
            [*before, ["EVALSHA", lua.sha(lua.SUBMIT), len(k), *k, *a], *reads],
            None if wire is None else _encode(before) + wire + _encode(reads),
        )
        raw = got[len(before)]
        if isinstance(raw, RespError) and str(raw).startswith("NOSCRIPT"):
            got = [
                *got[: len(before)],
                *await client.pipeline([["EVAL", lua.SUBMIT, len(k), *k, *a], *reads]),
            ]
            raw = got[len(before)]
    except BaseException:
        store._unlist(pool, before)
        raise
    if any(r.__class__ is Redirect for r in got):  # a cluster node: redis-py's client from now
        _redis_py_only(store)
        if raw.__class__ is Redirect:  # the script did not run: all of it again, there
            store._unlist(pool, before)
            return await _submit_redis_py(store, jk, req, reads)
        return await _redirected(store, pool, raw, got[: len(before)], reads)
    for r in got[: len(before) + 1]:
        if isinstance(r, RespError):
            store._unlist(pool, before)
            raise StoreError(f"Redis at {mask_url(store.url)} refused a command: {r}")
    reply = replies.submit(raw)
    if reply.new_pool and not before:
        (listed,) = await client.pipeline([["SADD", pools_key(store.namespace), pool]])
        if isinstance(listed, RespError):
            raise StoreError(f"Redis at {mask_url(store.url)} refused a command: {listed}")
    return reply, got[len(before) + 1 :]


async def _redirected(
    store: Store, pool: str, raw: Any, before: list[Any], reads: list[list[Any]]
) -> tuple[Submitted, list[Any]]:
    """The script ran on this node and other commands were redirected: the pool's listing
    and the reads (which may be run twice) are made again on redis-py's cluster client."""
    if isinstance(raw, RespError):
        raise StoreError(f"Redis at {mask_url(store.url)} refused a command: {raw}")
    reply = replies.submit(raw)
    if before or reply.new_pool:
        with store.errors():
            await store.aredis.sadd(pools_key(store.namespace), pool)
    return reply, await _read_redis_py(store, reads)


def _encode(commands: list[list[Any]]) -> bytes:
    from .resp import _encode as encode

    return encode(commands) if commands else b""


def _client(store: Store) -> AsyncResp | None:
    """This event loop's client of ``store``; None once the store is known to be a cluster's."""
    loop = asyncio.get_running_loop()
    client: AsyncResp | None = store._aresp.get(loop)
    if client is None and not store._aresp_off:
        if _is_cluster(store):
            store._aresp_off = True
            return None
        client = store._aresp[loop] = AsyncResp(store.url, store.timeout, _CONNECT_TIMEOUT)
    return client


def _is_cluster(store: Store) -> bool:
    """Whether the store's redis-py client, if it was made, is a cluster's."""
    if store._sync is None:
        return False
    from redis.cluster import RedisCluster

    return isinstance(store._sync, RedisCluster)


def _redis_py_only(store: Store) -> None:
    """Every loop's submits take redis-py's path from now on (a cluster's)."""
    store._aresp_off = True
    for client in list(store._aresp.values()):
        client.close()
    store._aresp.clear()


async def _submit_redis_py(
    store: Store, jk: JobKeys, req: SubmitRequest, reads: list[list[Any]]
) -> tuple[Submitted, list[Any]]:
    """The same on redis-py's asyncio client (a cluster's): the reads in a second round trip."""
    return await store._submit_redis_py(jk, req), await _read_redis_py(store, reads)


async def _read_redis_py(store: Store, reads: list[list[Any]]) -> list[Any]:
    if not reads:
        return []
    with store.errors():
        pipe = store.aredis.pipeline(transaction=False)
        for cmd in reads:
            pipe.execute_command(*cmd)
        got = await pipe.execute(raise_on_error=False)
    return [_as_resp(r) for r in got]


def _as_resp(reply: Any) -> Any:
    """A reply of redis-py as RESP sends it: an error as a value, a hash as a flat list."""
    if isinstance(reply, Exception):
        return RespError(str(reply))
    if isinstance(reply, dict):
        return [x for pair in reply.items() for x in pair]
    return reply
