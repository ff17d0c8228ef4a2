"""balloons: run each background job on its own ephemeral machine.

::

    import balloons

    app = balloons.App()                 # embedded Valkey + local machines

    @app.task(memory_mb=256, timeout=60)
    def add(a: int, b: int) -> int:
        return a + b

    job = add.submit(2, 3)               # returns at once
    job.result(timeout=30)               # 5, computed on a fresh machine
"""

from __future__ import annotations

from .app import App
from .errors import (
    BackendError,
    BalloonsError,
    ConfigError,
    FlowFailed,
    FlyAPIError,
    JobFailed,
    JobNotFound,
    PartiallySubmitted,
    ResultTimeout,
    SerializationError,
    StoreDataError,
    StoreError,
    WorkerError,
)
from .job import Job
from .machine.capture import progress
from .pools import Pool
from .retry import Retry
from .serialize import JSONSerializer, PickleSerializer, Serializer
from .states import JobStatus
from .task import AsyncTask, CallOptions, Task, TaskOptions

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from typing import Any

    from .backends.base import Backend, BackendContext
    from .backends.fly import FlyBackend
    from .backends.local import LocalBackend
    from .control.supervisor import Supervisor
    from .fanout import Call, Mapped, as_completed
    from .flows import Chain, ChainJob, FlowInfo, FlowMember, Group, GroupJob, chain, group
    from .info import AttemptInfo, JobInfo, MachineInfo, MachineSpec
    from .schedules import Cron, Schedule

# Machines import this package on start-up: what the worker never needs (the records, built
# with dataclasses, and the backends) loads on first use.
_LAZY = {
    "AttemptInfo": "balloons.info",
    "JobInfo": "balloons.info",
    "MachineInfo": "balloons.info",
    "MachineSpec": "balloons.info",
    "Backend": "balloons.backends.base",
    "BackendContext": "balloons.backends.base",
    "FlyBackend": "balloons.backends.fly",
    "LocalBackend": "balloons.backends.local",
    "Supervisor": "balloons.control.supervisor",
    "Call": "balloons.fanout",
    "Mapped": "balloons.fanout",
    "as_completed": "balloons.fanout",
    "Cron": "balloons.schedules",
    "Schedule": "balloons.schedules",
    **dict.fromkeys(
        ("Chain", "ChainJob", "FlowInfo", "FlowMember", "Group", "GroupJob", "chain", "group"),
        "balloons.flows",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'balloons' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncTask",
    "AttemptInfo",
    "Backend",
    "BackendContext",
    "BackendError",
    "BalloonsError",
    "Call",
    "CallOptions",
    "Chain",
    "ChainJob",
    "ConfigError",
    "Cron",
    "FlowFailed",
    "FlowInfo",
    "FlowMember",
    "FlyAPIError",
    "FlyBackend",
    "Group",
    "GroupJob",
    "JSONSerializer",
    "Job",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "LocalBackend",
    "MachineInfo",
    "MachineSpec",
    "Mapped",
    "PartiallySubmitted",
    "PickleSerializer",
    "Pool",
    "ResultTimeout",
    "Retry",
    "Schedule",
    "SerializationError",
    "Serializer",
    "StoreDataError",
    "StoreError",
    "Supervisor",
    "Task",
    "TaskOptions",
    "WorkerError",
    "__version__",
    "as_completed",
    "chain",
    "group",
    "progress",
]
