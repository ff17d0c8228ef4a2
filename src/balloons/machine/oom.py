"""Out-of-memory kills: the kernel's count, read from the machine's memory cgroup or
``/proc/vmstat``, so that a job process that died of ``SIGKILL`` is told apart from a kill
by someone else (see :mod:`balloons.machine.isolate`). Standard library only.
"""

from __future__ import annotations

#: The kernel's count of out-of-memory kills when last read (None: not read, or unreadable).
LAST: list[int | None] = [None]


def killed() -> bool:
    """Whether the kernel counted an out-of-memory kill since the count was last read (the
    machine's first job, or as it went idle): a child that died of ``SIGKILL`` meanwhile was
    that kill, unless the parent sent it."""
    before, LAST[0] = LAST[0], oom_kills()
    return before is not None and LAST[0] is not None and LAST[0] > before


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup
    (a container's limit; cgroup v2 counts those below it too), else on the whole machine
    (``/proc/vmstat``: a VM such as a Fly Machine). None where none of these can be read."""
    try:
        with open("/proc/self/cgroup", "rb") as fh:
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        controllers, path = parts[1], parts[2].rstrip("/")
        if controllers == "":  # cgroup v2: memory.events, where this cgroup has a limit
            found = _counter(f"/sys/fs/cgroup{path}/memory.events", "oom_kill")
        elif "memory" in controllers.split(","):  # cgroup v1
            found = _counter(f"/sys/fs/cgroup/memory{path}/memory.oom_control", "oom_kill")
        else:
            continue
        if found is not None:
            return found
    return _counter("/proc/vmstat", "oom_kill")


def _counter(path: str, name: str) -> int | None:
    """The value of ``name`` in a kernel file of ``name value`` lines, None if there is none."""
    try:
        with open(path, "rb") as fh:
            for line in fh.read().decode(errors="replace").splitlines():
                key, _, value = line.partition(" ")
                if key == name and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return None
