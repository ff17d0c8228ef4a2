"""Tasks the test suite submits. Machines import this module to find them."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import balloons

app = balloons.App(env_allowlist=["ALLOWED_VAR"])


@app.task(timeout=30)
def add(a: int, b: int) -> int:
    return a + b


@app.task(timeout=30)
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@app.task(timeout=30)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(timeout=30)
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(timeout=30)
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@app.task(timeout=30)
def run_then_unload_finish(path: str) -> int:
    """Counts its runs in ``path``, then leaves the server with TAKE's script cached but not
    FINISH's: a machine whose first FINISH meets a server that never ran one."""
    import redis

    from balloons.store import lua

    with open(path, "a") as f:
        f.write("ran\n")
    r = redis.Redis.from_url(os.environ["BALLOONS_REDIS_URL"])
    r.script_flush()
    r.script_load(lua.TAKE)
    r.close()
    return len(Path(path).read_text().splitlines())


@app.task(timeout=30)
def environment() -> dict[str, Any]:
    return {"env": dict(os.environ), "sid": os.getsid(0), "pid": os.getpid(), "ppid": os.getppid()}


@app.task(timeout=30)
def environment_after(flag: str) -> dict[str, Any]:
    """``environment()`` once ``flag`` exists: jobs waiting on it hold their machines."""
    deadline = time.monotonic() + 25
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return environment.fn()


@app.task(timeout=30)
def add_after(flag: str, a: int, b: int) -> int:
    """``a + b`` once ``flag`` exists: the job holds its machine until then."""
    deadline = time.monotonic() + 25
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return a + b


@app.task(timeout=30)
def unserializable_result() -> object:
    return object()


@app.task(timeout=30, memory_mb=128)
def hog(mb: int) -> int:
    blocks = [bytearray(1024 * 1024) for _ in range(mb)]
    return len(blocks)


@app.task(timeout=1)
def sleep_past_timeout(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(timeout=1)
def ignore_timeout(seconds: float) -> float:
    """Blocks the run-timeout signal, as code stuck in C would ignore it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return seconds


@app.task(timeout=1)
def spin_python() -> int:
    """CPU-bound pure Python that never sleeps and swallows every ``Exception`` it meets."""
    n = 0
    while True:
        try:
            n += 1
        except Exception:  # a task that tries to outlive its timeout
            continue


@app.task(timeout=1)
def spin_in_c() -> int:
    """CPU-bound C code that holds the GIL and never checks for signals: neither the
    timeout signal's handler nor any other Python thread runs until it returns."""
    return sum(range(10**13))


@app.task(timeout=30)
def exit_hard(code: int) -> None:
    os._exit(code)


@app.task(timeout=30)
def pid_then_sleep(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def not_a_task() -> None:
    """Importable, but never registered."""


# ------------------------------------------------------------------ pools and retries
capped = app.pool("capped", max_machines=2, idle_timeout=1)
solo = app.pool("solo", max_machines=1, idle_timeout=0.5)
racy = app.pool("racy", max_machines=3, idle_timeout=0.02)


@app.task(pool="capped", timeout=30)
def stamp(seconds: float) -> dict[str, Any]:
    """Sleep, and say where and when it ran: what the cap tests measure."""
    start = time.time()
    time.sleep(seconds)
    return {"pid": os.getpid(), "start": start, "end": time.time()}


@app.task(pool="solo", timeout=60)
def solo_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(pool="solo", timeout=30)
def solo_touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@app.task(pool="racy", timeout=30)
def racy_add(a: int, b: int) -> int:
    return a + b


def _count(path: str) -> int:
    p = Path(path)
    n = int(p.read_text()) + 1 if p.exists() else 1
    p.write_text(str(n))
    return n


@app.task(timeout=30)
def count(path: str) -> int:
    """Counts its runs in ``path``."""
    return _count(path)


@app.task(timeout=30, retries=3, retry_backoff=0.05, retry_on=(ConnectionError,))
def flaky(path: str, failures: int) -> int:
    """Fails with ConnectionError ``failures`` times, then returns the attempt count."""
    n = _count(path)
    if n <= failures:
        raise ConnectionError(f"attempt {n} fails")
    return n


@app.task(timeout=30, retries=3, retry_backoff=0.05, retry_on=(ConnectionError,))
def wrong_kind(path: str) -> None:
    _count(path)
    raise KeyError("not retried: not a ConnectionError")


@app.task(timeout=30, retries=1)
def asks_retry(path: str, delay: float) -> int:
    n = _count(path)
    if n == 1:
        raise balloons.Retry("not yet", delay=delay)
    return n


@app.task(timeout=30, memory_mb=128, retries=2, retry_memory_factor=4.0)
def hungry(mb: int) -> int:
    blocks = [bytearray(1024 * 1024) for _ in range(mb)]
    return len(blocks)


@app.task(timeout=30, memory_mb=128)
def grow_shared(mb: int) -> int:
    """Touches ``mb`` MiB of shared memory: resident, but not counted by the data-segment
    limit, so only the machine's platform can stop it (the Fly emulator's OOM watchdog)."""
    import mmap

    size = mb * 1024 * 1024
    block = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    for offset in range(0, size, 4096):
        block[offset] = 1
    return mb


@app.task(pool="solo", timeout=60)
def deaf_sleep(seconds: float) -> float:
    """Ignores the worker's cancel signal, as code stuck in C would."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    time.sleep(seconds)
    return seconds


@app.task(timeout=30, retries=1, retry_backoff=0.05)
def dies_once(path: str) -> int:
    """The first attempt's machine is killed outright; the second succeeds."""
    n = _count(path)
    if n == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return n


@app.task(timeout=30)
def chatty(lines: int, progress_steps: int = 0) -> int:
    """Prints, writes to stderr and logs (when logging is imported), reporting progress."""
    import logging
    import sys

    for i in range(lines):
        print(f"line {i}")
    print("to stderr", file=sys.stderr)
    print("no newline at the end", end="")
    logging.getLogger("tests.chatty").warning("a warning with %s", "args")
    for step in range(progress_steps):
        balloons.progress((step + 1) / progress_steps, f"step {step + 1}")
    return lines


@app.task(timeout=30)
def print_then_wait(path: str, seconds: float = 20.0) -> str:
    print("waiting for the flag", flush=True)
    deadline = time.monotonic() + seconds
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    print("flag seen")
    return "ok"


@app.task(timeout=30, max_cost=0.0000005)
def costly(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(timeout=60)
def loud(lines: int, width: int) -> int:
    for i in range(lines):
        print(f"{i:06d}" + "x" * width)
    return lines


app.pool("logsolo", max_machines=1, idle_timeout=3)


@app.task(timeout=30, pool="logsolo")
def solo_chatty(lines: int) -> int:
    for i in range(lines):
        print(f"line {i}")
    return lines


@app.task(timeout=30)
def echo_print(text: str) -> str:
    print(text)
    return text


@app.task(timeout=30)
def say(note: str, text: str) -> None:
    """Reports progress with ``note``, prints ``text``, then fails with it as its message."""
    balloons.progress(0.5, note)
    print(text)
    raise RuntimeError(text)


@app.task(timeout=30)
def wait_then_mark(flag: str, mark: str) -> str:
    """Waits for ``flag`` to exist, then writes ``mark`` just before returning."""
    deadline = time.monotonic() + 25
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    Path(mark).write_text("returned")
    return "ok"


@app.task(timeout=30)
def count_then_sleep(path: str, seconds: float) -> int:
    """Counts its runs in ``path``, then sleeps: a healthy job that outlives a few leases."""
    n = _count(path)
    time.sleep(seconds)
    return n


@app.task(timeout=30)
def imported(module: str) -> bool:
    """Whether this machine has imported ``module``."""
    import sys

    return module in sys.modules


# ------------------------------------------------------------------ isolation
# One warm machine per pool, kept between the jobs of a test: what one job leaves behind is
# what the next may see.
for _iso in ("process", "machine", "none"):
    app.pool(f"iso-{_iso}", max_machines=1, idle_timeout=3, isolation=_iso)
LEFT_BEHIND: list[str] = []  # a module global each job appends to


def _leave_state(tag: str) -> dict[str, Any]:
    """What the jobs before left in this interpreter; then leave the same for the next job: a
    module global, an environment variable, a thread of each kind (ending on their own)."""
    seen = {
        "pid": os.getpid(),
        "global": list(LEFT_BEHIND),
        "env": os.environ.get("BALLOONS_TEST_LEFT", ""),
        "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("left-")),
    }
    LEFT_BEHIND.append(tag)
    os.environ["BALLOONS_TEST_LEFT"] = tag
    for daemon in (False, True):
        name = f"left-{'daemon' if daemon else 'plain'}-{tag}"
        threading.Thread(target=time.sleep, args=(2.0,), name=name, daemon=daemon).start()
    return seen


@app.task(pool="iso-process", timeout=30)
def leave_state_process(tag: str) -> dict[str, Any]:
    return _leave_state(tag)


@app.task(pool="iso-machine", timeout=30)
def leave_state_machine(tag: str) -> dict[str, Any]:
    return _leave_state(tag)


@app.task(pool="iso-none", timeout=30)
def leave_state_none(tag: str) -> dict[str, Any]:
    return _leave_state(tag)


@app.task(pool="iso-process", timeout=30, retries=1, retry_backoff=0.05)
def crash_once(path: str, how: str) -> int:
    """The first attempt's process dies (``segv``: a segmentation fault; ``exit``:
    ``os._exit(3)``; ``kill``: SIGKILL, as the kernel's OOM killer sends); the second
    succeeds."""
    n = _count(path)
    if n == 1:
        if how == "segv":
            import ctypes

            ctypes.string_at(0)  # reads address 0
        elif how == "exit":
            os._exit(3)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return n


@app.task(pool="iso-process", timeout=1)
def iso_spin_in_c() -> int:
    """Holds the GIL in C past its timeout: only a kill from outside ends it."""
    return sum(range(10**13))


@app.task(pool="iso-process", timeout=60)
def iso_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(pool="iso-process", timeout=60)
def iso_deaf_sleep(seconds: float) -> float:
    """Ignores the cancel signal, as code stuck in C would."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    time.sleep(seconds)
    return seconds


@app.task(pool="iso-process", timeout=60, retries=1, retry_backoff=0.05)
def iso_fail_once(path: str) -> str:
    """Raises in its first attempt, succeeds in the second."""
    if _count(path) == 1:
        raise RuntimeError("first attempt")
    return "second"


@app.task(pool="iso-process", timeout=60)
def iso_join_cgroup(cgroup: str) -> int:
    """Moves its machine's process (its parent) into the cgroup ``cgroup``: the machine's next
    job processes are forked there."""
    Path(cgroup, "cgroup.procs").write_text(str(os.getppid()))
    return os.getppid()


@app.task(pool="iso-process", timeout=60)
def iso_hog(mib: int) -> int:
    """Allocates (and writes) ``mib`` MiB."""
    return len(b"x" * (mib << 20))


app.pool("spares", max_machines=1, idle_timeout=0)  # a machine per job, gone as it ends


@app.task(pool="spares", timeout=30)
def spare_environment() -> dict[str, Any]:
    """``environment()`` on a machine of its own."""
    return environment.fn()
