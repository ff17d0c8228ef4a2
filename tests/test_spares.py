"""The fork server's spare: a machine's process forked ahead of its launch, handed its launch
request. Real Valkey, real machines (``LocalBackend``'s forked processes)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from balloons import compat
from balloons.backends import forked
from balloons.backends.local import LocalBackend
from balloons.machine import prefault
from balloons.machine.execute import EXIT_USAGE
from tests import tasks
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cold() -> dict[str, object]:
    """What ``spare_environment`` saw, run on a machine of its own (the pool's last is gone)."""
    stats = tasks.app.store.pool_stats
    wait_for(lambda: stats("spares")["machines"] == 0, "the pool's machines to end")
    seen: dict[str, object] = tasks.spare_environment.submit().result(timeout=60)
    return seen


def _spare(backend: LocalBackend) -> int:
    """The pid of the fork server's spare, once it has one."""
    return int(
        wait_for(lambda: backend._request({"op": "ping"}).get("spare"), "the server's spare")
    )


def test_a_launch_goes_to_the_spare_which_the_server_forks_again() -> None:
    backend = tasks.app.backend
    assert isinstance(backend, LocalBackend)
    _cold()  # the fork server is up
    spare = _spare(backend)
    out = _cold()
    # The spare became the job's machine (its job runs in its child): its own session, the
    # launch's environment.
    assert out["sid"] == out["ppid"] == spare
    env = out["env"]
    assert isinstance(env, dict) and env["BALLOONS_JOB"].startswith("spares.")
    assert wait_for(lambda: _spare(backend) != spare, "a new spare")


def test_a_spare_killed_behind_the_servers_back_is_replaced_at_the_launch() -> None:
    backend = tasks.app.backend
    assert isinstance(backend, LocalBackend)
    _cold()
    spare = _spare(backend)
    os.kill(spare, signal.SIGKILL)
    wait_for(lambda: not _alive(spare), "the spare to die")
    out = _cold()
    assert out["ppid"] != spare  # a machine forked for the launch instead
    assert out["sid"] == out["ppid"]


def test_a_spare_let_go_exits_and_one_handed_a_request_becomes_its_machine(
    tmp_path: Path,
) -> None:
    left = forked.fork_spare(lambda: None)
    left.close()
    assert os.waitpid(left.pid, 0)[1] == 0  # the end of its pipe: it exits 0
    log = tmp_path / "machine.log"
    handed = forked.fork_spare(os.setsid)
    env = {"BALLOONS_REDIS_URL": "redis://127.0.0.1:1", "SPARE_TEST": "1"}  # no BALLOONS_JOB
    assert handed.hand({"env": env, "log": str(log), "mode": "fork"})
    status = os.waitpid(handed.pid, 0)[1]
    assert os.waitstatus_to_exitcode(status) == EXIT_USAGE  # the worker read the request's env
    assert log.exists()  # its output goes to the request's log
    gone = forked.fork_spare(lambda: None)
    os.kill(gone.pid, signal.SIGKILL)
    os.waitpid(gone.pid, 0)
    assert not gone.hand({"env": {}, "mode": "fork"})  # gone: the server forks instead


def test_the_dry_pass_connects_to_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dry pass opened a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    prefault.machine()


def test_the_version_digest_reads_a_task_module_again_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = tmp_path / "mod.py"
    mod.write_text("x = 1\n")
    opened: list[str] = []
    real_open = open

    def counting_open(path: str, *args: object, **kwargs: object) -> object:
        opened.append(path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(compat, "open", counting_open, raising=False)
    first = compat.source_version([str(mod)])
    assert compat.source_version([str(mod)]) == first and opened == [str(mod)]
    mod.write_text("x = 2\n")  # the same size: its modification time tells
    os.utime(mod, ns=(1, 1))
    changed = compat.source_version([str(mod)])
    assert changed != first and len(opened) == 2
    mod.write_text("x = 1\n")
    assert compat.source_version([str(mod)]) == first  # the content decides, not the stat
    mod.unlink()
    assert compat.source_version([str(mod)]) not in (first, changed)


def test_a_spare_that_cannot_be_forked_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from balloons.backends import forkserver

    def no_fork(leave: object) -> forked.Spare:
        raise OSError(11, "Resource temporarily unavailable")

    server = forkserver.ForkServer(str(tmp_path / "fs.sock"), idle=1.0)
    try:
        monkeypatch.setattr(forked, "fork_spare", no_fork)
        server._refill()  # no machine runs: a spare is due, and the fork fails
        assert server.spare is None and server.refill_at > 0
        calls: list[object] = []
        monkeypatch.setattr(forked, "fork_spare", lambda leave: calls.append(leave))
        server._refill()
        assert calls == []  # not before a second has passed
        server.refill_at = 0.0
        server._refill()
        assert len(calls) == 1
    finally:
        server.listener.close()
        os.close(server.wake_r)
        os.close(server.wake_w)
