"""A chain's or group's member ended on this machine: advance its flow now.

A job whose signed payload names a flow (``link``, see :mod:`balloons.flows`) is a member of a
chain or group. Once its outcome is recorded (by this process, the one that sends ``FINISH``),
the machine advances the flow itself, through the app its task belongs to (imported to run
it), so the next link starts without waiting for a supervisor's step; a supervisor step makes
any advance missed here (the machine died first, or Redis was unreachable). A machine launches
nothing: what it submits is due at once for the idle machines of its pool, this one among
them, as it goes on taking work (else for the supervisor's next launch). Only the jobs of
flows come here, and the client-side modules that advancing needs are imported then:
a machine that runs no chain never imports them.
"""

from __future__ import annotations

import json

from .. import registry
from ..signing import verify
from ..store.replies import Work
from .attempt import log

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from .worker import Worker


def advance(w: Worker, work: Work) -> None:
    """Advance the flow that ``work``'s job is a member of; never raises (the supervisor makes
    an advance that fails here)."""
    job_id = f"{w.pool}.{work.ulid}"
    try:
        if not verify(w.handoff.secret, work.payload, work.args, work.sig):
            return
        spec = json.loads(work.payload)
        flow_id, name = spec.get("link"), spec.get("task")
        if not isinstance(flow_id, str) or not isinstance(name, str):
            return
        task = registry.load(name, spec.get("main"))
        from ..compat import Compat
        from ..control.flows import advance as advance_flow

        # What it submits carries this machine's tag (its code version, as its launcher
        # named it), not one worked out from the tasks this process happens to import.
        task.app._compat = (len(registry.TASKS), Compat(w.pk.tag, "", (), False))
        advance_flow(task.app, flow_id, launch=False)
    except Exception as exc:  # the supervisor's step advances it instead
        log(f"job {job_id}: its flow was not advanced ({type(exc).__name__}: {exc})")
