"""The sweep: destroy machines nothing will use again, and trim old entries from the indexes.

A supervisor sweeps every ``gc_interval`` seconds (:meth:`.Supervisor.step`),
and ``balloons gc`` on demand (:meth:`.Supervisor.collect_orphans`, whose
docstring says what is destroyed). It is apart from the supervisor's slot work because it looks
at the backend's machines, not at the pools' slots: a machine is an orphan when no slot and no
standby set of its pool holds it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..ids import ulid
from ..info import MachineInfo
from ..store import lua, replies
from ..store.keys import PoolKeys, gc_lock_key, machines_key
from ..untrusted import timestamp
from . import poolconf

if TYPE_CHECKING:
    from ..launcher import Wiring
    from .supervisor import Control

log = logging.getLogger("balloons.control.supervisor")


def collect(
    app: Control,
    destroyed: list[str],
    *,
    gc_interval: float,
    min_age: float,
    dry_run: bool = False,
    standby: bool = False,
    wait: float = 0.0,
) -> list[MachineInfo]:
    """Destroy the orphans of ``app``'s backend, adding their ids to ``destroyed``, and return
    them (see :meth:`~balloons.control.supervisor.Supervisor.collect_orphans`)."""
    store = app.store
    lock = gc_lock_key(app.settings.namespace)
    token = ulid()
    give_up = time.monotonic() + wait
    while not dry_run and not _lock(app, lock, token, gc_interval):
        if time.monotonic() >= give_up:
            return []  # another supervisor sweeps now
        time.sleep(0.1)
    try:
        return _sweep(app, destroyed, dry_run, standby, min_age)
    finally:
        if wait > 0 and not dry_run:
            # Handed back only if still ours (on a cluster, redis-py 6.1+ runs this
            # transaction; with an older one the lock just runs out).
            with contextlib.suppress(Exception), store.redis.pipeline(transaction=True) as pipe:
                pipe.watch(lock)
                if pipe.get(lock) == token.encode():
                    pipe.multi()
                    pipe.delete(lock)
                    pipe.execute()


def _lock(app: Wiring, lock: str, token: str, gc_interval: float) -> bool:
    with app.store.errors():
        return bool(app.store.redis.set(lock, token, nx=True, ex=max(5, int(gc_interval / 2))))


def _sweep(
    app: Control, destroyed: list[str], dry_run: bool, standby: bool, min_age: float
) -> list[MachineInfo]:
    store = app.store
    ns = app.settings.namespace
    shed: set[str] = set()
    for pool in store.pools():
        pk = PoolKeys(ns, pool)
        # The standby count of the pool's signed settings (none when they do not verify).
        keep = 0 if standby else poolconf.floor_of(store, app.secret.encode(), pk).standby
        if dry_run:
            kept = store.standby(pk)
            ordered = sorted(kept, key=lambda k: -(timestamp(kept[k].get("since")) or 0))
            shed.update(ordered[keep:])
        else:
            shed.update(store.trim_standby(pk, keep))
    orphans = []
    now = store.server_time()
    from ..backends.base import Restartable

    # Only a backend that can start a machine again leaves stopped machines behind.
    restartable = isinstance(app.backend, Restartable)
    for m in app.backend.list():
        # "gone": a record says its machine runs, but its process has ended (local): the
        # destroy marks the record stopped, saying why.
        wanted = m.running or m.state == "gone" or (restartable and m.state == "stopped")
        if not m.pool or not wanted:
            continue
        if m.id not in shed and _in_use(app, m, now, min_age):
            continue
        orphans.append(m)
        if not dry_run:
            with contextlib.suppress(Exception):
                app.backend.destroy(m.id)
            destroyed.append(m.id)
            log.warning(
                "destroyed %s machine %s (slot %s)",
                "orphaned" if m.running else m.state,
                m.id,
                m.detail.get("slot") or "?",
            )
    return orphans


def _in_use(app: Wiring, m: MachineInfo, now: float, min_age: float) -> bool:
    """Whether a machine may still be wanted: it holds a slot, sits in its pool's standby
    set, or was launched too recently for its slot to be known (:data:`lua.MACHINE_WANTED`)."""
    if m.running and m.created_at is not None and now - m.created_at < min_age:
        return True  # just launched: its slot may be on its way
    pk = PoolKeys(app.settings.namespace, m.pool or "")
    slot = m.detail.get("slot") or ""
    wanted = replies.machine_wanted(app.store.eval(lua.MACHINE_WANTED, pk, m.id, slot or "-"))
    return wanted.standby or (bool(slot) and wanted.lease is not None)


def expire(app: Wiring, now: float) -> None:
    """Trim the job and machine indexes of entries older than the records' TTL."""
    store = app.store
    ttl = app.settings.record_ttl
    pools = store.pools()
    with store.errors():
        pipe = store.redis.pipeline(transaction=False)
        for pool in pools:
            pipe.zremrangebyscore(PoolKeys(app.settings.namespace, pool).jobs, "-inf", now - ttl)
        pipe.zremrangebyscore(machines_key(app.settings.namespace), "-inf", now - ttl)
        pipe.execute()
