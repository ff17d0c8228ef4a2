"""Client-side access to the job records in Redis (redis-py, sync and asyncio): the writes.

Every multi-key change goes through a script from :mod:`.lua`, its reply decoded by
:mod:`.replies`; the connection and the plain reads are :mod:`.reads`, and
decoding a job's record :mod:`.records`. The submit write, the client's hottest path,
uses balloons' own RESP client.
Connection failures become :class:`~balloons.errors.StoreError` with the URL masked. On a
Redis Cluster, redis-py's cluster client (chosen when the store first connects) and the RESP
client's routes (:mod:`balloons.store.cluster`) send each command to its key's node.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, StoreError
from ..pools import MAX_MACHINES
from ..retry import RetryPlan
from ..untrusted import integer
from . import lua, queries, replies
from .keys import JobKeys, PoolKeys, pools_key, script_keys, slot_job
from .reads import _CONNECT_TIMEOUT, MAX_SECONDS, StoreReads, store_error
from .records import (
    CANCELLED_MESSAGE,
    INVALID_ERROR,
    INVALID_MESSAGE,
    INVALID_PROGRESS,
    UNVERIFIED_ERROR,
    UNVERIFIED_MESSAGE,
    UNVERIFIED_PROGRESS,
    attempts_from,
    job_info,
    read_status,
    record_error,
    slot_entry,
)
from .redisurl import DEFAULT_TIMEOUT, mask_url
from .replies import Cancelled, Lost, Picked, Submitted
from .resp import RespClient, RespError
from .wire import submit_wire

__all__ = [  # what callers have long imported from here
    "CANCELLED_MESSAGE",
    "INVALID_ERROR",
    "INVALID_MESSAGE",
    "INVALID_PROGRESS",
    "MAX_SECONDS",
    "UNVERIFIED_ERROR",
    "UNVERIFIED_MESSAGE",
    "UNVERIFIED_PROGRESS",
    "Store",
    "SubmitRequest",
    "attempts_from",
    "job_info",
    "read_status",
    "record_error",
    "slot_entry",
    "store_error",
]

#: Seconds between two ``SADD``s of one pool to the set of pools by one store's submits.
RELIST_S = 10.0
#: How long a submit polls for its reply before it sleeps on the socket (see
#: :attr:`balloons.store.resp.RespClient.spin`): a local Redis answers within it, and a submit
#: then costs no wake-up of its thread; a distant one does not, and the polling stops.
SUBMIT_SPIN_S = 200e-6


class SubmitRequest:
    """Everything the SUBMIT script needs besides the job's keys."""

    __slots__ = (
        "args",
        "compat",
        "cpus",
        "created",
        "due",
        "key_digest",
        "memory_mb",
        "payload",
        "pool_config",
        "priority",
        "sig",
        "ttl",
    )

    def __init__(
        self,
        *,
        payload: bytes,
        args: bytes,
        sig: str,
        created: float,
        ttl: int,
        pool_config: str,
        due: str | None,
        priority: int,
        cpus: int,
        memory_mb: int,
        key_digest: str,
        compat: str = "",
    ) -> None:
        self.payload = payload
        self.args = args
        self.sig = sig
        self.created = created
        self.ttl = ttl
        self.pool_config = pool_config
        self.due = due
        self.priority = priority
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.key_digest = key_digest
        #: The job's compatibility tag (:mod:`balloons.compat`): which machines may take it.
        self.compat = compat


class Store(StoreReads):
    """Redis access for one app: :class:`~balloons.store.reads.StoreReads` and the writes, each one
    script (the submit on balloons' own RESP client). ``url`` may carry a password; it is
    never shown unmasked."""

    def __init__(
        self,
        url: str,
        namespace: str,
        key: Callable[[], bytes | None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(url, namespace, key, timeout)
        self._idle: list[RespClient] = []  # connections of the submit path, not in use
        self._waiting: list[RespClient] = []  # connections of waits on results, not in use
        self._pid = os.getpid()
        self._listed: dict[str, float] = {}  # pool -> when a submit last added it to the set
        # The asyncio submit's own RESP clients, one per event loop (:mod:`.asubmit`); off for
        # good once the server turned out to be a cluster node.
        self._aresp: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._aresp_off = False

    def close(self) -> None:
        """Close the pooled submit connections and those of waits on results."""
        idle, self._idle, waiting, self._waiting = self._idle, [], self._waiting, []
        for client in (*idle, *waiting):
            client.close()
        super().close()

    async def aclose(self) -> None:
        """Close this event loop's asyncio clients (redis-py's and the submit's)."""
        import asyncio

        lean = self._aresp.pop(asyncio.get_running_loop(), None)
        if lean is not None:
            lean.close()
        await super().aclose()

    def _own_connections(self) -> None:
        """After a fork, the idle connections belong to the parent: this process makes its
        own (both lists at once, whichever path notices the fork first)."""
        if self._pid != os.getpid():
            self._pid, self._idle, self._waiting = os.getpid(), [], []

    def wait_done(self, jk: JobKeys, timeout: float) -> bool:
        """Block until the job's done token exists (no polling): True if it does, False when
        nothing woke it within ``timeout``."""
        # BLMOVE from the list to itself rotates the single token and leaves it in place, so
        # every waiter, now or later, is woken by the one LPUSH of the finish script.
        (got,) = self._wait([["BLMOVE", jk.done, jk.done, "LEFT", "LEFT", f"{timeout:.3f}"]])
        return got is not None

    def wait_record(self, jk: JobKeys, timeout: float) -> dict[str, bytes] | None:
        """:meth:`wait_done`, then the job's record, in one round trip: Redis runs the
        ``HGETALL`` sent behind the ``BLMOVE`` as soon as the done token wakes it. The record
        once woken; None when nothing woke it within ``timeout``."""
        wait = ["BLMOVE", jk.done, jk.done, "LEFT", "LEFT", f"{timeout:.3f}"]
        got, raw = self._wait([wait, ["HGETALL", jk.job]])
        if got is None or not isinstance(raw, list):
            return None
        return {bytes(raw[i]).decode(): raw[i + 1] for i in range(0, len(raw) - 1, 2)}

    def _wait(self, commands: list[list[Any]]) -> list[Any]:
        """Commands led by a blocking one whose block time is its last argument, on a
        connection of balloons' own RESP client (one per concurrent waiter), which costs less
        than redis-py's. Its replies may take the block time and the store's timeout; a
        server silent for longer fails it with a ``StoreError`` naming the wait."""
        self._own_connections()
        try:
            client = self._waiting.pop()
        except IndexError:
            client = RespClient(self.url, timeout=self.timeout, connect_timeout=_CONNECT_TIMEOUT)
        try:
            got = client.pipeline(commands, block=float(commands[0][-1]))
        except BaseException:
            client.close()  # whatever interrupted it may have left a reply unread
            self._waiting.append(client)
            raise
        self._waiting.append(client)
        for reply in got:
            if isinstance(reply, RespError):
                raise StoreError(f"Redis at {mask_url(self.url)} refused a command: {reply}")
        return got

    # ----------------------------------------------------------------- writes
    def _submit_cmd(self, jk: JobKeys, req: SubmitRequest) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the SUBMIT script (see :mod:`balloons.store.lua`)."""
        return script_keys(jk.pool, jk.ulid, idem=req.key_digest), [
            jk.pool.tag,
            repr(req.created),
            jk.ulid,
            req.payload,
            req.args,
            req.sig,
            req.ttl,
            req.pool_config,
            req.due or "",
            req.priority,
            req.cpus,
            req.memory_mb,
            req.key_digest,
            req.compat,
        ]

    def submit(self, jk: JobKeys, req: SubmitRequest) -> Submitted:
        """Store a job and place it (a new machine's slot, a warm machine, the queue, or the
        delayed set) in one round trip. Returns the SUBMIT script's reply."""
        return self.submit_start(jk, req)()

    def submit_start(self, jk: JobKeys, req: SubmitRequest) -> Callable[[], Submitted]:
        """:meth:`submit` in two halves: the write now; the function returned waits for the
        reply (call it once), so that the caller can work while Redis runs the script. On a
        connection of the submit path: balloons' own RESP client, since redis-py's pool
        checkout and pipeline machinery cost more than the rest of a submit. One connection
        per concurrent caller; one whose reply is never read is dropped, never reused."""
        k, a = self._submit_cmd(jk, req)
        wire = submit_wire(lua.sha(lua.SUBMIT), k, a)
        pool = jk.pool.pool
        before = self._list_pool(pool)
        self._own_connections()
        try:
            client = self._idle.pop()
        except IndexError:
            client = RespClient(
                self.url,
                timeout=self.timeout,
                connect_timeout=_CONNECT_TIMEOUT,
                spin=SUBMIT_SPIN_S,
            )
        try:
            read = client.eval_send(lua.SUBMIT, k, a, before, wire)
        except BaseException:
            self._unlist(pool, before)
            client.close()  # the write may have stopped halfway; reconnects when next used
            self._idle.append(client)
            raise

        def done() -> Submitted:
            try:
                raw = read()
            except RespError as exc:
                self._unlist(pool, before)
                self._idle.append(client)
                raise StoreError(
                    f"Redis at {mask_url(self.url)} refused a command: {exc}"
                ) from None
            except BaseException:
                self._unlist(pool, before)
                client.close()  # whatever interrupted it may have left a reply unread
                self._idle.append(client)
                raise
            self._idle.append(client)
            reply = replies.submit(raw)
            if reply.new_pool and not before:
                self._relist(pool)
            return reply

        return done

    def submit_batch(self, items: list[tuple[JobKeys, SubmitRequest]]) -> list[Submitted]:
        """:meth:`submit` for many jobs in one round trip, stored and placed by Redis in order,
        each as ``SUBMIT`` does. The replies, in the order of ``items``. The scripts Redis
        refused with ``NOSCRIPT`` (not cached there: they did not run) are sent again with the
        script itself, in order. On any other failure the exception is raised with the
        batch's fate unknown: the caller reports it."""
        return self.submit_batch_start(items)()

    def submit_batch_start(
        self, items: list[tuple[JobKeys, SubmitRequest]]
    ) -> Callable[[], list[Submitted]]:
        """:meth:`submit_batch` in two halves, as :meth:`submit_start`: the write now; the
        function returned reads the replies (call it once), so that the caller can work on
        the previous batch while Redis runs this one. One ``SUBMIT_MANY`` script per run of
        jobs of one pool (:mod:`balloons.store.batch`)."""
        from .batch import submit_batch_start

        return submit_batch_start(self, items, _CONNECT_TIMEOUT)

    def _relist(self, pool: str) -> None:
        """A submit found its pool's keys new (its first job, or a Redis that lost its data)
        without having sent the pool's ``SADD``: list the pool now, whenever this store last
        did."""
        with self.errors():
            self.redis.sadd(pools_key(self.namespace), pool)

    def _unlist(self, pool: str, before: list[list[Any]]) -> None:
        """A submit that carried the pool's ``SADD`` failed: the next one sends it again."""
        if before:
            self._listed.pop(pool, None)

    def _list_pool(self, pool: str) -> list[list[Any]]:
        """The ``SADD`` that keeps ``pool`` in the set of pools (how the supervisor and the
        listings find it), sent with a submit when this store has not sent it for
        :data:`RELIST_S` seconds: once per pool and period rather than with every job."""
        now = time.monotonic()
        if now - self._listed.get(pool, -RELIST_S) < RELIST_S:
            return []
        self._listed[pool] = now
        return [["SADD", pools_key(self.namespace), pool]]

    async def submit_async(self, jk: JobKeys, req: SubmitRequest) -> Submitted:
        """:meth:`submit` for asyncio, on balloons' own asyncio RESP client
        (:mod:`balloons.store.asubmit`)."""
        return (await self.submit_read_async(jk, req, []))[0]

    async def submit_read_async(
        self, jk: JobKeys, req: SubmitRequest, reads: list[list[Any]]
    ) -> tuple[Submitted, list[Any]]:
        """:meth:`submit_async`, with ``reads`` (commands) answered in the same round trip:
        SUBMIT's reply and theirs (see :func:`balloons.store.asubmit.submit_read`)."""
        from .asubmit import submit_read

        return await submit_read(self, jk, req, reads)

    async def _submit_redis_py(self, jk: JobKeys, req: SubmitRequest) -> Submitted:
        """:meth:`submit_async` on redis-py's asyncio client (a cluster's)."""
        import redis as redis_mod

        k, a = self._submit_cmd(jk, req)
        cmd = [len(k), *k, *a]
        before = self._list_pool(jk.pool.pool)
        try:
            with self.errors():
                for _ in range(2):
                    pipe = self.aredis.pipeline(transaction=False)
                    for cmd_before in before:
                        pipe.execute_command(*cmd_before)
                    pipe.evalsha(lua.sha(lua.SUBMIT), *cmd)
                    try:
                        *_, raw = await pipe.execute()
                        break
                    except redis_mod.exceptions.NoScriptError:
                        await self.aredis.script_load(lua.SUBMIT)
        except BaseException:
            self._unlist(jk.pool.pool, before)
            raise
        reply = replies.submit(raw)
        if reply.new_pool and not before:
            with self.errors():
                await self.aredis.sadd(pools_key(self.namespace), jk.pool.pool)
        return reply

    def lost(
        self,
        pk: PoolKeys,
        slot: str,
        ulid: str,
        attempt: int,
        reason: str,
        message: str,
        retry: RetryPlan | None,
        only_if_expired: bool = False,
    ) -> Lost:
        """Free a slot whose machine is gone and end its job's attempt with ``reason`` (the
        error sealed with the app's secret)."""
        from ..control.reclaim import lost_args

        secret = self.signing_key()
        if secret is None:
            raise ConfigError(
                f"cannot end the attempt of slot {slot}: its error is sealed with the app's "
                "signing key, and none is set (BALLOONS_SECRET)"
            )
        args = lost_args(secret, pk, slot, ulid, attempt, reason, message, retry, only_if_expired)
        return replies.lost(self.eval(lua.LOST, pk, *args, jobs=(ulid, slot_job(slot))))

    def requeue(self, pk: PoolKeys, slot: str, ulid: str, fresh: str) -> bool:
        """Queue the job of a slot whose launch has to wait; the slot, now jobless, is renamed
        ``FRESH-0``. False when the job or the slot has moved on."""
        return replies.flag("REQUEUE", self.eval(lua.REQUEUE, pk, slot, ulid, fresh, jobs=(ulid,)))

    def pick_machine(self, pk: PoolKeys, slot: str, fresh: str) -> Picked | None:
        """Turn a granted slot into a machine's own in a pool with standby machines
        (:data:`lua.PICK_MACHINE`): a stopped machine to start, or one to create; None when there
        is nothing to launch."""
        return replies.pick_machine(self.eval(lua.PICK_MACHINE, pk, slot, fresh))

    def start_failed(
        self, pk: PoolKeys, slot: str, machine: str, fresh: str, size: tuple[int, int] | None = None
    ) -> bool:
        """A standby machine failed to start: its slot, renamed ``FRESH-0``, waits for a new
        machine (of ``size``, CPUs and MB, when given). False when the slot has moved on (the
        machine started after all)."""
        raw = self.eval(lua.START_FAILED, pk, slot, machine, fresh, *(size or ()))
        return replies.flag("START_FAILED", raw)

    def trim_standby(self, pk: PoolKeys, keep: int | None = None) -> list[str]:
        """Drop standby machines beyond ``keep`` (default: the pool's standby setting) from the
        pool's set; their ids, for the caller to destroy."""
        if keep is None:  # read here, so that a setting altered in Redis counts as 0
            with self.errors():
                keep = integer(self.redis.hget(pk.cfg, "standby"), 0, MAX_MACHINES) or 0
        return replies.names("TRIM_STANDBY", self.eval(lua.TRIM_STANDBY, pk, keep))

    def confirm_launch(self, pk: PoolKeys, slot: str) -> bool:
        """Renew the boot lease of a slot whose machine is about to be launched; False when
        the slot is gone or already claimed, or was given back because it has no job and
        nothing is queued (nothing to launch)."""
        return replies.flag("CONFIRM_LAUNCH", self.eval(lua.CONFIRM_LAUNCH, pk, slot))

    def cancel(self, jk: JobKeys) -> Cancelled:
        """Mark a job cancelled. Returns its status before (code ``OK``), or code ``REFUSED``
        when it had ended; the slot and machine it held."""
        return self.run(queries.cancel(jk))

    def note_attempt(self, pk: PoolKeys, ulid: str, attempt: int, note: str) -> None:
        """Add a note to an attempt's record (e.g. the regions that refused its machine)."""
        self.eval(lua.NOTE_ATTEMPT, pk, ulid, attempt, note, jobs=(ulid,))

    def launched(self, pk: PoolKeys, slot: str, machine: str) -> bool:
        """Name the machine just launched for a slot with no job in the slot's entry, while the
        slot still waits for it (see :data:`lua.LAUNCHED`)."""
        return replies.flag("LAUNCHED", self.eval(lua.LAUNCHED, pk, slot, machine))

    def forget(self, jk: JobKeys) -> None:
        """Delete the job's record, attempts, done token and logs now."""
        self.run(queries.forget(jk))
