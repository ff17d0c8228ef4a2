"""Command jobs: a process (``cmd``), not a Python task, run on a machine of its own.

``app.submit_command(["sh", "-c", "echo hi"], input={...})`` stores a signed job whose task is
:data:`~balloons.registry.COMMAND_TASK` and whose one argument is the command's spec (``v``,
``cmd``, ``env``, ``input``, ``image``, ``retry_exit``, ``service_url``), so the job is placed,
launched, claimed, timed out, cancelled, retried and recorded exactly as a task's job is.

On ``LocalBackend`` the machine's worker runs the command as a local process
(:mod:`balloons.machine.command`). A command that makes no call of the HTTP worker protocol
(a *passive* one) is judged by its exit code: 0 succeeds (result ``None``), any other fails the
attempt with reason ``exit_code=N``, retried only when N is one of ``retry_on_exit_codes``;
its stdout and stderr are the job's log lines. With a service URL (``service_url``, or
``BALLOONS_SERVICE_URL``), its process also gets ``BALLOONS_ATTEMPT_URL`` and
``BALLOONS_ATTEMPT_TOKEN`` (see docs/worker-protocol.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import ConfigError
from .registry import COMMAND_TASK
from .task import Task, TaskOptions

if TYPE_CHECKING:
    from typing import Unpack

    from .app import App
    from .config import Settings
    from .job import Job

__all__ = ["COMMAND_TASK", "command_spec", "command_task"]


class CommandOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`CommandJobs.submit_command` (defaults:
    :data:`COMMAND_DEFAULTS`)."""

    image: str | None
    env: Mapping[str, str] | None
    input: Any
    pool: str
    timeout: float
    retries: int
    retry_on_exit_codes: Sequence[int]
    retry_backoff: float
    cpus: int | None
    memory_mb: int | None
    priority: int
    delay: float | None
    key: str | None
    service_url: str | None


#: What ``submit_command`` uses for an option left out.
COMMAND_DEFAULTS: CommandOptions = {
    "image": None,
    "env": None,
    "input": None,
    "pool": "default",
    "timeout": 600.0,
    "retries": 0,
    "retry_on_exit_codes": (),
    "retry_backoff": 1.0,
    "cpus": None,
    "memory_mb": None,
    "priority": 0,
    "delay": None,
    "key": None,
    "service_url": None,
}

MAX_ARGV = 4096
MAX_ENV = 256
RESERVED_ENV = ("BALLOONS_INPUT_PATH", "BALLOONS_ATTEMPT_URL", "BALLOONS_ATTEMPT_TOKEN")


def _run(spec: dict[str, Any]) -> None:
    """The signature a command job's call binds to (the machine runs
    :func:`balloons.machine.command.run`)."""
    raise NotImplementedError("a command job runs on its machine")


def command_spec(
    cmd: Sequence[str],
    *,
    image: str | None,
    env: Mapping[str, str] | None,
    input: Any,
    retry_on_exit_codes: Iterable[int],
    service_url: str | None,
) -> dict[str, Any]:
    """The checked spec of a command job (its signed argument)."""
    if isinstance(cmd, str) or not isinstance(cmd, Sequence):
        raise ConfigError(f"cmd must be a list of strings (an argv), got {cmd!r}")
    argv = list(cmd)
    if not argv or not all(isinstance(a, str) for a in argv) or len(argv) > MAX_ARGV:
        raise ConfigError(f"cmd must be a non-empty list of strings (an argv), got {cmd!r}")
    if not argv[0] or "\0" in "".join(argv):
        raise ConfigError(f"cmd[0] must name a program, got {argv[0]!r}")
    envd = dict(env or {})
    if len(envd) > MAX_ENV or not all(
        isinstance(k, str) and k and "=" not in k and "\0" not in k and isinstance(v, str)
        for k, v in envd.items()
    ):
        raise ConfigError(
            f"env must map up to {MAX_ENV} variable names (no '=') to strings, got {env!r}"
        )
    taken = sorted(set(envd) & set(RESERVED_ENV))
    if taken:
        raise ConfigError(f"env may not set {taken}: balloons sets them for the machine")
    if image is not None and (not isinstance(image, str) or not image):
        raise ConfigError(f"image must be a non-empty image reference, got {image!r}")
    codes = list(retry_on_exit_codes)
    if not all(type(c) is int and 1 <= c <= 255 for c in codes):
        raise ConfigError(f"retry_on_exit_codes must be integers from 1 to 255, got {codes!r}")
    try:
        json.dumps(input, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"input must be JSON (no NaN or infinity): {exc}") from None
    if service_url is not None and not (
        isinstance(service_url, str) and service_url.startswith(("http://", "https://"))
    ):
        raise ConfigError(f"service_url must be an http(s) URL, got {service_url!r}")
    return {
        "v": 1,
        "cmd": argv,
        "env": envd,
        "input": input,
        "image": image,
        "retry_exit": sorted(set(codes)),
        "service_url": service_url or "",
    }


def command_task(
    app: App,
    *,
    pool: str,
    timeout: float,
    retries: int,
    retry_backoff: float,
    cpus: int | None,
    memory_mb: int | None,
    priority: int,
    delay: float | None,
    key: str | None,
) -> Task[[dict[str, Any]], None]:
    """A task handle submitting command jobs with these options (not registered: no module
    defines it, the worker knows its name)."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout)) or timeout <= 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    opts = TaskOptions(
        pool=pool,
        timeout=float(timeout),
        retries=retries,
        retry_backoff=retry_backoff,
        cpus=cpus,
        memory_mb=memory_mb,
        priority=priority,
        retry_on=(),
    )
    task: Task[[dict[str, Any]], None] = Task(app, _run, COMMAND_TASK, opts)
    call = {k: v for k, v in (("delay", delay), ("key", key)) if v is not None}
    return task._with(call) if call else task


def submit(app: App, cmd: Sequence[str], options: dict[str, Any]) -> Job[None]:
    """``app.submit_command``: see :meth:`balloons.App.submit_command`."""
    task, spec = _prepare(app, cmd, options)
    return task.submit(spec)


async def submit_async(app: App, cmd: Sequence[str], options: dict[str, Any]) -> Job[None]:
    task, spec = _prepare(app, cmd, options)
    return await task.submit_async(spec)


def _prepare(
    app: App, cmd: Sequence[str], options: dict[str, Any]
) -> tuple[Task[[dict[str, Any]], None], dict[str, Any]]:
    unknown = sorted(options.keys() - COMMAND_DEFAULTS.keys())
    if unknown:
        raise TypeError(
            f"submit_command() got unknown option(s) {unknown}: expected some of "
            f"{sorted(COMMAND_DEFAULTS)}"
        )
    o: dict[str, Any] = {**COMMAND_DEFAULTS, **options}
    url = o.pop("service_url", None)
    if url is None:
        url = app.service_url
    spec = command_spec(
        cmd,
        image=o.pop("image"),
        env=o.pop("env"),
        input=o.pop("input"),
        retry_on_exit_codes=o.pop("retry_on_exit_codes"),
        service_url=url,
    )
    return command_task(app, **o), spec


#: Where a command's input is written on a machine of its own (Fly's ``files``).
INPUT_PATH = "/balloons/input.json"


def read_command(app: Any, pool: str, ulid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A command job's verified payload and spec, read from its record; None when the job is
    no command job, or its record does not verify (hostile: nothing of it is used then)."""
    from .signing import verify
    from .store.keys import JobKeys

    jk = JobKeys.of(app.settings.namespace, f"{pool}.{ulid}")
    with app.store.errors():
        payload, args, sig = app.store.redis.hmget(jk.job, "payload", "args", "sig")
    if not payload or not verify(app.secret.encode(), payload, args or b"", sig or b""):
        return None
    try:
        head = json.loads(payload)
        if head.get("task") != COMMAND_TASK or head.get("ser") != "json":
            return None
        spec = json.loads(args)["args"][0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return (head, spec) if isinstance(spec, dict) and spec.get("v") == 1 else None


def with_command(app: Any, spec: Any, launch: Any) -> Any:
    """``spec`` (a :class:`~balloons.info.MachineSpec`) made the machine of a command job on a
    backend that runs images: the job's ``image`` (default: the app's), its argv, its env with
    the input file and, with a service URL, the attempt's URL and token; nothing else of the
    app's. Unchanged for any other job."""
    import base64
    import dataclasses
    import time

    got = read_command(app, launch.pool, launch.ulid)
    if got is None:
        return spec
    head, command = got
    job_id, attempt = f"{launch.pool}.{launch.ulid}", launch.attempt
    env = {str(k): str(v) for k, v in (command.get("env") or {}).items()}
    env["BALLOONS_INPUT_PATH"] = INPUT_PATH
    url = command.get("service_url") or ""
    if isinstance(url, str) and url:
        from .service import tokens

        timeout = float(head.get("timeout") or 0) or 86400.0
        boot = app.get_pool(launch.pool).boot_timeout
        expires = time.time() + boot + timeout + tokens.GRACE
        env["BALLOONS_ATTEMPT_URL"] = tokens.attempt_url(url, job_id, attempt)
        env["BALLOONS_ATTEMPT_TOKEN"] = tokens.mint(app.secret.encode(), job_id, attempt, expires)
    data = json.dumps(command.get("input")).encode()
    machine = {
        "image": command.get("image") or None,
        "cmd": list(command["cmd"]),
        "env": env,
        "files": [{"guest_path": INPUT_PATH, "raw_value": base64.b64encode(data).decode()}],
    }
    return dataclasses.replace(spec, command=machine)


def attempt_env(app: Any, pool: str, ulid: str, attempt: int, timeout: float) -> dict[str, str]:
    """The worker protocol's variables for an attempt's machine: its URL and token (valid for
    the pool's boot timeout plus ``timeout`` plus the grace)."""
    import time

    from .errors import BackendError
    from .service import tokens

    url = app.service_url
    if not url:
        raise BackendError(
            f"pool {pool!r} speaks the worker protocol: set App.service_url or "
            "BALLOONS_SERVICE_URL to the job service's URL"
        )
    job_id = f"{pool}.{ulid}"
    boot = app.get_pool(pool).boot_timeout
    expires = time.time() + boot + (float(timeout) or 86400.0) + tokens.GRACE
    return {
        "BALLOONS_ATTEMPT_URL": tokens.attempt_url(url, job_id, attempt),
        "BALLOONS_ATTEMPT_TOKEN": tokens.mint(app.secret.encode(), job_id, attempt, expires),
    }


class CommandJobs:
    """``App.submit_command``, its async twin and ``App.service_url`` (a base of
    :class:`~balloons.App`)."""

    _service_url: str | None = None
    if TYPE_CHECKING:
        settings: Settings

    @property
    def service_url(self) -> str | None:
        """The base URL of the job service machines of the worker protocol call
        (``BALLOONS_SERVICE_URL`` unless set here)."""
        return self._service_url or self.settings.env.get("BALLOONS_SERVICE_URL") or None

    @service_url.setter
    def service_url(self, url: str | None) -> None:
        if url is not None and not (
            isinstance(url, str) and url.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"service_url must be an http(s) URL, got {url!r}")
        self._service_url = url

    def submit_command(self, cmd: Sequence[str], **options: Unpack[CommandOptions]) -> Job[None]:
        """Store a command job and start its machine: ``cmd`` (an argv) runs on a machine of
        its own (locally: a process, ``cmd[0]`` found on PATH, in a fresh temporary directory;
        on Fly: a machine of ``image``), its ``input`` (JSON) in the file named by
        ``BALLOONS_INPUT_PATH``. Exit code 0 succeeds (result ``None``, unless the command
        completed with a result over the HTTP worker protocol); any other fails the attempt
        with reason ``exit_code=N``, retried (up to ``retries``) only when N is in
        ``retry_on_exit_codes``. Its stdout and stderr are the job's log lines. With
        ``service_url`` (default ``BALLOONS_SERVICE_URL``) the process also gets its
        attempt's URL and token (docs/worker-protocol.md), and never the store's."""
        return submit(self, cmd, options)  # type: ignore[arg-type]

    async def submit_command_async(
        self, cmd: Sequence[str], **options: Unpack[CommandOptions]
    ) -> Job[None]:
        """:meth:`submit_command` for asyncio."""
        return await submit_async(self, cmd, options)  # type: ignore[arg-type]
