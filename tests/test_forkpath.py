"""One fork server per socket path: a second server started for a path that a live server
serves exits at once, binding nothing, and the first serves on; a server started while the
holder drains takes the path once it is let go. Real servers, started as a launcher starts
them (``python -m balloons.backends.forkserver --daemonize``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import balloons
from balloons.backends import forkpath
from balloons.backends.local import LocalBackend, _send
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def start(state: Path, sock: str) -> tuple[int, str]:
    """Start a fork server for ``sock`` as a launcher does: the call returns once it listens
    (or once it has found the path served by another). Its exit code, and what it logged."""
    argv = [sys.executable, "-m", "balloons.backends.forkserver", "--socket", sock]
    argv += ["--idle", "30", "--daemonize", "--state", str(state)]
    log = state / "forkserver.log"
    with open(log, "wb") as out:  # the server lives on: never a pipe the call would wait on
        code = subprocess.run(argv, stdout=out, stderr=out, timeout=60, check=False).returncode
    return code, log.read_text()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose fork servers are all shut down after the test."""
    state = tmp_path / "state"
    state.mkdir()
    pids: list[int] = []
    yield state
    for sock in state.glob("*.sock"):
        try:
            pids.append(_send(str(sock), {"op": "ping"})["pid"])
            _send(str(sock), {"op": "shutdown"})
        except OSError:
            pass
    wait_for(lambda: not any(alive(p) for p in pids), "the fork servers to exit")


def test_a_second_server_for_a_served_path_exits_and_the_first_serves_on(state: Path) -> None:
    sock = str(state / "fs.sock")
    assert start(state, sock)[0] == 0
    first = _send(sock, {"op": "ping"})["pid"]
    code, log = start(state, sock)
    # The first still serves the path: the second bound nothing (else the first would be
    # orphaned, its socket taken), and said why it left.
    assert _send(sock, {"op": "ping"})["pid"] == first
    assert code == 0 and "served by another server" in log


def test_servers_started_at_once_for_one_path_leave_one(state: Path) -> None:
    sock = str(state / "fs.sock")
    argv = [sys.executable, "-m", "balloons.backends.forkserver", "--socket", sock]
    argv += ["--idle", "30", "--state", str(state)]
    procs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        wait_for(lambda: forkpath.listening(sock), "a server to listen")
        serving = _send(sock, {"op": "ping"})["pid"]
        others = [p for p in procs if p.pid != serving]
        assert len(others) == 2
        for p in others:  # each found the path served and exited, binding nothing
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0 and "served by another server" in err
        assert _send(sock, {"op": "ping"})["pid"] == serving
    finally:
        for p in procs:
            if p.poll() is None:
                _send(sock, {"op": "shutdown"})
                p.communicate(timeout=60)


def test_a_server_started_as_the_holder_drains_takes_the_path(state: Path) -> None:
    sock = str(state / "fs.sock")
    assert start(state, sock)[0] == 0
    first = _send(sock, {"op": "ping"})["pid"]
    _send(sock, {"op": "shutdown"})  # it unlinks its socket and lets the path go
    assert start(state, sock)[0] == 0
    second = _send(sock, {"op": "ping"})["pid"]
    assert second != first
    wait_for(lambda: not alive(first), "the first server to exit")


def test_a_machine_never_holds_the_path(state: Path) -> None:
    """The lock's descriptor is closed in the server's children (the spare forked ahead of a
    launch becomes a machine): the claim of a path ends with its server, whatever it forked."""
    sock = str(state / "fs.sock")
    assert start(state, sock)[0] == 0
    spare = wait_for(lambda: _send(sock, {"op": "ping"})["spare"], "a spare to be forked")
    server = _send(sock, {"op": "ping"})["pid"]

    def holds(pid: int) -> bool:
        found = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                found.append(os.readlink(fd))
        return sock + ".lock" in found

    assert holds(server) and not holds(spare)


def test_a_claim_is_the_holders_until_it_lets_go(tmp_path: Path) -> None:
    claim = forkpath.PathClaim(str(tmp_path / "fs.sock"))
    assert claim.take(wait=0)
    other = forkpath.PathClaim(claim.path)
    assert not other.take(wait=0.2)  # held, though no server listens on the path yet
    claim.release()
    assert other.take(wait=0)
    other.release()


def _unix_paths(pid: int) -> set[str]:
    """The paths of the unix sockets process ``pid`` holds (an accepted connection shows its
    listener's path in /proc/net/unix)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    paths = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes:
            paths.add(fields[7])
    return paths


def test_a_machine_holds_no_connection_of_its_fork_server(tmp_path: Path) -> None:
    """A machine forked while the server answers its launch closes the server's end of that
    launch's connection (it held it for its whole life, and so did the task's code)."""
    app = balloons.App(state_dir=tmp_path / "state")
    app.pool("default", isolation="none", max_machines=3)  # the task's pid is the machine's
    task = balloons.Task(app, tasks.pid_then_sleep.fn, tasks.pid_then_sleep.name,
                         tasks.pid_then_sleep.opts)  # fmt: skip
    files = [tmp_path / f"m{i}" for i in range(3)]
    jobs = [task.submit(str(f), 60) for f in files]  # at once: the spare takes one at most
    pids: list[int] = []
    try:
        for f in files:
            pids.append(int(wait_for(lambda f=f: f.exists() and f.read_text())))
        backend = app.backend
        assert isinstance(backend, LocalBackend)
        path = backend.socket_path()
        server = _send(path, {"op": "ping"})["pid"]
        assert path in _unix_paths(server)  # the check sees the listener's path
        for pid in pids:
            assert path not in _unix_paths(pid), pid
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for job in jobs:
            job.cancel()
        app.close()
