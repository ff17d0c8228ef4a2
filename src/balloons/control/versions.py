"""Queued jobs whose code version no machine runs any more (a deploy), run or failed, never
left waiting.

A warm machine takes only jobs of its own tag (:mod:`balloons.compat`), and a process launches
machines only for its own tag's jobs. So a job queued by the old code (submitted, delayed or
retried before a deploy) is *stranded* once no machine of its version is left in its pool and
no supervisor of its version steps there: nothing would ever launch one. Each supervisor step
of code of a known version looks for them in every pool (:data:`lua.STRANDED`) and, once one
has been stranded for ``version_grace`` seconds (its own version's waiters and supervisor had
that long to launch a machine for it):

* **re-routes** it to the current version when the current code can run it: its record
  verifies with the app's secret, its task is registered here, and its arguments, decoded
  with this app's serializer, bind to the task's signature. The job keeps its id, record and
  signature; only its tag changes (its old tag is kept in ``rerouted``, shown in
  ``job.info().note``), and the same step launches a machine of the current version for it;
* else **fails** it, ``FAILED`` with reason ``version_gone`` (``signature_invalid`` for a
  record that does not verify) and a message naming its task and what does not fit.

Jobs of another signing key (another app) are never touched, nor are jobs of a version whose
supervisor still steps in the pool within the grace (a blue/green deploy: its own supervisor
launches for them). The supervisor's code decides, so run it from the same code as the app.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..compat import ANY_VERSION, read_tag
from ..info import Reason
from ..registry import COMMAND_TASK, TASKS
from ..signing import seal_error, verify
from ..store import lua, replies

if TYPE_CHECKING:
    from ..store.keys import PoolKeys
    from .supervisor import Control, StepReport

#: Seconds a job waits stranded before it is re-routed or failed (``Supervisor(version_grace=)``).
DEFAULT_GRACE = 60.0


def step(app: Control, pk: PoolKeys, grace: float, report: StepReport) -> None:
    """Re-route or fail the jobs of pool ``pk`` stranded for ``grace`` seconds; each one's id
    and outcome (``rerouted``, or the failure's reason) go into ``report.versions``."""
    tag = app.compat().tag
    if tag.endswith(ANY_VERSION):
        return  # a process that knows no version takes every version of its key's jobs
    store = app.store
    for found in replies.stranded(store.eval(lua.STRANDED, pk, "scan", tag, grace)):
        ulid, attempt = found.ulid, found.attempt
        job_id = f"{pk.pool}.{ulid}"
        with store.errors():
            rec = store.redis.hmget(pk.job(ulid), "payload", "args", "sig", "compat")
        old = read_tag(rec[3])
        if not old:
            continue
        reason, message = verdict(app, job_id, rec[0] or b"", rec[1] or b"", rec[2] or b"")
        if reason is None:
            args: tuple[Any, ...] = ("retag", tag, grace, ulid, attempt, old)
        else:
            err, etag = seal_error(
                app.secret.encode(),
                job_id,
                attempt,
                {"type": "", "message": message, "traceback": "", "reason": reason},
            )
            args = ("fail", tag, grace, ulid, attempt, old, reason, err, etag)
        if replies.stranded_done(store.eval(lua.STRANDED, pk, *args, jobs=(ulid,))):
            outcome = reason or "rerouted"
            report.versions.append((job_id, outcome))
            lifecycle.emit(
                "version_gone" if reason else "rerouted",
                logging.WARNING,
                job=job_id,
                attempt=attempt,
                old_version=old.partition(".")[2],
                version=tag.partition(".")[2],
                reason=outcome,
                message=message or "re-routed to the current code version",
            )


def verdict(
    app: Control, job_id: str, payload: bytes, data: bytes, sig: bytes
) -> tuple[str | None, str]:
    """``(None, "")`` when this app's code can run the job of record ``payload``, ``data``,
    ``sig``; else the reason and message of its failure."""
    if not verify(app.secret.encode(), payload, data, sig):
        return (
            Reason.SIGNATURE_INVALID.value,
            f"job {job_id} was queued by another code version, and its record does not verify "
            "with this app's secret (altered in Redis?): not run",
        )
    try:
        spec = json.loads(payload)
        name = str(spec["task"])
        ser_name = str(spec.get("ser", "json"))
    except (ValueError, TypeError, KeyError):
        spec, name, ser_name = {}, "?", "json"
    if name == COMMAND_TASK:
        return None, ""  # a command job runs its argv, whatever the code
    gone = (
        f"job {job_id} (task {name}) was queued by code of a version that no machine runs "
        f"any more, and the current code ({app.compat().version}) cannot run it: "
    )
    task = TASKS.get(name)
    if task is None:
        return Reason.VERSION_GONE.value, gone + f"no task {name} is registered in it"
    problem = _unbound(app, task, ser_name, data)
    if problem:
        return Reason.VERSION_GONE.value, gone + problem
    return None, ""


def _unbound(app: Control, task: Any, ser_name: str, data: bytes) -> str:
    """What keeps the stored arguments ``data`` from binding to ``task`` here (``""``: they
    bind)."""
    from ..calls import check_call
    from ..errors import SerializationError
    from ..serialize import get_serializer, loads_call

    own = getattr(app, "serializer", None) or get_serializer("json")
    if ser_name not in (own.name, "json"):
        return f"its arguments are encoded with {ser_name!r}, which this app does not use"
    ser = own if own.name == ser_name else get_serializer("json")
    try:
        args, kwargs = loads_call(ser, data)
        check_call(task, tuple(args), kwargs)
    except SerializationError as exc:
        return str(exc)
    except TypeError as exc:
        return f"its arguments no longer bind ({exc})"
    return ""
