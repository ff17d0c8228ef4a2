"""Which tasks exist: the names ``@app.task`` registered in this process, and how a worker
imports the module that registers a job's task.

A task's name is ``MODULE:QUALNAME``. Tasks defined in a script run as ``__main__`` are
named ``__main__:NAME``; a worker loads that script by path under the module name
``__mp_main__`` (as multiprocessing's spawn start method does), so its
``if __name__ == "__main__":`` block does not run again.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from typing import Any

from .errors import WorkerError

MAIN_ALIAS = "__mp_main__"
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_QUALNAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

#: The task name of a command job (``app.submit_command``): no module registers it.
COMMAND_TASK = "balloons.command:run"

# name -> Task. Typed loosely here so the worker need not import the Task class.
TASKS: dict[str, Any] = {}


def task_name(module: str, qualname: str) -> str:
    """A task's name, ``MODULE:QUALNAME`` (``__mp_main__``, the name multiprocessing gives the
    main script, counts as ``__main__``)."""
    if module == MAIN_ALIAS:
        module = "__main__"
    return f"{module}:{qualname}"


def check_task_name(name: str) -> tuple[str, str]:
    """Split ``MODULE:QUALNAME``, refusing paths, dunder attributes and other tricks."""
    module, sep, qualname = name.partition(":")
    if (
        not sep
        or not _MODULE_RE.match(module)
        or not _QUALNAME_RE.match(qualname)
        or any(part.startswith("__") for part in qualname.split("."))
        or any(part.startswith("__") and part != "__main__" for part in module.split("."))
    ):
        raise WorkerError(
            "task_not_found",
            f"task name {name!r} is not of the form MODULE:FUNCTION "
            "(dotted identifiers, no dunder attributes)",
        )
    return module, qualname


def register(name: str, task: Any) -> None:
    """Record the task registered as ``name`` in this process."""
    TASKS[name] = task


def load(name: str, main_path: str | None = None) -> Any:
    """Import the module that registers ``name`` and return the registered task (a command
    job's name, :data:`COMMAND_TASK`, gives the worker's command runner)."""
    if name == COMMAND_TASK:
        from .machine.command import COMMAND

        return COMMAND
    module, _ = check_task_name(name)
    if name not in TASKS:
        try:
            if module == "__main__":
                _load_main(main_path)
            else:
                importlib.import_module(module)
        except WorkerError:
            raise
        except Exception as exc:
            raise WorkerError(
                "task_not_found", f"cannot import module {module!r} for task {name!r}: {exc!r}"
            ) from exc
    task = TASKS.get(name)
    if task is None:
        raise WorkerError(
            "task_not_found",
            f"task {name!r} is not registered: its module imported, but no @app.task defines it",
        )
    return task


def _load_main(path: str | None) -> None:
    if MAIN_ALIAS in sys.modules:
        return
    if not path:
        raise WorkerError("task_not_found", "a __main__ task needs the script's path")
    spec = importlib.util.spec_from_file_location(MAIN_ALIAS, path)
    if spec is None or spec.loader is None:
        raise WorkerError("task_not_found", f"cannot load script {path!r}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[MAIN_ALIAS] = mod
    script_dir = path.rsplit("/", 1)[0] if "/" in path else "."
    if script_dir not in sys.path:
        sys.path.insert(0, script_dir)
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[MAIN_ALIAS]
        raise
