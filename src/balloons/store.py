"""Client-side access to the job records in Redis (redis-py, sync and asyncio).

Every multi-key change goes through a script from :mod:`balloons.lua`; reads are plain
commands. The submit write, the client's hottest path, uses balloons' own RESP client.
Connection failures become :class:`~balloons.errors.StoreError` with the URL masked. On a
Redis Cluster, redis-py's cluster client (chosen when the store first connects) and the RESP
client's routes (:mod:`balloons.cluster`) send each command to its key's node.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import lua
from .errors import ConfigError, StoreError
from .keys import (
    POOL_RE,
    ULID_RE,
    JobKeys,
    PoolKeys,
    machine_key,
    machines_key,
    pools_key,
    script_keys,
    slot_job,
)
from .pools import MAX_MACHINES
from .resp import RespClient, RespError, mask_url
from .signing import verify_outcome
from .status import AttemptInfo, JobInfo, JobStatus, Reason
from .untrusted import (
    MAX_ATTEMPT,
    MAX_CPUS,
    MAX_MEMORY_MB,
    describe,
    integer,
    json_object,
    json_value,
    number,
    text,
    timestamp,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

_CONNECT_TIMEOUT = 5.0  # seconds to connect to Redis; commands wait as long as they take
#: Largest number of seconds a usage entry may hold (a century): beyond it, it was altered.
MAX_SECONDS = 100 * 365 * 24 * 3600.0


#: Seconds between two ``SADD``s of one pool to the set of pools by one store's submits.
RELIST_S = 10.0
#: How long a submit polls for its reply before it sleeps on the socket (see
#: :attr:`balloons.resp.RespClient.spin`): a local Redis answers within it, and a submit
#: then costs no wake-up of its thread; a distant one does not, and the polling stops.
SUBMIT_SPIN_S = 200e-6


class SubmitRequest:
    """Everything the SUBMIT script needs besides the job's keys."""

    __slots__ = (
        "args",
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


def _decode(raw: dict[bytes, bytes]) -> dict[str, bytes]:
    return {k.decode(): v for k, v in raw.items()}


# What readers show in place of what a machine wrote when it cannot be trusted: its tag does
# not verify with the app's secret, or the reader has no secret to verify it with.
INVALID_ERROR = (
    "the error stored for this job does not verify with this app's secret (altered in Redis, "
    "copied from another job or attempt, or written with another secret): not shown"
)
UNVERIFIED_ERROR = (
    "the error stored for this job is not shown: this app has no signing key to verify it "
    "with (BALLOONS_SECRET)"
)
INVALID_MESSAGE = "[message not shown: it does not verify with this app's secret]"
UNVERIFIED_MESSAGE = "[message not shown: no signing key to verify it with]"
INVALID_PROGRESS = "[progress not shown: it does not verify with this app's secret]"
UNVERIFIED_PROGRESS = "[progress not shown: no signing key to verify it with]"
#: The message of a cancelled job (which stores no error).
CANCELLED_MESSAGE = "cancelled on request"


def record_error(
    job_id: str, rec: Mapping[str, bytes], secret: bytes | None
) -> tuple[str | None, dict[str, object]]:
    """The reason and the error (``type``, ``message``, ``traceback``) of a job's record. The
    error is decoded only once its tag verifies, for an attempt it can be (the job's, when the
    job failed; an earlier one's, after a retry); otherwise the message says why it is not
    shown, and the reason is ``result_invalid`` when it did not verify."""
    reason = text(rec.get("reason")) or None
    raw = rec.get("error")
    if not raw:
        if rec.get("status") == b"CANCELLED":
            return reason or Reason.CANCELLED.value, {"message": CANCELLED_MESSAGE}
        return reason, {}
    if secret is None:
        return reason, {"message": UNVERIFIED_ERROR}
    n = verify_outcome(secret, "error", job_id, raw, rec.get("esig"))
    attempt = integer(rec.get("attempt") or 0, 0, MAX_ATTEMPT)
    # The job's own attempt's error when it failed; an earlier attempt's after a retry.
    failed = rec.get("status") == b"FAILED"
    if n is not None and attempt is not None and (n == attempt if failed else n <= attempt):
        err = json_object(raw)
        if err is not None:
            signed = err.get("reason")
            return (signed if isinstance(signed, str) and signed else reason), err
    claim = f" (it claims reason {describe(reason)})" if reason else ""
    return Reason.RESULT_INVALID.value, {"message": INVALID_ERROR + claim}


def _checked_message(job_id: str, n: int, d: object, secret: bytes | None) -> object:
    """Attempt ``n``'s record with its message kept only when its tag verifies for it."""
    if not isinstance(d, dict) or not d.get("message"):
        return d
    if secret is None:
        return {**d, "message": UNVERIFIED_MESSAGE}
    msg = d["message"]
    data = msg.encode("utf-8", "replace") if isinstance(msg, str) else b""
    if verify_outcome(secret, "message", job_id, data, d.get("msig")) != n:
        return {**d, "message": INVALID_MESSAGE}
    return d


def attempts_from(
    job_id: str,
    rec: dict[str, bytes],
    attempts: dict[bytes, bytes],
    secret: bytes | None = None,
) -> tuple[AttemptInfo, ...]:
    """A job's attempts, in order, from its attempts hash; and its first attempt while the
    machine that submit launched for it has not yet reported (the record is written on the
    attempt's first change: until then the job's record holds what it says). ``rec`` needs
    ``attempt``, ``slot``, ``created`` and ``need`` for the latter. Whatever the hashes hold:
    an attempt record that cannot be read is kept, with its :attr:`~AttemptInfo.problems`.
    An attempt's message is shown only when it verifies with ``secret``."""

    def attempt(k: bytes, v: bytes) -> AttemptInfo:
        n = integer(k, 0, MAX_ATTEMPT) or 0
        return AttemptInfo.from_dict(_checked_message(job_id, n, json_value(v), secret), n)

    tries = sorted((attempt(k, v) for k, v in attempts.items()), key=lambda a: a.number)
    slot = text(rec.get("slot")) or ""
    if not tries and rec.get("attempt") == b"1" and slot == job_id.rpartition(".")[2] + "-1":
        cpus, _, mem = (text(rec.get("need")) or "").partition(":")
        tries = [
            AttemptInfo(
                number=1,
                launched_at=timestamp(rec.get("created")),
                slot=slot,
                cpus=integer(cpus, 1, MAX_CPUS),
                memory_mb=integer(mem, 1, MAX_MEMORY_MB),
            )
        ]
    return tuple(tries)


def read_status(raw: object) -> tuple[JobStatus, str | None]:
    """A job's status from its record, and what is wrong with it: ``INVALID`` for anything
    but one of the statuses a job goes through."""
    value = text(raw)
    if value is None:
        return JobStatus.INVALID, "its record has no status"
    try:
        st = JobStatus(value)
    except ValueError:
        st = JobStatus.INVALID
    if st is JobStatus.INVALID:
        return st, f"status {describe(value)} is not a job status"
    return st, None


def job_info(
    job_id: str,
    rec: dict[str, bytes],
    attempts: dict[bytes, bytes],
    secret: bytes | None = None,
) -> JobInfo:
    """Build a :class:`JobInfo` from a raw job hash and its attempts hash, whatever they hold:
    a field that cannot be read is left unknown and named in :attr:`JobInfo.problems`. The
    error (and each attempt's message) is shown only when it verifies with ``secret`` (see
    :func:`record_error`)."""
    problems: list[str] = []

    def s(name: str) -> str | None:
        return text(rec.get(name)) or None

    def when(name: str) -> float | None:
        raw = rec.get(name)
        if not raw:
            return None
        value = timestamp(raw)
        if value is None:
            problems.append(f"{name} {describe(raw)} is not a time")
        return value

    status, wrong = read_status(rec.get("status"))
    if wrong:
        problems.append(wrong)
    task = "?"
    if "payload" in rec:
        payload = json_object(rec["payload"])
        if payload is None:
            problems.append("its payload is not a JSON object")
        elif isinstance(payload.get("task"), str):
            task = str(payload["task"])
    reason, error = record_error(job_id, rec, secret)
    attempt = integer(rec.get("attempt") or 0, 0, MAX_ATTEMPT)
    if attempt is None:
        problems.append(f"attempt {describe(rec.get('attempt'))} is not an attempt number")

    def err(name: str) -> str | None:
        value = error.get(name)
        return value if isinstance(value, str) and value else None

    return JobInfo(
        id=job_id,
        task=task,
        pool=job_id.rpartition(".")[0],
        status=status,
        attempt=attempt or 0,
        machine_id=s("machine"),
        created_at=when("created") or 0.0,
        started_at=when("started"),
        finished_at=when("finished"),
        reason=reason or ("record_invalid" if status is JobStatus.INVALID else None),
        error_type=err("type"),
        error_message=err("message"),
        traceback=err("traceback"),
        attempts=attempts_from(job_id, rec, attempts, secret),
        problems=tuple(problems),
    )


class Store:
    """Redis access for one app: ``url`` may carry a password; it is never shown unmasked."""

    def __init__(
        self, url: str, namespace: str, key: Callable[[], bytes | None] | None = None
    ) -> None:
        self.url = url
        self.namespace = namespace
        self._key = key  # the app's signing key, read when first needed
        self._idle: list[RespClient] = []  # connections of the submit path, not in use
        self._waiting: list[RespClient] = []  # connections of waits on results, not in use
        self._pid = os.getpid()
        self._listed: dict[str, float] = {}  # pool -> when a submit last added it to the set
        self._sync: Any = None  # redis.Redis; redis-py's own annotations are too loose to help
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
        if self._sync is None:
            from .cluster import redis_client

            self._sync = redis_client(self.url, _CONNECT_TIMEOUT)
        return self._sync

    @property
    def aredis(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            from redis.cluster import RedisCluster

            from .cluster import async_redis_client

            # Cluster or not, as the sync client found (a round trip once per store).
            cluster = isinstance(self.redis, RedisCluster)
            client = self._async[loop] = async_redis_client(self.url, _CONNECT_TIMEOUT, cluster)
        return client

    async def aclose(self) -> None:
        """Close this event loop's asyncio client (before the loop ends, to leave no socket
        for the garbage collector)."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn redis-py's errors into StoreError naming the (masked) URL."""
        import redis as redis_mod

        try:
            yield
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
        return JobKeys.of(self.namespace, job_id)

    # ----------------------------------------------------------------- writes
    def _tagged(self, pk: PoolKeys, jobs: Sequence[str], args: Sequence[Any]) -> list[Any]:
        keys = script_keys(pk, *jobs)
        return [len(keys), *keys, pk.tag, time.time(), *args]

    def _submit_cmd(self, jk: JobKeys, req: SubmitRequest) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the SUBMIT script (see :mod:`balloons.lua`)."""
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
        ]

    def submit(self, jk: JobKeys, req: SubmitRequest) -> list[Any]:
        """Store a job and place it (a new machine's slot, a warm machine, the queue, or the
        delayed set) in one round trip. Returns the SUBMIT script's reply."""
        return self.submit_start(jk, req)()

    def submit_start(self, jk: JobKeys, req: SubmitRequest) -> Callable[[], list[Any]]:
        """:meth:`submit` in two halves: the write now; the function returned waits for the
        reply (call it once), so that the caller can work while Redis runs the script. On a
        connection of the submit path: balloons' own RESP client, since redis-py's pool
        checkout and pipeline machinery cost more than the rest of a submit. One connection
        per concurrent caller; one whose reply is never read is dropped, never reused."""
        k, a = self._submit_cmd(jk, req)
        pool = jk.pool.pool
        before = self._list_pool(pool)
        if self._pid != os.getpid():  # forked: the idle connections belong to the parent
            self._pid, self._idle = os.getpid(), []
        try:
            client = self._idle.pop()
        except IndexError:
            client = RespClient(
                self.url, timeout=None, connect_timeout=_CONNECT_TIMEOUT, spin=SUBMIT_SPIN_S
            )
        try:
            read = client.eval_send(lua.SUBMIT, k, a, before)
        except BaseException:
            self._unlist(pool, before)
            client.close()  # the write may have stopped halfway; reconnects when next used
            self._idle.append(client)
            raise

        def done() -> list[Any]:
            try:
                reply = list(read())
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
            if self._unlisted(reply, before):
                with self.errors():
                    self.redis.sadd(pools_key(self.namespace), pool)
            return reply

        return done

    @staticmethod
    def _unlisted(reply: list[Any], before: list[list[Any]]) -> bool:
        """Whether a submit found its pool's keys new (SUBMIT's code 3, made 1 here: its first
        job, or a Redis that lost its data) without having sent the pool's ``SADD``: then the
        caller lists the pool now, whenever this store last did."""
        if reply[0] != 3:
            return False
        reply[0] = 1
        return not before

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

    async def submit_async(self, jk: JobKeys, req: SubmitRequest) -> list[Any]:
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
                        *_, reply = await pipe.execute()
                        break
                    except redis_mod.exceptions.NoScriptError:
                        await self.aredis.script_load(lua.SUBMIT)
        except BaseException:
            self._unlist(jk.pool.pool, before)
            raise
        reply = list(reply)
        if self._unlisted(reply, before):
            with self.errors():
                await self.aredis.sadd(pools_key(self.namespace), jk.pool.pool)
        return reply

    def eval(self, script: str, pk: PoolKeys, *args: Any, jobs: Sequence[str] = ()) -> Any:
        """Run one of :mod:`balloons.lua`'s scripts against pool ``pk``, given the keys of
        the pool and of the ``jobs`` (ULIDs) that its arguments name."""
        import redis as redis_mod

        cmd = self._tagged(pk, jobs, args)
        with self.errors():
            try:
                return self.redis.evalsha(lua.sha(script), *cmd)
            except redis_mod.exceptions.NoScriptError:
                return self.redis.eval(script, *cmd)

    def lost(
        self,
        pk: PoolKeys,
        slot: str,
        ulid: str,
        attempt: int,
        reason: str,
        message: str,
        retry: tuple[str, str],
        only_if_expired: bool = False,
    ) -> list[Any]:
        """Free a slot whose machine is gone and end its job's attempt with ``reason`` (the
        error sealed with the app's secret)."""
        from .reclaim import sealed_end

        secret = self.signing_key()
        if secret is None:
            raise ConfigError(
                f"cannot end the attempt of slot {slot}: its error is sealed with the app's "
                "signing key, and none is set (BALLOONS_SECRET)"
            )
        error, tag, grant = sealed_end(secret, pk, slot, ulid, attempt, reason, message, retry)
        return list(
            self.eval(
                lua.LOST,
                pk,
                slot,
                ulid,
                attempt,
                error,
                reason,
                *retry,
                "1" if only_if_expired else "0",
                tag,
                grant,
                jobs=(ulid, slot_job(slot)),
            )
        )

    def unpin(self, pk: PoolKeys, slot: str, ulid: str, fresh: str) -> bool:
        """Queue the job of a slot whose launch has to wait; the slot, now jobless, is renamed
        ``FRESH-0``. False when the job or the slot has moved on."""
        return int(self.eval(lua.REQUEUE, pk, slot, ulid, fresh, jobs=(ulid,))) == 1

    def assign(self, pk: PoolKeys, slot: str, fresh: str) -> list[str] | None:
        """Turn a granted slot into a machine's own in a pool with standby machines
        (:data:`lua.PICK_MACHINE`): ``["start", machine, slot ulid, cpus, mem]`` (a stopped machine
        to start), ``["create", slot ulid, cpus, mem]``, or None (nothing to launch)."""
        reply = self.eval(lua.PICK_MACHINE, pk, slot, fresh)
        if reply[0] != 1:
            return None
        return [x.decode() if isinstance(x, bytes) else str(x) for x in reply[1:]]

    def reslot(self, pk: PoolKeys, slot: str, machine: str, fresh: str) -> bool:
        """A standby machine failed to start: its slot, renamed ``FRESH-0``, waits for a new
        machine. False when the slot has moved on (the machine started after all)."""
        return int(self.eval(lua.START_FAILED, pk, slot, machine, fresh)) == 1

    def shed(self, pk: PoolKeys, keep: int | None = None) -> list[str]:
        """Drop standby machines beyond ``keep`` (default: the pool's standby setting) from the
        pool's set; their ids, for the caller to destroy."""
        if keep is None:  # read here, so that a setting altered in Redis counts as 0
            with self.errors():
                keep = integer(self.redis.hget(pk.cfg, "standby"), 0, MAX_MACHINES) or 0
        out = self.eval(lua.TRIM_STANDBY, pk, keep)
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in out]

    def standby(self, pk: PoolKeys) -> dict[str, dict[str, Any]]:
        """The pool's stopped machines kept to be started again: machine id -> record."""
        with self.errors():
            raw = self.redis.hgetall(pk.standby)
        return {k.decode("utf-8", "replace"): json_object(v) or {} for k, v in raw.items()}

    def booting(self, pk: PoolKeys, slot: str) -> bool:
        """Renew the boot lease of a slot whose machine is about to be launched; False when
        the slot is gone or already claimed, or was given back because it has no job and
        nothing is queued (nothing to launch)."""
        return int(self.eval(lua.CONFIRM_LAUNCH, pk, slot)) == 1

    def cancel(self, jk: JobKeys) -> tuple[str | None, str, str]:
        """Mark a job cancelled. Returns (previous status or None if it had ended, slot,
        machine)."""
        reply = self.eval(lua.CANCEL, jk.pool, jk.ulid, jobs=(jk.ulid,))
        if reply[0] == -1:
            from .errors import JobNotFound

            raise JobNotFound(jk.job_id)
        if reply[0] != 1:
            return None, "", ""
        return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in reply[1:4])  # type: ignore[return-value]

    def slot_info(self, pk: PoolKeys, slot: str) -> dict[str, Any] | None:
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
        """Cap, machines (starting, running, idle), queued and delayed counts of one pool."""
        pk = PoolKeys(self.namespace, pool)
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(pk.cfg)
            pipe.hvals(pk.slot)
            pipe.zcard(pk.queue)
            pipe.zcard(pk.delayed)
            pipe.hlen(pk.standby)
            cfg, infos, queued, delayed, standby = pipe.execute()
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
            "machines": len(states),
            "starting": states.count("starting"),
            "running": states.count("running"),
            "idle": states.count("idle"),
            "queued": int(queued),
            "delayed": int(delayed),
        }

    def queue_position(self, jk: JobKeys) -> int | None:
        with self.errors():
            rank = self.redis.zrank(jk.pool.queue, jk.ulid)
        return None if rank is None else int(rank) + 1

    def note(self, pk: PoolKeys, ulid: str, attempt: int, note: str) -> None:
        """Add a note to an attempt's record (e.g. the regions that refused its machine)."""
        self.eval(lua.NOTE_ATTEMPT, pk, ulid, attempt, note, jobs=(ulid,))

    def launched(self, pk: PoolKeys, slot: str, machine: str) -> bool:
        """Name the machine just launched for a slot with no job in the slot's entry, while the
        slot still waits for it (see :data:`lua.LAUNCHED`)."""
        return int(self.eval(lua.LAUNCHED, pk, slot, machine)) == 1

    def forget(self, jk: JobKeys) -> None:
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(jk.job, jk.attempts, jk.done, jk.logs)
            pipe.zrem(jk.pool.jobs, jk.ulid)
            pipe.execute()

    # ------------------------------------------------------------------ reads
    def server_time(self, pk: PoolKeys | None = None) -> float:
        """The Redis server's clock (``TIME``), in seconds: the one every lease, deadline and
        due time is written in, so what is compared with them. On a cluster, the clock of the
        node serving pool ``pk`` (:data:`lua.CLOCK`), else of any node."""
        with self.errors():
            sec, usec = self.eval(lua.CLOCK, pk) if pk is not None else self.redis.time()
        return int(sec) + int(usec) / 1e6

    def status(self, jk: JobKeys) -> JobStatus | None:
        """The job's status (``INVALID`` for a record that has none it could have); None when
        there is no record."""
        with self.errors():
            raw = self.redis.hget(jk.job, "status")
            if raw is None and not self.redis.exists(jk.job):
                return None
        return read_status(raw)[0]

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
        return job_info(jk.job_id, _decode(rec), attempts, self.signing_key()) if rec else None

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

    def wait_record(self, jk: JobKeys, timeout: float) -> dict[str, bytes] | None:
        """:meth:`wait_done`, then the job's record, in one round trip: Redis runs the
        ``HGETALL`` sent behind the ``BLMOVE`` as soon as the done token wakes it. The record
        once woken; None when nothing woke it within ``timeout``. On a connection of balloons'
        own RESP client (one per concurrent waiter), which costs less than redis-py's."""
        if self._pid != os.getpid():  # forked: the idle connections belong to the parent
            self._pid, self._idle, self._waiting = os.getpid(), [], []
        try:
            client = self._waiting.pop()
        except IndexError:
            client = RespClient(self.url, timeout=None, connect_timeout=_CONNECT_TIMEOUT)
        wait = ["BLMOVE", jk.done, jk.done, "LEFT", "LEFT", f"{timeout:.3f}"]
        try:
            got, raw = client.pipeline([wait, ["HGETALL", jk.job]])
        except BaseException:
            client.close()  # whatever interrupted it may have left a reply unread
            self._waiting.append(client)
            raise
        self._waiting.append(client)
        for reply in (got, raw):
            if isinstance(reply, RespError):
                raise StoreError(f"Redis at {mask_url(self.url)} refused a command: {reply}")
        if got is None or not isinstance(raw, list):
            return None
        return {bytes(raw[i]).decode(): raw[i + 1] for i in range(0, len(raw) - 1, 2)}

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
            found = self.redis.smembers(pools_key(self.namespace))
        # Only names a pool can have: anything else in the set was not written by balloons.
        return sorted(n for n in (p.decode("utf-8", "replace") for p in found) if POOL_RE.match(n))

    def recent(self, limit: int = 50, pool: str | None = None) -> list[JobInfo]:
        """The newest jobs, across pools unless one is named."""
        pools = [pool] if pool else self.pools()
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for p in pools:
                pipe.zrevrange(PoolKeys(self.namespace, p).jobs, 0, limit - 1, withscores=True)
            ranked = sorted(_job_ids(pools, pipe.execute()), reverse=True)[:limit]
            pipe = self.redis.pipeline(transaction=False)
            for _, jid in ranked:
                jk = self.keys(jid)
                pipe.hgetall(jk.job)
                pipe.hgetall(jk.attempts)
            raw = pipe.execute()
        out = []
        secret = self.signing_key()
        for i, (_, jid) in enumerate(ranked):
            rec, attempts = raw[2 * i], raw[2 * i + 1]
            if rec:
                out.append(job_info(jid, _decode(rec), attempts, secret))
        return out

    def index(self, pools: Sequence[str], limit: int, offset: int = 0) -> list[tuple[float, str]]:
        """``(created, job id)`` of each pool's jobs from the ``offset``-th newest, ``limit``
        of them per pool, newest first across pools."""
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for p in pools:
                key = PoolKeys(self.namespace, p).jobs
                pipe.zrevrange(key, offset, offset + limit - 1, withscores=True)
            rows = pipe.execute()
        return sorted(_job_ids(pools, rows), reverse=True)

    def index_sizes(self, pools: Sequence[str]) -> list[int]:
        """How many jobs each pool's index holds."""
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for p in pools:
                pipe.zcard(PoolKeys(self.namespace, p).jobs)
            return [int(n) for n in pipe.execute()]

    def fields(self, job_ids: Sequence[str], names: Sequence[str]) -> list[dict[str, bytes]]:
        """The named fields of each job's record (``{}`` for a record that is gone)."""
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for jid in job_ids:
                pipe.hmget(self.keys(jid).job, names)
            rows = pipe.execute()
        return [
            {n: v for n, v in zip(names, row, strict=True) if v is not None}
            if row[0] is not None
            else {}
            for row in rows
        ]

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
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for jid in job_ids:
                pipe.hgetall(self.keys(jid).attempts)
            return list(pipe.execute())

    def usage(self, pools: Sequence[str]) -> dict[str, dict[str, float | None]]:
        """Each pool's ``usage`` hash (``idle:CPUS:MB`` -> seconds); None for seconds that are
        not a number of seconds (altered in Redis)."""
        with self.errors():
            pipe = self.redis.pipeline(transaction=False)
            for p in pools:
                pipe.hgetall(PoolKeys(self.namespace, p).usage)
            rows = pipe.execute()
        return {
            p: {k.decode("utf-8", "replace"): number(v, 0, MAX_SECONDS) for k, v in row.items()}
            for p, row in zip(pools, rows, strict=True)
        }

    def progress(self, jk: JobKeys) -> tuple[float, str] | None:
        """The job's last reported progress and note, if its task reported any. Progress whose
        tag does not verify with the app's secret reads as 0 with a note saying so."""
        with self.errors():
            raw, note, tag = self.redis.hmget(jk.job, ["progress", "note", "psig"])
        if raw is None:
            return None
        secret = self.signing_key()
        if secret is None:
            return 0.0, UNVERIFIED_PROGRESS
        data = raw + b"\n" + (note or b"")
        fraction = number(raw, 0.0, 1.0)
        if fraction is None or verify_outcome(secret, "progress", jk.job_id, data, tag) is None:
            return 0.0, INVALID_PROGRESS
        return fraction, text(note) or ""

    def machine_records(self, limit: int = 1000) -> list[dict[str, str]]:
        """The newest machine records (``id``, ``state``, ``pool``, ...), newest first."""
        with self.errors():
            ids = self.redis.zrevrange(machines_key(self.namespace), 0, limit - 1)
            pipe = self.redis.pipeline(transaction=False)
            for mid in ids:
                pipe.hgetall(machine_key(self.namespace, mid.decode()))
            raws = pipe.execute()
        out = []
        for mid, raw in zip(ids, raws, strict=True):
            if raw:  # every value as text, whatever bytes it holds; "id" is the key's own
                rec = {k.decode("utf-8", "replace"): text(v) or "" for k, v in raw.items()}
                out.append({**rec, "id": mid.decode("utf-8", "replace")})
        return out

    def close(self) -> None:
        idle, self._idle, waiting, self._waiting = self._idle, [], self._waiting, []
        for client in (*idle, *waiting):
            client.close()
        if self._sync is not None:
            self._sync.close()
            self._sync = None


def _job_ids(pools: Sequence[str], rows: list[Any]) -> Iterator[tuple[float, str]]:
    """``(created, job id)`` of each pool's index rows; a member that is not a job's ULID (not
    written by balloons) is left out."""
    for p, found in zip(pools, rows, strict=True):
        for member, score in found:
            ulid = member.decode("utf-8", "replace")
            if ULID_RE.match(ulid):
                yield score, f"{p}.{ulid}"


def store_error(url: str, exc: BaseException) -> StoreError:
    """What a redis-py error means, as a :class:`StoreError` naming the masked ``url``."""
    import redis as redis_mod

    where = mask_url(url)
    if isinstance(exc, redis_mod.exceptions.InvalidResponse):
        return StoreError(
            f"the server at {where} does not speak the Redis protocol (is it a Redis URL?): {exc}"
        )
    if isinstance(exc, redis_mod.ResponseError):
        return StoreError(f"Redis at {where} refused a command: {exc}")
    if isinstance(
        exc,
        redis_mod.ConnectionError
        | redis_mod.TimeoutError
        | OSError
        | redis_mod.exceptions.RedisClusterException,
    ):
        return StoreError(f"cannot reach Redis at {where}: {exc}")
    return StoreError(f"Redis at {where} answered wrongly: {exc!r}")


def slot_entry(raw: bytes) -> dict[str, Any]:
    """A slot's JSON entry; ``{}`` for one that is not a JSON object (altered in Redis)."""
    return json_object(raw) or {}
