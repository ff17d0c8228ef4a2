"""Only processes balloons can prove it started are signalled.

A machine record in Redis names its process, and anyone who can write to Redis can forge one.
``balloons gc`` and the supervisor stop a machine through the fork server that started it;
when that server does not know the machine, they signal the pid of the record only if its
start time, session and proof (an HMAC with the app's secret) hold. Each test here starts a
real unrelated process and checks that nothing killed it: a process sent ``SIGTERM`` ends with
-15 even when ``SIGKILL`` follows, so ``wait() == -SIGKILL`` after the test's own ``SIGKILL``
proves no fatal signal came before it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import balloons
from balloons import JobFailed, JobStatus
from balloons.backends import identity
from balloons.backends.local import LocalBackend
from balloons.fly.emulator import procs
from balloons.store import keys
from tests import tasks
from tests.conftest import SECRET
from tests.waiting import wait_for

ROOT = Path(__file__).parent.parent
HOST = socket.gethostname()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] != b"Z"


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated ``sleep`` leading a session of its own, as a machine does: the process a
    forged record names."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield proc
    if proc.returncode is None:
        proc.kill()
        proc.wait()


def assert_never_signalled(proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, f"the bystander ended with {proc.returncode}"
    proc.kill()
    assert proc.wait() == -signal.SIGKILL  # -15 had a SIGTERM come first


def _stat(pid: int) -> tuple[int, int]:
    found = identity.stat(pid)
    assert found is not None
    return found


def forge(r: redis.Redis, machine: str, **fields: Any) -> str:
    """A machine record as a Redis writer would write it: started long ago, on this host, in
    a pool, its slot gone (so the orphan sweep destroys it)."""
    record = {
        "state": "started",
        "host": HOST,
        "pool": "default",
        "slot": f"default.{'0' * 26}-1",
        "job": "0" * 26,
        "attempt": "1",
        "created": str(time.time() - 3600),
        **fields,
    }
    record = {k: v for k, v in record.items() if v is not None}
    r.hset(keys.machine_key("balloons", machine), mapping=record)
    r.zadd(keys.machines_key("balloons"), {machine: time.time() - 3600})
    return machine


def record(r: redis.Redis, machine: str) -> dict[str, str]:
    raw = r.hgetall(keys.machine_key("balloons", machine))
    return {k.decode(): v.decode() for k, v in raw.items()}


def run_gc(*extra: str) -> subprocess.CompletedProcess[str]:
    """``balloons gc`` in a process (and session) of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "balloons", "gc", "--min-age", "0", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=dict(os.environ),
        start_new_session=True,
    )


def forged_records(pid: int) -> dict[str, tuple[dict[str, Any], str]]:
    """Records naming ``pid``, by what they get wrong; each must be marked gone."""
    sid, start = _stat(pid)
    true = {"pid": pid, "sid": sid, "start": start}
    return {
        "bare": ({"pid": pid}, "no valid session and start time"),
        "unsigned": (true, "not signed with the app's secret"),
        "other key": (
            {
                **true,
                "proof": identity.proof("not-the-secret", "m-otherkey", HOST, pid, sid, start),
            },
            "not signed with the app's secret",
        ),
        "not its session": (
            {**true, "sid": os.getsid(0)},
            "is not its own",
        ),
        # A genuine record (signed with the app's secret) whose pid was reused.
        "reused": (
            {
                **true,
                "start": start - 1,
                "proof": identity.proof(SECRET, "m-reused", HOST, pid, sid, start - 1),
            },
            "the pid was reused",
        ),
    }


@pytest.mark.slow
def test_balloons_gc_never_signals_a_process_named_by_a_forged_record(
    r: redis.Redis, bystander: subprocess.Popen[bytes]
) -> None:
    expected = {}
    for name, (fields, why) in forged_records(bystander.pid).items():
        machine = "m-" + name.replace(" ", "")
        forge(r, machine, **{k: str(v) for k, v in fields.items()})
        expected[machine] = why
    out = run_gc()
    assert out.returncode == 0, out.stderr
    assert_never_signalled(bystander)
    assert f"{len(expected)} machine(s) destroyed" in out.stdout
    for machine, why in expected.items():
        rec = record(r, machine)
        assert rec["state"] == "stopped", (machine, rec)
        assert why in rec["gone"], (machine, rec["gone"])
    assert "was not signalled" in out.stderr
    # A second sweep finds nothing left to stop.
    again = run_gc("--json")
    assert again.returncode == 0 and again.stdout.strip() == "[]", again.stderr


@pytest.mark.slow
def test_balloons_gc_survives_hostile_machine_records(r: redis.Redis) -> None:
    """A pid of 0 is the caller's own process group (gc ran in a session of its own); a
    negative or huge one, or a malformed attempt, made the sweep raise and stop there."""
    hostile = {
        "0": "out of range",
        "99999999999999999999": "out of range",
        "-1": "not a process id",
        "abc": "not a process id",
        "١٢": "not a process id",
        "": "not a process id",
        " 12": "not a process id",
    }
    for i, (bad, _) in enumerate(hostile.items()):
        forge(r, f"m-bad{i}", pid=bad, attempt="x", created="nan", exit_code="-")
    out = run_gc()
    assert out.returncode == 0, out.stderr
    assert f"{len(hostile)} machine(s) destroyed" in out.stdout
    for i, why in enumerate(hostile.values()):
        rec = record(r, f"m-bad{i}")
        assert rec["state"] == "stopped" and why in rec["gone"], rec
    machines = subprocess.run(
        [sys.executable, "-m", "balloons", "machines", "--all", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    assert machines.returncode == 0, machines.stderr
    assert len(json.loads(machines.stdout)) == len(hostile)


def test_a_supervisor_pass_never_signals_a_process_named_by_a_forged_record(
    r: redis.Redis, bystander: subprocess.Popen[bytes]
) -> None:
    forged = {"m-" + name.replace(" ", ""): fields
              for name, (fields, _) in forged_records(bystander.pid).items()}  # fmt: skip
    for machine, fields in forged.items():
        forge(r, machine, **{k: str(v) for k, v in fields.items()})
    report = tasks.app.supervisor(orphan_min_age=0).step(gc=True)
    assert_never_signalled(bystander)
    assert not report.errors
    assert sorted(report.destroyed) == sorted(forged)
    assert all(record(r, m)["state"] == "stopped" for m in forged)


@pytest.mark.machines
def test_a_machine_the_fork_server_knows_is_stopped_whatever_its_record_says(
    r: redis.Redis, bystander: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """The fork server signals its own child: the record's pid plays no part."""
    pidfile = tmp_path / "pid"
    job = tasks.pid_then_sleep.submit(str(pidfile), 60)
    wait_for(lambda: pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    machine = job.info().machine_id or ""
    mk = keys.machine_key("balloons", machine)
    wait_for(lambda: r.hget(mk, "pid") is not None)
    r.hset(mk, "pid", str(bystander.pid))
    tasks.app.backend.stop(machine)
    with pytest.raises(JobFailed):
        job.result(timeout=30)
    wait_for(lambda: not _alive(pid))
    assert_never_signalled(bystander)


def _fork_server_pid(backend: LocalBackend) -> int:
    return int(backend._request({"op": "ping"})["pid"])


@pytest.mark.machines
def test_a_machine_whose_fork_server_was_killed(
    r: redis.Redis, bystander: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """While it runs, its record proves the process is the machine's, and a stop reaches it;
    once it has exited, its record (still ``started``: nobody saw the exit) is marked gone;
    and were its pid reused, the process with that pid is not signalled."""
    app = balloons.App(state_dir=tmp_path / "state")
    app.pool("default", isolation="none")  # the task's pid is the machine's
    task = balloons.Task(app, tasks.pid_then_sleep.fn, tasks.pid_then_sleep.name,
                         tasks.pid_then_sleep.opts)  # fmt: skip
    pidfile = tmp_path / "pid"
    job = task.submit(str(pidfile), 60)
    wait_for(lambda: pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    machine = job.info().machine_id or ""
    wait_for(lambda: "pid" in record(r, machine))
    launched = record(r, machine)
    assert "proof" in launched and "start" in launched, launched
    assert (launched["pid"], launched["sid"]) == (str(pid), str(pid))
    assert int(launched["start"]) == _stat(pid)[1]
    assert SECRET not in str(launched)

    backend = app.backend
    assert isinstance(backend, LocalBackend)
    server = _fork_server_pid(backend)
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: not _alive(server))
    assert _alive(pid) and record(r, machine)["state"] == "started"

    backend.stop(machine)  # the record proves it: signalled
    wait_for(lambda: not _alive(pid))
    with pytest.raises(JobFailed):
        job.result(timeout=30)
    assert job.status() is JobStatus.FAILED
    app.supervisor(orphan_min_age=0).collect_orphans(wait=30)
    gone = record(r, machine)
    assert gone["state"] == "stopped"
    assert f"its process {pid} has exited" in gone["gone"]

    # The same record, its pid since taken by another process: a new start time.
    r.hset(
        keys.machine_key("balloons", machine),
        mapping={
            "state": "started",
            "pid": bystander.pid,
            "sid": bystander.pid,
            "proof": identity.proof(
                SECRET, machine, HOST, bystander.pid, bystander.pid, int(launched["start"])
            ),
        },
    )
    out = run_gc()
    assert out.returncode == 0, out.stderr
    assert f"destroyed {machine}" in out.stdout
    assert "the pid was reused" in record(r, machine)["gone"]
    assert_never_signalled(bystander)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"pid": "0"},
        {"pid": "1"},
        {"pid": "-5"},
        {"pid": "4194305"},
        {"pid": "9" * 5000},  # int() of it raises
        {"pid": "+42"},
        {"pid": "4_2"},
        {"pid": "0x2a"},
        {"pid": "42", "sid": "42"},
        {"pid": "42", "start": "1"},
        {"pid": "42", "sid": "x", "start": "1"},
        {"pid": "42", "sid": "42", "start": "-1"},
        {"pid": "42", "sid": "42", "start": "1", "proof": ""},
        {"pid": "42", "sid": "42", "start": "1", "proof": "\udcff"},
    ],
)
def test_a_record_that_proves_nothing_names_no_pid(fields: dict[str, str]) -> None:
    verdict = identity.verify(fields, "m1", HOST, SECRET)
    assert isinstance(verdict, str) and verdict


def test_a_true_record_names_its_pid(bystander: subprocess.Popen[bytes]) -> None:
    pid = bystander.pid
    sid, start = _stat(pid)
    fields = {"pid": str(pid), "sid": str(sid), "start": str(start)}
    fields["proof"] = identity.proof(SECRET, "m1", HOST, pid, sid, start)
    assert identity.verify(fields, "m1", HOST, SECRET) == pid
    assert isinstance(identity.verify(fields, "m2", HOST, SECRET), str)  # another machine's
    assert isinstance(identity.verify(fields, "m1", "elsewhere", SECRET), str)
    assert isinstance(identity.verify(fields, "m1", HOST, SECRET + "x"), str)


@pytest.mark.machines
def test_the_fly_emulator_kills_a_machines_group_before_reaping_it() -> None:
    """Its stragglers die with it, and the group is killed while the leader's zombie still
    holds the pid (once reaped, the pid may be another process's)."""
    code = "import subprocess; print(subprocess.Popen(['sleep', '600']).pid, flush=True)"
    machine = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert machine.stdout is not None
    straggler = int(machine.stdout.readline())
    machine.stdout.close()
    wait_for(lambda: procs.reap(machine) is not None)
    assert machine.returncode == 0
    wait_for(lambda: not _alive(straggler))


def test_without_proc_no_record_proves_anything(
    bystander: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a system without /proc (macOS) only the fork server's own children are signalled:
    even a true record is not signalled by a backend whose fork server does not know it."""
    pid = bystander.pid
    sid, start = _stat(pid)
    fields = {"pid": str(pid), "sid": str(sid), "start": str(start)}
    fields["proof"] = identity.proof(SECRET, "m1", HOST, pid, sid, start)
    monkeypatch.setattr(identity, "has_proc", lambda: False)
    verdict = identity.verify(fields, "m1", HOST, SECRET)
    assert verdict == f"process {pid} cannot be proved the machine's on a system without /proc"
