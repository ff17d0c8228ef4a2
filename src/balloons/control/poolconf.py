"""A pool's cap, warm floor and standby count as the app wrote them: the settings a supervisor
acts on without a submit to vouch for them (the most machines it takes slots for, queued work's
and the floor's; ``min_machines`` idle machines of the pool's size; the stopped machines it keeps).

Every submit stores its pool's settings in the pool's ``cfg`` hash, as ``name value`` pairs
(``conf``) signed with the app's secret (``sig HEX`` last:
:meth:`balloons.pools.Pool.signed_config`).
A supervisor reads them from ``conf`` only when the signature verifies, never from the hash's
other fields: without this, a Redis writer set a pool's floor to its cap and its size to the
largest machine, and the supervisor kept that many idle machines of that size, at the app's
expense; and a cap raised in the hash had it run that many machines at once for queued jobs.
Settings that do not verify (altered in Redis, or written by another secret) and
settings with no signature (written by a version before signatures) count as the defaults: no
floor, no standby machines, the default size, and a cap of none: the supervisor takes no slot
for the pool's queued work (its machines still take it, and the next submit of this app, which
writes the settings again, signed, places under its own declared cap); a warning names the
pool, once per process and kind until they verify again. The next submit of this version
writes them again, signed (and an older client's submit unsigned: upgrade clients and
supervisors together).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..pools import DEFAULT_CPUS, DEFAULT_MEMORY_MB, MAX_MACHINES
from ..signing import verify_pool
from ..store.keys import PoolKeys
from ..untrusted import MAX_CPUS, MAX_MEMORY_MB, integer

log = logging.getLogger("balloons.control.poolconf")

#: (namespace, pool, kind) already warned about; forgotten past this many.
_TOLD: set[tuple[str, str, str]] = set()
_TOLD_MAX = 10_000


@dataclass(frozen=True)
class Floor:
    """The settings of a pool a supervisor acts on without a submit: ``max_machines``,
    ``min_machines``, ``standby`` and the size of a floor machine. ``signed``: read from settings
    that verify."""

    max_machines: int = 0  # unsigned: no slot taken for queued work
    min_machines: int = 0
    standby: int = 0
    cpus: int = DEFAULT_CPUS
    memory_mb: int = DEFAULT_MEMORY_MB
    signed: bool = False


NONE = Floor()


def floor_of(store: Any, secret: bytes, pk: PoolKeys) -> Floor:
    """The pool's floor from its stored settings when their signature verifies with
    ``secret``, else :data:`NONE` (with a warning naming the pool, once)."""
    with store.errors():
        conf_b, min_b = store.redis.hmget(pk.cfg, "conf", "min")
    return verified(conf_b, min_b, secret, pk)


def verified(conf_b: Any, min_b: Any, secret: bytes, pk: PoolKeys) -> Floor:
    """:func:`floor_of` from the hash's ``conf`` and ``min`` fields as read (bytes or None)."""
    if conf_b is None:
        if min_b is not None:
            _warn(pk, "unsigned", "its stored settings carry no signature")
        return NONE
    conf = bytes(conf_b).decode("utf-8", "replace")
    body, sep, sig = conf.rpartition(" sig ")
    if not sep:
        _warn(pk, "unsigned", "its stored settings carry no signature (an older version's?)")
        return NONE
    if not verify_pool(secret, pk.pool, body, sig):
        _warn(pk, "forged", "its stored settings do not verify with the app's secret")
        return NONE
    for kind in ("unsigned", "forged"):  # warned again should they stop verifying
        _TOLD.discard((pk.ns, pk.pool, kind))
    words = body.split()
    given = dict(zip(words[::2], words[1::2], strict=False))
    cap = integer(given.get("cap"), 1, MAX_MACHINES) or 1
    return Floor(
        max_machines=cap,
        min_machines=integer(given.get("min"), 0, cap) or 0,
        standby=integer(given.get("standby"), 0, cap) or 0,
        cpus=integer(given.get("cpus"), 1, MAX_CPUS) or DEFAULT_CPUS,
        memory_mb=integer(given.get("mem"), 64, MAX_MEMORY_MB) or DEFAULT_MEMORY_MB,
        signed=True,
    )


def _warn(pk: PoolKeys, kind: str, why: str) -> None:
    told = (pk.ns, pk.pool, kind)
    if told in _TOLD:
        return
    if len(_TOLD) >= _TOLD_MAX:
        _TOLD.clear()
    _TOLD.add(told)
    log.warning(
        "pool %s: %s: ignored (no warm floor, no standby machines, the default size, no slot "
        "for queued work) until a submit of this app writes them again",
        pk.pool,
        why,
    )
