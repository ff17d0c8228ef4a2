"""``Dispatcher``: submit, place, launch, standby and cancel, for one :class:`~balloons.App`.

``task.submit()`` comes here: the arguments are serialized and signed with the payload, one
``SUBMIT`` script stores and places the job, and when it got a new slot its machine is
launched (now, or from the app's :class:`~balloons.backlog.Launcher` when the backend's launch
is a remote call or would wait for a rate limit). A pool with standby machines launches
through ``PICK_MACHINE``: a stopped machine is started, else one is created. ``app.cancel()``
and the supervisor's floor launches come here too.

Loaded on an app's first submit: a machine that only runs jobs never imports it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .calls import SUBMIT_KWARGS, check_call, deprecated_call_options
from .errors import ConfigError, JobNotFound, SerializationError, StoreError
from .ids import ulid
from .job import Job, job_keys
from .launcher import Launch, SlotLauncher
from .serialize import dumps_call
from .signing import sign, verify
from .store import replies
from .store.keys import JobKeys
from .store.replies import Code, Submitted
from .task import DEFAULT_TIMEOUT, TaskOptions, check_priority

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from .app import App
    from .info import MachineSpec
    from .pools import Pool
    from .store.queries import Query
    from .store.replies import Cancelled
    from .store.writes import SubmitRequest
    from .task import Task

R = TypeVar("R")

_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder, not one per submit
#: The per-call options' former spelling, as keyword arguments of ``submit`` (deprecated).
_SUBMIT_KWARGS = frozenset({"_delay", "_at", "_key", "_priority"})
#: Longest grace a cancel gives a running job before its machine is stopped.
MAX_GRACE = 24 * 3600.0


class Placed(NamedTuple):
    """Where ``SUBMIT`` put a job (its reply, decoded by :func:`placed`)."""

    #: 1: stored; 2: ``key`` named an existing job (``ulid`` is its id's); else the id exists.
    code: int
    #: ``launch`` (a new slot: ``ulid``, ``attempt``, ``cpus``, ``memory_mb`` name its
    #: machine), ``warm``, ``queued``, ``delayed``, or ``existing``.
    where: str
    ulid: str = ""
    attempt: int = 0
    cpus: int = 0
    memory_mb: int = 0


def placed(reply: Submitted | list[Any]) -> Placed:
    """Where ``SUBMIT`` put a job, from its reply (decoded by :func:`balloons.store.replies.submit`
    when it is not yet)."""
    got = reply if isinstance(reply, Submitted) else replies.submit(reply)
    if got.code is _EXISTING:
        return Placed(2, "existing", got.existing)
    grant = got.grant
    if got.code is not _OK:
        return Placed(int(got.code), "")
    if grant is None:
        return _PLACED.get(got.placed) or Placed(1, got.placed)
    return Placed(1, "launch", grant.ulid, grant.attempt, grant.cpus, grant.memory_mb)


# The placements that name no machine, made once (the submit path is hot).
_PLACED = {w: Placed(1, w) for w in ("queued", "warm", "delayed")}
_OK, _EXISTING = Code.OK, Code.EXISTING
_tuple = tuple.__new__


class Dispatcher:
    """Submits an app's jobs, launches their machines and cancels them (one per app:
    ``app.dispatcher``)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.slots = SlotLauncher(app)
        # (id(task), id(options)) -> (task, options, (cpus, memory_mb, main), payload head)
        self._heads: dict[tuple[int, int], tuple[Any, TaskOptions, tuple[Any, ...], str]] = {}
        # Pool -> whether its last submit here got a new slot: only then is the next one's
        # machine made ready while Redis places it (a job queued needs none).
        self._launching: dict[str, bool] = {}

    # ----------------------------------------------------------------- submit
    def submit(
        self,
        task: Task[Any, R],
        opts: TaskOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        link: str = "",
    ) -> Job[R]:
        """Store the job of this call and place it (a warm machine, a new slot, the queue or the
        delayed set), launch its machine when it got a slot, and return its handle. ``link``
        names the chain or group the job belongs to (:mod:`balloons.flows`), in its payload."""
        jk, req = self.submit_args(task, opts, args, kwargs, link)
        pool = jk.pool.pool
        reply_of = self.app.store.submit_start(jk, req)
        spec = None
        try:
            # While Redis places the job: the machine it most likely gets (a new slot for its
            # first attempt) when the pool's last job got one, so that only the launch itself
            # is left once the reply is in.
            if self._launching.get(pool, True):
                spec = self.slots.spec(pool, jk.ulid, 1, req.cpus, req.memory_mb, opts.timeout)
        finally:
            got = reply_of()
        job, launch = self.after_submit(jk, opts, got)
        _submitted(job, task.name, got.placed, req.created)
        if launch is None:
            self._launching[pool] = False
        else:
            self._launching[pool] = True
            self.slots.launch(
                launch, spec if launch.ulid == jk.ulid and launch.attempt == 1 else None
            )
        return job

    async def submit_async(
        self, task: Task[Any, R], opts: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job[R]:
        """:meth:`submit` for asyncio: the store's asyncio client places the job, and a launch is
        made in a worker thread (:func:`balloons.dispatch_async.place`)."""
        from .dispatch_async import place

        jk, req = self.submit_args(task, opts, args, kwargs)  # here: a warning's stack level
        return (await place(self, task.name, opts, jk, req, []))[0]

    def submit_args(
        self,
        task: Task[Any, R],
        opts: TaskOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        link: str = "",
    ) -> tuple[JobKeys, SubmitRequest]:
        """The job's keys and its ``SUBMIT`` request: the arguments bound to the task's
        signature, serialized and size-checked, the payload signed with them, the per-call
        options (``task.options(delay=..., at=..., key=..., priority=...)``) checked."""
        call = task.call_options
        if kwargs and not SUBMIT_KWARGS.isdisjoint(kwargs):
            call = {**call, **deprecated_call_options(kwargs)}
        check_call(task, args, kwargs)
        jk, payload, data, sig, now = self._prepare(task, opts, args, kwargs, link)
        pool = self.app.get_pool(opts.pool)
        ttl = self.app.settings.record_ttl
        key = None
        due, priority = "", opts.priority
        if call:
            due = _due(call.get("delay"), call.get("at"), now, ttl)
            key = call.get("key")
            if key is not None and (not isinstance(key, str) or not key):
                raise ConfigError(f"key must be a non-empty string, got {key!r}")
            priority = call.get("priority", opts.priority)
            if priority is not opts.priority:  # the task's own was checked with its options
                check_priority("priority", priority)
        compat = self.app.compat()
        req = _submit_request()(
            payload=payload,
            args=data,
            sig=sig,
            created=now,
            ttl=ttl,
            pool_config=pool.signed_config(self.app.secret.encode(), compat.conf),
            due=due,
            priority=priority,
            cpus=opts.cpus or pool.cpus,
            memory_mb=opts.memory_mb or pool.memory_mb,
            key_digest=hashlib.sha256(key.encode()).hexdigest()[:32] if key else "",
            compat=compat.tag,
        )
        return jk, req

    def after_submit(
        self, jk: JobKeys, opts: TaskOptions, got: Submitted
    ) -> tuple[Job[Any], Launch | None]:
        """The job's handle from where ``SUBMIT`` placed it (its decoded reply), and its
        machine's launch if it got a new slot."""
        code = got.code
        if code is _OK:
            job: Job[Any] = Job(self.app, jk.job_id, jk)
        elif code is _EXISTING:
            return Job(self.app, f"{jk.pool.pool}.{got.existing}"), None
        else:
            raise StoreError(f"job id {jk.job_id} already exists")
        grant = got.grant
        if grant is None:
            return job, None
        pool, u = jk.pool.pool, grant.ulid
        timeout = opts.timeout if u == jk.ulid else DEFAULT_TIMEOUT
        keep = self.app.get_pool(pool).standby > 0
        # Launch's fields at once (a NamedTuple's __new__ is a Python call: the submit path).
        return job, _tuple(
            Launch,
            (pool, u, grant.attempt, grant.cpus, grant.memory_mb, timeout, keep, u != jk.ulid),
        )

    def resubmit(self, job_id: str) -> Job[Any]:
        """A new job running the same task with the same options and arguments as
        ``job_id``, its stored arguments reused as they are once its signature verifies."""
        new, opts, req = self.app.store.run(self._resubmit(job_id))
        job, launch = self.after_submit(new, opts, self.app.store.submit(new, req))
        if launch is not None:
            self.slots.launch(launch)
        return job

    async def resubmit_async(self, job_id: str) -> Job[Any]:
        """:meth:`resubmit` for asyncio."""
        import asyncio

        new, opts, req = await self.app.store.run_async(self._resubmit(job_id))
        got = await self.app.store.submit_async(new, req)
        job, launch = self.after_submit(new, opts, got)
        if launch is not None:
            await asyncio.to_thread(self.slots.launch, launch)
        return job

    def _resubmit(self, job_id: str) -> Query[tuple[JobKeys, TaskOptions, SubmitRequest]]:
        """The new job's keys, options and ``SUBMIT`` request, from ``job_id``'s record."""
        from .store import queries

        app = self.app
        old = job_keys(app.settings.namespace, job_id)
        rec = yield from queries.record(old)
        if not rec:
            raise JobNotFound(job_id)
        payload, data = rec.get("payload", b""), rec.get("args", b"")
        if not verify(app.secret.encode(), payload, data, rec.get("sig", b"")):
            raise StoreError(
                f"the record of job {job_id} does not verify with this app's secret: "
                "refusing to retry it"
            )
        p = json.loads(payload)
        opts = TaskOptions(
            cpus=p["cpus"], memory_mb=p["memory_mb"], timeout=p["timeout"], pool=old.pool.pool
        )
        now = time.time()
        new = JobKeys.of(app.settings.namespace, f"{opts.pool}.{ulid(now)}")
        fields = {"id": new.job_id, "created": now, "ttl": app.settings.record_ttl}
        body = json.dumps({**p, **fields}, separators=(",", ":")).encode()
        compat = app.compat()
        req = _submit_request()(
            payload=body,
            args=data,
            sig=sign(app.secret.encode(), body, data),
            created=now,
            ttl=app.settings.record_ttl,
            pool_config=app.get_pool(opts.pool).signed_config(app.secret.encode(), compat.conf),
            due="",
            priority=0,
            cpus=int(p["cpus"]),
            memory_mb=int(p["memory_mb"]),
            key_digest="",
            compat=compat.tag,
        )
        return new, opts, req

    def _prepare(
        self,
        task: Task[Any, Any],
        opts: TaskOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        link: str = "",
    ) -> tuple[JobKeys, bytes, bytes, str, float]:
        app = self.app
        app.require_backend_installed()
        data = dumps_call(app.serializer, args, kwargs)
        limit = app.settings.max_arg_bytes
        if len(data) > limit:
            raise SerializationError(
                f"the arguments of {task.name} are {len(data):,} bytes serialized, over the "
                f"limit of {limit:,} (max_arg_bytes): pass a reference "
                "(a URL, a key) instead of the data"
            )
        pool = app.get_pool(opts.pool)
        now = time.time()
        jk = JobKeys.fresh(app.settings.namespace, opts.pool, ulid(now))
        main_path = None
        if task.name.startswith("__main__:"):
            main = sys.modules.get("__main__")
            main_file = getattr(main, "__file__", None)
            if not main_file:
                raise ConfigError(
                    f"task {task.name} lives in an interactive __main__ with no file: "
                    "define it in a module or a script file"
                )
            main_path = os.path.abspath(main_file)
        head = self._payload_head(task, opts, pool, main_path)
        tail = f',"link":"{link}"' if link else ""  # a flow id: letters, digits and "-"
        payload = f'{head},"id":"{jk.job_id}","created":{now!r}{tail}}}'.encode()
        sig = sign(app.secret.encode(), payload, data)
        return jk, payload, data, sig, now

    def _payload_head(
        self, task: Task[Any, Any], opts: TaskOptions, pool: Pool, main_path: str | None
    ) -> str:
        """The job payload's JSON without its closing brace and the two fields that change
        with every job (``id``, ``created``): the same for every call of one task with one set
        of options, so it is encoded once (the submit path is hot)."""
        key = (id(task), id(opts))
        hit = self._heads.get(key)
        if (
            hit is not None
            and hit[0] is task
            and hit[1] is opts
            and hit[2] == (pool.cpus, pool.memory_mb, main_path)
        ):
            return hit[3]
        head = _COMPACT.encode(
            {
                "v": 1,
                "task": task.name,
                "main": main_path,
                "ser": self.app.serializer.name,
                "timeout": opts.timeout,
                "memory_mb": opts.memory_mb or pool.memory_mb,
                "cpus": opts.cpus or pool.cpus,
                "retries": opts.retries,
                "backoff": opts.retry_backoff,
                "backoff_max": opts.retry_backoff_max,
                "mem_factor": opts.retry_memory_factor,
                "mem_max": opts.retry_memory_max,
                # How long the record may be run: a worker refuses it later (a replay).
                "ttl": self.app.settings.record_ttl,
                **self._cost_cap(opts, pool),
            }
        )[:-1]
        if len(self._heads) >= 256:  # per-call options() make new options objects
            self._heads.clear()
        self._heads[key] = (task, opts, (pool.cpus, pool.memory_mb, main_path), head)
        return head

    def _cost_cap(self, opts: TaskOptions, pool: Pool) -> dict[str, float]:
        """The payload fields a worker needs to enforce ``max_cost``: the cap and the price
        per second of the job's machine, so the machine needs no price table."""
        if opts.max_cost is None:
            return {}
        rate = self.app.prices.per_second(opts.cpus or pool.cpus, opts.memory_mb or pool.memory_mb)
        return {"max_cost": float(opts.max_cost), "usd_per_s": rate}

    # ----------------------------------------------------------------- cancel
    def cancel(self, job_id: str, grace: float = 10.0, wait: bool = False) -> bool:
        """See :meth:`balloons.App.cancel`."""
        jk, got = self.app.store.run(self._cancel(job_id, grace))
        stop = self._stop_after(jk, got, grace, wait)
        if stop is not None:
            stop()
        return got.code is Code.OK

    async def cancel_async(self, job_id: str, grace: float = 10.0, wait: bool = False) -> bool:
        """:meth:`cancel` for asyncio (a wait for the machine's stop runs in a thread)."""
        import asyncio

        jk, got = await self.app.store.run_async(self._cancel(job_id, grace))
        stop = self._stop_after(jk, got, grace, wait)
        if stop is not None:
            await asyncio.to_thread(stop)
        return got.code is Code.OK

    def _cancel(self, job_id: str, grace: float) -> Query[tuple[JobKeys, Cancelled]]:
        from .config import check_seconds
        from .store import queries

        check_seconds("grace", grace, 0, MAX_GRACE)
        jk = job_keys(self.app.settings.namespace, job_id)
        return jk, (yield from queries.cancel(jk))

    def _stop_after(
        self, jk: JobKeys, got: Cancelled, grace: float, wait: bool
    ) -> Callable[[], None] | None:
        """What a cancel does after ``CANCEL``: a job that held a machine has it stopped after
        ``grace`` if it lingers, from a daemon thread, or by the function returned (``wait``:
        the caller waits for it)."""
        slot = got.slot
        if got.code is not Code.OK or got.status not in ("RUNNING", "STARTING") or not slot:
            return None
        if wait:
            return functools.partial(self._stop_if_still, jk, slot, grace)
        threading.Thread(target=self._stop_if_still, args=(jk, slot, grace), daemon=True).start()
        return None

    def _stop_if_still(self, jk: JobKeys, slot: str, grace: float) -> None:
        """Wait up to ``grace`` for the worker to leave the cancelled job, then stop its
        machine if it has not."""
        import contextlib

        deadline = time.monotonic() + grace
        with contextlib.suppress(Exception):
            while True:
                info = self.app.store.slot_info(jk.pool, slot)
                if not info or info.get("job") != jk.ulid:
                    return
                if time.monotonic() >= deadline:
                    if info.get("machine"):
                        self.app.backend.stop(str(info["machine"]))
                    return
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def launch_slot(self, launch: Launch, spec: MachineSpec | None = None) -> bool:
        """See :meth:`SlotLauncher.launch_slot <balloons.launcher.SlotLauncher.launch_slot>`."""
        return self.slots.launch_slot(launch, spec)

    def launch_standby(self, launch: Launch, *, background: bool) -> bool:
        """See :meth:`SlotLauncher.launch_standby
        <balloons.launcher.SlotLauncher.launch_standby>`."""
        return self.slots.launch_standby(launch, background=background)

    def close(self) -> None:
        """Make the launches still waiting for a rate limit."""
        self.slots.close()


def _submitted(job: Job[Any], task: str, where: str, created: float) -> None:
    events = _events()
    if events.enabled():
        submit_s = time.time() - created
        events.emit("submitted", job=job.id, task=task, placed=where, submit_s=submit_s)


def _due(delay: Any, at: Any, now: float, ttl: int) -> str:
    """SUBMIT's due time: ``''`` (now), ``+SECONDS`` (``delay``, counted from the Redis
    server's clock) or ``at``'s epoch time (the server runs it at once when that has passed).
    It must fall due within the record TTL, which its record would not outlive."""
    if delay is not None and at is not None:
        raise ConfigError("pass delay or at, not both")
    if delay is not None:
        from .config import seconds_in

        if not seconds_in(delay, 0, ttl):
            raise ConfigError(
                f"delay must be a number of seconds from 0 to the record TTL ({ttl} s, "
                f"record_ttl), got {delay!r}"
            )
        return f"+{float(delay)!r}" if delay > 0 else ""
    if at is not None:
        import datetime as dt

        if not isinstance(at, dt.datetime):
            raise ConfigError(f"at must be a datetime, got {at!r}")
        if at.tzinfo is None:
            raise ConfigError(f"at must be timezone-aware (for example UTC), got {at!r}")
        ts = at.timestamp()
        if ts > now + ttl:
            raise ConfigError(
                f"at must be within the record TTL ({ttl} s from now, record_ttl), got {at!r}"
            )
        return repr(ts)
    return ""


@functools.cache
def _events() -> ModuleType:
    """Lifecycle events (they import logging): loaded on first use, then one call away on
    the submit path rather than an import statement."""
    from . import lifecycle

    return lifecycle


@functools.cache
def _submit_request() -> type[SubmitRequest]:
    """The store (redis-py) is not on a machine's start-up path: imported on first submit."""
    from .store.writes import SubmitRequest

    return SubmitRequest
