"""A chain's or group's member ended on this machine: advance its flow now.

A job whose signed payload names a flow (``link``, see :mod:`balloons.flows`) is a member of a
chain or group. Once its outcome is recorded (by this process, the one that sends ``FINISH``),
the machine advances the flow itself, through the app its task belongs to (imported to run
it), so the next link starts without a supervisor or a waiting client:

* a member this machine can take itself (its pool, no bigger than the job it ran, and an
  isolation that lets it take another job) is submitted due now through the delayed set (it
  takes no slot), and the machine waits for it to fall due before it asks for work, so it
  takes it even with no idle timeout;
* any other member (another pool, a bigger size, isolation ``"machine"``) is submitted as a
  client submits it, launching its machine, when the app's backend lets a machine launch
  (``LocalBackend``: :class:`~balloons.backends.base.MachineLaunches`). A machine of a pool
  with isolation ``"machine"`` gives its slot back first, so a pool at its cap has room for
  the next link's machine;
* elsewhere (a Fly machine holds no API token) it is submitted due now, for an idle machine
  of its pool to take, else for the next supervisor step (or a client waiting on the flow)
  to launch its machine.

A supervisor step makes any advance missed here (the machine died first, or Redis was
unreachable). Only the jobs of flows come here, and the client-side modules that advancing
needs are imported then: a machine that runs no chain never imports them.
"""

from __future__ import annotations

import json
import time

from .. import registry
from ..signing import verify
from ..store.replies import Work
from .attempt import log

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from typing import Any

    from .worker import Worker


def advance(w: Worker, work: Work) -> Any:
    """Advance the flow that ``work``'s job is a member of; never raises (the supervisor makes
    an advance that fails here). Returns the reply of the ``TAKE`` that gave this machine's
    slot back (isolation ``"machine"``, before a launch), for the worker to act on; else
    None."""
    job_id = f"{w.pool}.{work.ulid}"
    took = None
    try:
        if not verify(w.handoff.secret, work.payload, work.args, work.sig):
            return None
        spec = json.loads(work.payload)
        flow_id, name = spec.get("link"), spec.get("task")
        if not isinstance(flow_id, str) or not isinstance(name, str):
            return None
        task = registry.load(name, spec.get("main"))
        from ..control.flows import DUE_NOW
        from ..control.flows import advance as advance_flow
        from .handoff import machine_compat

        app = task.app
        # What it submits carries this machine's tag (its code version, as its launcher
        # named it), not one worked out from the tasks this process happens to import.
        app.pin_compat(machine_compat(w.compat))
        launch = _may_launch(app)
        if launch and w.retire:
            took = w.take("retire")
        here = None if w.retire else _fits(app, w.pool, spec)
        if advance_flow(app, flow_id, launch=launch, here=here) and here is not None:
            time.sleep(2 * DUE_NOW)  # what it submitted for itself is due at its next TAKE
        if took is not None:
            _launch_queued(app, flow_id)
    except Exception as exc:  # the supervisor's step advances it instead
        log(f"job {job_id}: its flow was not advanced ({type(exc).__name__}: {exc})")
    return took


def _launch_queued(app: Any, flow_id: str) -> None:
    """The last act of a machine that gave its slot back (isolation ``"machine"``): a member
    of the flow still queued (submitted by another advancer, the submitter among them, while
    this machine held its pool's last slot under the cap) gets its machine launched, as a
    client waiting on it would (``App.check_lapsed``: the pool's queued work under its cap).
    A waiter that checked the pool a moment before has the turn for
    :data:`~balloons.control.supervisor.POOL_CHECK_TURN` seconds: tried until it passes."""
    from ..control.supervisor import POOL_CHECK_TURN
    from ..flowrecords import member_statuses, read_record
    from ..states import JobStatus
    from ..store.keys import JobKeys

    rec = read_record(app, flow_id)
    if rec is None or rec.end is not None:
        return
    until = time.monotonic() + 2 * POOL_CHECK_TURN
    for job_id in rec.jobs.values():
        while member_statuses(app, [job_id])[0] is JobStatus.QUEUED:
            if app.check_lapsed(JobKeys.of(app.settings.namespace, job_id)):
                break
            if time.monotonic() > until:
                return
            time.sleep(0.25)


def _may_launch(app: Any) -> bool:
    """Whether this machine may launch machines through ``app``'s backend."""
    from ..backends.base import MachineLaunches

    try:
        backend = app.backend
    except Exception:  # a backend this machine cannot make: it launches nothing
        return False
    return isinstance(backend, MachineLaunches) and backend.launches_from_machines is True


def _fits(app: Any, pool: str, ran: dict[str, Any]) -> Any:
    """Whether a member (its spec's entry) is one this machine takes itself: of its pool and
    no bigger than the job it ran (``ran``: that job's verified payload)."""
    cpus, mem = ran.get("cpus"), ran.get("memory_mb")

    def fits(link: dict[str, Any]) -> bool:
        opts = link.get("opts")
        if not isinstance(opts, dict) or opts.get("pool") != pool:
            return False
        p = app.get_pool(pool)
        want = (opts.get("cpus") or p.cpus, opts.get("memory_mb") or p.memory_mb)
        try:
            return bool(want[0] <= cpus and want[1] <= mem)
        except TypeError:  # not numbers: launched as any other member
            return False

    return fits
