"""``POST /v1/jobs`` after its body is checked: the job handed to the library's submit, and
the job resource of the answer read in the same round trip as the job's ``SUBMIT``
(:func:`balloons.dispatch_async.submit_read`), so a submit costs one round trip to Redis.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..dispatch_async import submit_read
from ..errors import ConfigError, SerializationError, StoreError
from . import resources, submission
from .problems import Problem

if TYPE_CHECKING:
    from ..app import App
    from ..job import Job
    from ..store.keys import JobKeys


async def submit_task(
    app: App, task: Any, job: submission.TaskJob, meta: str | None, read_back: bool
) -> tuple[Job[Any], resources.Raw | None]:
    """Submit a checked task job through the library (``task``: the registered task, bound
    to ``app``); its service record ``meta`` (kind and labels) written with it. The job, and
    its keys as read right behind its ``SUBMIT`` when ``read_back`` (None when they are not
    read, or not as :func:`resources.read` reads them: the caller reads them again)."""
    c = job.common
    options: dict[str, Any] = {
        name: value
        for name, value in (
            ("pool", c.pool),
            ("timeout", c.timeout),
            ("retries", c.retries),
            ("cpus", c.cpus),
            ("memory_mb", c.memory_mb),
            ("at", c.at),
            ("delay", c.delay),
        )
        if value is not None
    }
    kwargs = job.kwargs
    if c.has_input:
        if "input" in kwargs:
            raise submission.invalid("give the task's input as 'input' or kwargs.input")
        kwargs = {**kwargs, "input": c.input}
    ttl = app.settings.record_ttl

    def reads(jk: JobKeys) -> list[list[Any]]:
        # The service record goes right behind the SUBMIT, as it did once its reply was in.
        wrote = [["SET", jk.meta, meta, "EX", ttl]] if meta is not None else []
        return wrote + resources.read_commands(jk) if read_back else wrote

    try:
        bound = task.options(**options) if options else task
        submitted, got = await submit_read(
            app.dispatcher, bound, bound.opts, tuple(job.args), kwargs, reads
        )
    except TypeError as exc:
        raise Problem(422, "invalid-arguments", str(exc)) from None
    except SerializationError as exc:
        raise Problem(422, "invalid-arguments", str(exc)) from None
    except ConfigError as exc:
        raise Problem(422, "invalid-options", str(exc)) from None
    if meta is not None:
        wrote, got = got[0], got[1:]
        if wrote != b"OK" and wrote is not True:  # True: redis-py's (a cluster's)
            raise StoreError(f"Redis refused the service record of job {submitted.id}: {wrote}")
    raw = resources.raw_of(got) if read_back else None
    return submitted, raw if isinstance(raw, resources.Raw) else None


async def submit_command(app: App, job: submission.CommandJob) -> Job[Any]:
    """Hand a checked command job to the command-job code (``App.submit_command_async``)."""
    c = job.common
    options: dict[str, Any] = {
        name: value
        for name, value in (
            ("image", job.command.image),
            ("env", job.command.env or None),
            ("pool", c.pool),
            ("timeout", c.timeout),
            ("retries", c.retries),
            ("retry_on_exit_codes", job.retry_on_exit_codes or None),
            ("cpus", c.cpus),
            ("memory_mb", c.memory_mb),
            ("delay", c.delay),
        )
        if value is not None
    }
    if c.at is not None:  # the command-job call takes a delay: from this host's clock
        options["delay"] = max(0.0, c.at.timestamp() - time.time())
    if c.has_input:
        options["input"] = c.input
    try:
        submitted: Job[Any] = await app.submit_command_async(job.command.cmd, **options)
    except (ConfigError, SerializationError) as exc:
        raise Problem(422, "invalid-options", str(exc)) from None
    return submitted
