"""What a local fork server writes to Redis about its machines: each machine's record at its
launch (with what proves its process, :mod:`balloons.backends.identity`) and at its exit (exit
code, signal, a stop asked for), and, for a machine that ended without giving its slot back,
the slot freed and its attempt ended with the machine's reason (retried as its policy allows).
Times are the Redis server's clock as the fork server carries it forward (:meth:`Records.now`).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from ..control.reclaim import end_slot
from ..errors import StoreError
from ..info import Reason, exit_reason
from ..store import keys
from ..store.resp import RespClient, RespError

if TYPE_CHECKING:
    from .forkserver import Child


class Records:
    """A fork server's connections to its machines' Redis servers, and the clock of each."""

    def __init__(self) -> None:
        self.clients: dict[str, RespClient] = {}
        # Redis URL -> (the server's TIME, time.monotonic() when it was read)
        self.clocks: dict[str, tuple[float, float]] = {}

    def close(self) -> None:
        """Close every connection (in a child: the server's are none of its business)."""
        for client in self.clients.values():
            client.close()

    def client(self, url: str) -> RespClient:
        """The connection to the Redis at ``url``, made on first use."""
        client = self.clients.get(url)
        if client is None:
            client = self.clients[url] = RespClient(url, timeout=5.0)
        return client

    def now(self, url: str) -> float:
        """The clock of the Redis server at ``url``: its ``TIME``, read once a minute and
        carried forward on this host's monotonic clock (its wall clock may be off) from the
        reply: it may lag, never lead (a machine's age would read short)."""
        mono = time.monotonic()
        base = self.clocks.get(url)
        if base is None or mono - base[1] > 60.0:
            try:
                sec, usec = self.client(url).execute("TIME")
                now = int(sec) + int(usec) / 1e6
                mono = time.monotonic()
            except (StoreError, RespError, OSError, TypeError, ValueError):  # asked in a minute
                now = time.time() if base is None else base[0] + mono - base[1]
            base = self.clocks[url] = (now, mono)
        return base[0] + mono - base[1]

    def record(self, child: Child, fields: dict[str, Any], ttl: int = 0, new: bool = False) -> None:
        """Write ``fields`` into the machine's record; ``new``: its launch (the record's TTL,
        its place in the machines' index)."""
        if not child.redis_url:
            return
        mk = keys.machine_key(child.namespace, child.machine)
        if new:  # a machine's age decides when a sweep may destroy it: the server's clock
            child.started = fields["created"] = self.now(child.redis_url)
        cmds: list[list[Any]] = [["HSET", mk, *[x for kv in fields.items() for x in kv]]]
        if new:
            zk = keys.machines_key(child.namespace)
            cmds += [
                ["EXPIRE", mk, ttl],
                ["ZADD", zk, child.started, child.machine],
                ["ZREMRANGEBYSCORE", zk, "-inf", child.started - ttl],
            ]
        with contextlib.suppress(StoreError):
            self.client(child.redis_url).pipeline(cmds)

    def exited(self, child: Child, status: int) -> None:
        """The machine's process ended with wait ``status``: record its exit, and end its
        slot with the reason unless its worker gave the slot back."""
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else None
        fields: dict[str, Any] = {"state": "stopped", "exited": self.now(child.redis_url)}
        if sig is not None:
            fields["signal"] = sig
        else:
            fields["exit_code"] = code
        if child.stop_requested:
            fields["requested_stop"] = 1
        self.record(child, fields)
        if code == 0:
            with contextlib.suppress(OSError):
                os.unlink(child.log) if child.log != os.devnull else None
        if child.stop_requested:
            reason, msg = Reason.CANCELLED.value, "the machine was stopped on request"
        elif sig is not None:
            reason, msg = Reason.KILLED.value, f"the machine was killed by signal {sig}"
        else:
            reason, msg = (
                exit_reason(code),
                f"the machine exited with code {code} before recording a result",
            )
        # A worker that gave its slot back leaves nothing to do; otherwise the slot is freed
        # and whatever it was running ends with the reason (or retries).
        self.end_slot(child, reason, msg)

    def end_slot(self, child: Child, reason: str, message: str) -> None:
        """Free the machine's slot, ending the attempt it held with ``reason``."""
        if not child.slot or not child.pool or not child.redis_url:
            return
        client = self.client(child.redis_url)
        pk = keys.PoolKeys(child.namespace, child.pool)
        end_slot(
            client.execute,
            lambda script, pk, *args, jobs=(): client.eval(
                script, keys.script_keys(pk, *jobs), [pk.tag, time.time(), *args]
            ),
            pk,
            child.slot,
            reason,
            message,
            secret=child.secret,
        )
