"""A dry pass over a machine's first steps, in a process forked ahead of its launch (the local
fork server's spare, see :mod:`balloons.backends.forked`), while it waits.

A forked process shares its parent's pages until it writes one, and each first write costs a
page fault and a copy (a few µs each here, hundreds on a machine's way to its first job). The
pass writes those pages before the job exists: the handoff read, the worker made, a claim's
command encoded and a reply decoded, an error sealed, a result tagged, a log line formatted.
It opens no connection, sends nothing, and runs nothing of a job. Lean imports only.
"""

from __future__ import annotations

import json
import threading
import time

from ..signing import sign_outcome, verify
from ..store import lua, replies
from ..store.keys import script_keys
from ..store.resp import RespClient, _encode
from .attempt import BAD_SLOT
from .handoff import Handoff
from .worker import Worker

_ULID = "0" * 26


def machine() -> None:
    """Make the pages of a machine's start-up this process's own (see the module's doc)."""
    env = {
        "BALLOONS_JOB": f"p.{_ULID}/1",
        "BALLOONS_REDIS_URL": "redis://127.0.0.1:1",  # never connected to
        "BALLOONS_SECRET": "0" * 32,
        "BALLOONS_MACHINE_ID": "m",
    }
    h = Handoff.from_env(env)
    w = Worker(h, RespClient(h.redis_url))
    seal = w._seal(_ULID, 1, BAD_SLOT)
    claim = [w.pk.tag, time.time(), _ULID, 1, h.machine_id, *seal]
    _encode([lua.evalsha(lua.CLAIM, script_keys(w.pk, _ULID), claim)], memo=False)
    raw = [1, b"{}", b"", b"", b"2", b"10", b"", b"process"]
    work = replies.claim(raw, _ULID, 1).work
    if work is not None:
        verify(h.secret, work.payload, work.args, work.sig)  # False: signed by nothing
    json.loads(json.dumps({"args": [], "kwargs": {}}))
    sign_outcome(h.secret, "result/json", f"p.{_ULID}", 1, b"null")
    _ = f"event=started job=p.{_ULID} attempt=1 task=m:f wait_s={time.time():.3f}"
    threading.Thread(target=machine, name="balloons-heartbeat", daemon=True)
