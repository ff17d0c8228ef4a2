"""Many jobs stored in one round trip (``task.submit_many``): one ``SUBMIT_MANY`` script per
run of jobs that share a pool and its settings, each job placed as ``SUBMIT`` places one.

The jobs of a run are given to the script as a list of nine arguments each (no keys of
their own: the script makes them from each id, in the pool's hash slot), and encoded here a
job at a time rather than an argument at a time. The scripts are pipelined on one connection
of the submit path; the replies are one ``SUBMIT`` reply per job, decoded by
:func:`balloons.store.replies.submit_many`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from . import lua, replies
from .keys import script_keys
from .redisurl import mask_url
from .resp import RespClient, RespError, _encode

if TYPE_CHECKING:
    from .keys import JobKeys
    from .replies import Submitted
    from .writes import Store, SubmitRequest

#: What the jobs of one ``SUBMIT_MANY`` share: their pool's tag, record TTL, pool settings
#: and compatibility tag.
Shared = tuple[str, int, str, str]
#: Jobs per script at most: a script's own cost is paid once for them, while a longer one
#: costs the server more per job (measured: ~16 jobs a script cost least).
RUN = 16
_JOB = b"$%d\r\n%b\r\n" * 4


def submit_batch_start(
    store: Store, items: list[tuple[JobKeys, SubmitRequest]], connect_timeout: float | None
) -> Callable[[], list[Submitted]]:
    """See :meth:`balloons.store.writes.Store.submit_batch_start`."""
    store._own_connections()
    try:
        client = store._idle.pop()
    except IndexError:
        client = RespClient(store.url, timeout=None, connect_timeout=connect_timeout)
    before: list[list[Any]] = []
    listed: list[str] = []
    for pool in dict.fromkeys(jk.pool.pool for jk, _ in items):
        cmds = store._list_pool(pool)
        if cmds:
            before += cmds
            listed.append(pool)
    runs = _runs(items)
    sha = lua.sha(lua.SUBMIT_MANY)
    evals = [_command(sha, run) for run in runs]

    def failed() -> None:
        for pool in listed:
            store._listed.pop(pool, None)
        client.close()  # whatever interrupted it may have left replies unread
        store._idle.append(client)

    try:
        client.send([*before, *(cmd for cmd, _ in evals)], _wire(before, evals))
    except BaseException:
        failed()
        raise

    def done() -> list[Submitted]:
        try:
            got = client.receive(len(before) + len(evals))[len(before) :]
            missing = [i for i, r in enumerate(got) if _noscript(r)]
            if missing:
                # EVAL sends the script itself, and leaves it cached for the next batch.
                again = [["EVAL", lua.SUBMIT_MANY, *evals[i][0][2:]] for i in missing]
                for i, r in zip(missing, client.pipeline(again), strict=True):
                    got[i] = r
        except BaseException:
            failed()
            raise
        store._idle.append(client)
        out: list[Submitted] = []
        for run, raw in zip(runs, got, strict=True):
            if isinstance(raw, RespError):
                raise StoreError(f"Redis at {mask_url(store.url)} refused a command: {raw}")
            decoded = replies.submit_many(raw, len(run))
            for (jk, _), reply in zip(run, decoded, strict=True):
                if reply.new_pool and jk.pool.pool not in listed:
                    store._relist(jk.pool.pool)
                    listed.append(jk.pool.pool)
            out += decoded
        return out

    return done


def _runs(
    items: list[tuple[JobKeys, SubmitRequest]],
) -> list[list[tuple[JobKeys, SubmitRequest]]]:
    """``items`` cut into runs of consecutive jobs that one script can store (same pool, same
    settings: :data:`Shared`), of :data:`RUN` jobs at most."""
    runs: list[list[tuple[JobKeys, SubmitRequest]]] = []
    last: Shared | None = None
    for item in items:
        jk, req = item
        shared = (jk.pool.tag, req.ttl, req.pool_config, req.compat)
        if shared != last or len(runs[-1]) >= RUN:
            runs.append([])
            last = shared
        runs[-1].append(item)
    return runs


def _command(sha: str, run: list[tuple[JobKeys, SubmitRequest]]) -> tuple[list[Any], list[bytes]]:
    """The ``EVALSHA SUBMIT_MANY`` of a run, and its arguments encoded a job at a time (the
    nine arguments of each job, as :func:`~balloons.store.resp._encode` writes them)."""
    jk, req = run[0]
    keys = script_keys(jk.pool)
    args: list[Any] = [jk.pool.tag, repr(req.created), req.ttl, req.pool_config, req.compat]
    encoded = [_encode([args], memo=False).split(b"\r\n", 1)[1]]
    for jk, req in run:
        job = [jk.ulid, req.payload, req.args, req.sig, req.due or "", req.priority]
        job += (req.cpus, req.memory_mb, req.key_digest)
        args += job
        encoded.append(_job(job))
    return ["EVALSHA", sha, len(keys), *keys, *args], encoded


def _job(job: list[Any]) -> bytes:
    u, payload, data, sig = job[0].encode(), job[1], job[2], job[3].encode()
    rest = [x.encode() if x.__class__ is str else str(x).encode() for x in job[4:]]
    head = _JOB % (len(u), u, len(payload), payload, len(data), data, len(sig), sig)
    return head + b"".join(b"$%d\r\n%b\r\n" % (len(x), x) for x in rest)


def _wire(before: list[list[Any]], evals: list[tuple[list[Any], list[bytes]]]) -> bytes:
    """The whole pipeline's bytes: ``before`` and each run's command, its arguments taken
    from their per-job encoding."""
    out = [_encode(before, memo=False)] if before else []
    for cmd, encoded in evals:
        head = cmd[: len(cmd) - 5 - 9 * (len(encoded) - 1)]
        out.append(b"*%d\r\n" % len(cmd) + _encode([head]).split(b"\r\n", 1)[1])
        out += encoded
    return b"".join(out)


def _noscript(reply: object) -> bool:
    """Whether a reply is Redis' ``NOSCRIPT`` refusal (the script did not run)."""
    return isinstance(reply, RespError) and str(reply).startswith("NOSCRIPT")
