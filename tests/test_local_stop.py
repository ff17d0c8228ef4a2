"""A local machine whose fork server is gone (killed, or another code version's after an
upgrade) is stopped through its record: ``SIGTERM`` to its group, then ``SIGKILL`` after the
grace, as its fork server would. Before, only the ``SIGTERM`` was sent: a machine that did not
act on it (stopped, hung, or a task that blocks the signal) outlived ``destroy`` and
``balloons gc``, and its slot's job waited on it."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

import balloons
from balloons.backends.local import LocalBackend
from tests import tasks
from tests.test_process_trust import _alive, _fork_server_pid
from tests.waiting import wait_for


@pytest.mark.machines
def test_a_machine_whose_fork_server_is_gone_is_killed_after_its_grace(tmp_path: Path) -> None:
    app = balloons.App(state_dir=tmp_path / "state")
    app.pool("default", isolation="none", max_machines=2)  # the task's pid is the machine's
    task = balloons.Task(app, tasks.pid_then_sleep.fn, tasks.pid_then_sleep.name,
                         tasks.pid_then_sleep.opts)  # fmt: skip
    files = [tmp_path / "a", tmp_path / "b"]
    jobs = [task.submit(str(f), 120) for f in files]
    pids: list[int] = []
    try:
        for f in files:
            wait_for(lambda f=f: f.exists() and f.read_text())
            pids.append(int(f.read_text()))
        machines = [j.info().machine_id or "" for j in jobs]
        backend = app.backend
        assert isinstance(backend, LocalBackend)
        server = _fork_server_pid(backend)
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: not _alive(server))
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # deaf to SIGTERM until continued
        backend.destroy(machines[0])
        wait_for(lambda: not _alive(pids[0]))
        backend.stop(machines[1], grace=0.2)
        wait_for(lambda: not _alive(pids[1]))
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        app.close()
