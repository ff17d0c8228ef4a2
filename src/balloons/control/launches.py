"""Which slots taken for queued jobs get a machine: a supervisor step's (``SCALE_UP``'s grants),
and a submit's that went to another queued job than its own (``SUBMIT`` launches the first one
no idle machine takes).

A job's slot gets a machine only when the job's record verifies with the app's secret and the
machine is no larger than the job's signed options allow (its memory grown by its retries'
factor up to their signed limit, as :func:`balloons.retry.plan` grows it). Without this, a job
hash written into Redis, or an altered ``need``, had the supervisor create machines of any
size, as many as the pool's stored cap, at the app's expense: the machines then refused to run
the records, but they had been created and billed. A refused slot gets no machine: its boot
lease lapses and the supervisor's reclaim ends its attempt, as for any launch that never came.
"""

from __future__ import annotations

import logging
from typing import Any

from ..signing import verify
from ..store.keys import PoolKeys
from ..untrusted import json_object


def refusal(store: Any, secret: bytes, pk: PoolKeys, grant: Any) -> str | None:
    """Why no machine is launched for ``grant`` (a ``SCALE_UP`` or ``SUBMIT`` grant, or a
    :class:`~balloons.launcher.Launch`: its ``ulid``, ``attempt``, ``cpus`` and
    ``memory_mb``), or None to launch it. A machine of the warm floor (attempt 0: no job of
    its own) is not checked here."""
    if grant.attempt == 0:
        return None
    with store.errors():
        payload, args, sig = store.redis.hmget(pk.job(grant.ulid), "payload", "args", "sig")
    if not payload or not verify(secret, payload, args or b"", sig or b""):
        return "its record does not verify with the app's secret"
    spec = json_object(payload) or {}
    cpus, memory = _count(spec.get("cpus")), _count(spec.get("memory_mb"))
    if cpus is not None and grant.cpus > cpus:
        return f"its slot asks for {grant.cpus} CPUs where its signed options give {cpus}"
    if memory is not None:
        factor = spec.get("mem_factor")
        if isinstance(factor, int | float) and factor > 1.0:
            memory = max(memory, _count(spec.get("mem_max")) or memory * 8)
        if grant.memory_mb > memory:
            return (
                f"its slot asks for {grant.memory_mb} MB where its signed options allow {memory} MB"
            )
    return None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def refused(app: Any, launch: Any) -> bool:
    """Whether the slot of ``launch`` (a :class:`~balloons.launcher.Launch` for another queued
    job than its submitter's) gets no machine, with a lifecycle event saying why."""
    from .. import lifecycle

    pk = PoolKeys(app.settings.namespace, launch.pool)
    why = refusal(app.store, (app.settings.secret or "").encode(), pk, launch)
    if why:
        lifecycle.emit(
            "launch_refused", logging.WARNING, pool=launch.pool,
            slot=f"{launch.ulid}-{launch.attempt}", error=f"no machine for the slot: {why}",
        )  # fmt: skip
    return why is not None
