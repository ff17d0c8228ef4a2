""":meth:`Dispatcher.submit_async <balloons.dispatch.Dispatcher.submit_async>`, and the same
with reads of the job answered in the round trip of its ``SUBMIT`` (the job service answers a
``POST`` with the job it made, read back this way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .dispatch import _submitted

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .job import Job
    from .store.keys import JobKeys
    from .store.writes import SubmitRequest
    from .task import Task, TaskOptions

R = TypeVar("R")


async def submit_read(
    dispatcher: Dispatcher,
    task: Task[Any, R],
    opts: TaskOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    reads: Callable[[JobKeys], list[list[Any]]],
) -> tuple[Job[R], list[Any]]:
    """Store and place the job of this call on the store's asyncio client, with the commands
    ``reads`` gives for the job's keys sent behind its ``SUBMIT`` in the same write: the job
    and the replies of the reads (see :func:`place`)."""
    jk, req = dispatcher.submit_args(task, opts, args, kwargs)
    return await place(dispatcher, task.name, opts, jk, req, reads(jk))


async def place(
    dispatcher: Dispatcher,
    name: str,
    opts: TaskOptions,
    jk: JobKeys,
    req: SubmitRequest,
    reads: list[list[Any]],
) -> tuple[Job[Any], list[Any]]:
    """Store and place the job of ``jk`` and ``req`` (task ``name``), ``reads`` sent behind its
    ``SUBMIT`` in the same write; launch its machine (in a worker thread) when it got a slot.
    The job and the replies of the reads (see
    :meth:`balloons.store.writes.Store.submit_read_async`)."""
    got, read = await dispatcher.app.store.submit_read_async(jk, req, reads)
    job, launch = dispatcher.after_submit(jk, opts, got)
    _submitted(job, name, got.placed, req.created)
    if launch is not None:
        import asyncio

        await asyncio.to_thread(dispatcher.slots.launch, launch)
    return job, read
