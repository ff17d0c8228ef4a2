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

from .app import App
from .backends.base import Backend, BackendContext
from .backends.local import LocalBackend
from .errors import (
    BackendError,
    BalloonsError,
    ConfigError,
    JobFailed,
    JobNotFound,
    ResultTimeout,
    SerializationError,
    StoreError,
    WorkerError,
)
from .job import Job
from .serialize import JSONSerializer, PickleSerializer, Serializer
from .status import AttemptInfo, JobInfo, JobStatus, MachineInfo, MachineSpec
from .task import Task, TaskOptions

__version__ = "0.1.0"

__all__ = [
    "App",
    "AttemptInfo",
    "Backend",
    "BackendContext",
    "BackendError",
    "BalloonsError",
    "ConfigError",
    "JSONSerializer",
    "Job",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "LocalBackend",
    "MachineInfo",
    "MachineSpec",
    "PickleSerializer",
    "ResultTimeout",
    "SerializationError",
    "Serializer",
    "StoreError",
    "Task",
    "TaskOptions",
    "WorkerError",
    "__version__",
]
