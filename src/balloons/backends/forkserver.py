"""The local fork server: a clean, pre-imported parent that forks one isolated child per machine.

Starting a fresh interpreter and importing a Redis client costs more than a whole small job, so
``LocalBackend`` keeps one long-lived parent per state directory and balloons version. The
parent imports ``balloons.machine.worker`` once, runs no user code, and for each launch forks
a child that starts a new session, drops to the machine's allow-listed environment, applies its
memory limit, and runs the worker (``mode="fork"``) or execs a fresh interpreter (``mode="exec"``).

The parent also *notices* for its children, which is what makes local crash detection
immediate: it writes each machine's record on launch (with what proves its process to a
backend that outlives this server: :mod:`balloons.backends.identity`) and on exit (exit code,
signal, out-of-memory), fails the job's attempt with a reason when a child dies without
recording an outcome, kills children that outlive their run timeout by a grace period, and
stops children on request. With no children and no requests for ``idle`` seconds it exits.
``SIGTERM`` stops its children and ends it, as does being orphaned (:mod:`.forkexit`). What it
writes to Redis is :mod:`.forkrecords`'; it serves its socket path alone (:mod:`.forkpath`).

Protocol: one JSON object per connection on a unix socket, answered with one JSON object.
``{"op": "ping"}``, ``{"op": "launch", ...}``, ``{"op": "stop", "machine": ID, "grace": S}``,
``{"op": "shutdown"}``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .. import compat
from ..errors import StoreError
from ..machine import worker as worker_mod
from ..store import keys
from . import forked, forkexit, identity
from .forkpath import PathClaim
from .forkrecords import Records

STOP_GRACE = 10.0
SPARE_AFTER = 0.05  # seconds with no launch before a spare is forked beside running machines


@dataclass
class Child:
    """A machine the fork server forked: its job, attempt, pool and slot, where its log goes, and
    its stop request (the signing key is never in its repr)."""

    machine: str
    pid: int
    redis_url: str
    namespace: str
    job_id: str
    attempt: int
    pool: str
    slot: str
    log: str
    # The app's signing key, which seals the error of an attempt ended here (never in a repr).
    secret: bytes = field(default=b"", repr=False)
    started: float = field(default_factory=time.time)
    stop_requested: bool = False
    stop_deadline: float | None = None


class ForkServer:
    """The fork server's state and loop: one per state directory and code version, listening on
    the unix socket ``path``, forking a child per machine and recording launches and exits; it
    exits after ``idle`` seconds with no child and no request."""

    def __init__(self, path: str, idle: float, state: str = "") -> None:
        self.path = path
        self.idle = idle
        self.children: dict[int, Child] = {}
        self.by_machine: dict[str, Child] = {}
        self.records = Records()  # what it writes to Redis, and the clock it stamps it with
        self.claim = PathClaim(path)  # held while it serves the path
        self.last_activity = time.monotonic()
        self.draining = False
        self.exits = forkexit.Exits(state or os.path.dirname(path))  # SIGTERM, orphaned
        self.deferred: list[
            tuple[Child, dict[str, Any], int, str]
        ] = []  # records written after replying, with the secret that signs their proof
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.wake_r, self.wake_w = os.pipe()
        self.spare: forked.Spare | None = None  # the next forked machine, waiting for its launch
        self.conn: socket.socket | None = None  # the request being answered
        self.launched = 0.0  # time.monotonic() of the last launch
        self.refill_at = 0.0  # no spare is forked before then (time.monotonic()): a fork failed
        self.version_files = ""  # the task modules named by the last forked machine's launch

    # ----------------------------------------------------------------- loop
    def bind(self) -> bool:
        """Claim the path (see :mod:`.forkpath`) and listen on its unix socket (mode 0600),
        replacing a stale one; False, binding nothing, when another server serves it."""
        if not self.claim.take():
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.listener.bind(self.path)
        os.chmod(self.path, 0o600)
        self.exits.inode = os.stat(self.path).st_ino
        self.listener.listen(128)
        return True

    def serve(self) -> None:
        """Serve requests and reap children until idle for ``idle`` seconds (or drained)."""
        self.listener.setblocking(False)
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: forkexit.terminate(self))
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _ in self.sel.select(self._next_timeout()):
                if key.data == "accept":
                    self._accept()
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
            self._reap()
            forkexit.check(self)
            self._enforce_deadlines()
            self._refill()
            if not self.children:
                if self.draining:
                    return
                if time.monotonic() - self.last_activity > self.idle:
                    self._begin_drain()

    def _next_timeout(self) -> float:
        now = time.time()
        waits = [self.idle - (time.monotonic() - self.last_activity) + 0.01]
        if self.spare is None and self.children:
            waits.append(SPARE_AFTER - (time.monotonic() - self.launched))
        waits += [c.stop_deadline - now for c in self.children.values() if c.stop_deadline]
        return max(0.01, min(min(waits), 1.0))

    def _begin_drain(self) -> None:
        """Stop accepting: unlink the socket (a new server may take the path) and finish."""
        if self.draining:
            return
        self.draining = True
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.close()  # it reads the end of its pipe and exits
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.exits.inode:
                os.unlink(self.path)
        self.claim.release()
        # Serve anything already in the backlog, then close.
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, OSError):
                break
            self._handle(conn)
        self.sel.unregister(self.listener)
        self.listener.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        self.last_activity = time.monotonic()
        self.conn = conn  # a machine forked meanwhile closes its copy (_leave)
        with conn:
            conn.setblocking(True)
            conn.settimeout(5.0)
            try:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                req = json.loads(data)
                reply = self._dispatch(req)
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")
        self.conn = None
        # Launch records are written after the reply, off the submitter's critical path but
        # before this loop can reap (and record the exit of) the same child.
        while self.deferred:
            child, fields, ttl, secret = self.deferred.pop(0)
            fields.update(identity.fields(secret, child.machine, fields["host"], child.pid))
            self.records.record(child, fields, ttl=ttl, new=True)

    def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            spare = self.spare.pid if self.spare is not None else None
            return {"ok": True, "pid": os.getpid(), "children": len(self.children), "spare": spare}
        if op == "launch":
            return self._launch(req)
        if op == "stop":
            return self._stop(str(req["machine"]), float(req.get("grace", STOP_GRACE)))
        if op == "shutdown":
            self._begin_drain()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    # --------------------------------------------------------------- launch
    def _launch(self, req: dict[str, Any]) -> dict[str, Any]:
        machine = str(req["machine"])
        env = {str(k): str(v) for k, v in req["env"].items()}
        log = str(req.get("log") or os.devnull)
        # A machine of the worker protocol gets no store credentials: the fork server keeps
        # them (``store``) to free its slot when it ends.
        raw = req.get("store")
        store = raw if isinstance(raw, dict) else {}
        cred = {
            k: env.get(k) or str(store.get(k, ""))
            for k in ("BALLOONS_REDIS_URL", "BALLOONS_SECRET", "BALLOONS_NAMESPACE")
        }
        req = {**req, "env": env, "log": log}
        self.launched = time.monotonic()
        if req.get("mode") != "exec":
            self.version_files = env.get("BALLOONS_VERSION_FILES", "")
        spare = self.spare if req.get("mode") != "exec" else None
        if spare is not None:  # the spare becomes this machine (a fresh one if it is gone)
            self.spare = None
        pid = spare.pid if spare is not None and spare.hand(req) else self._fork(req)
        child = Child(
            machine=machine,
            pid=pid,
            redis_url=cred["BALLOONS_REDIS_URL"],
            namespace=cred["BALLOONS_NAMESPACE"] or keys.DEFAULT_NAMESPACE,
            job_id=str(req.get("job_id", "")),
            attempt=int(req.get("attempt", 0)),
            pool=str(req.get("pool", "")),
            slot=str(req.get("slot", "")),
            log=log,
            secret=cred["BALLOONS_SECRET"].encode(),
        )
        self.children[pid] = child
        self.by_machine[machine] = child
        self.deferred.append(
            (
                child,
                {
                    "state": "started",
                    "pid": pid,
                    "host": socket.gethostname(),
                    "job": child.job_id,
                    "attempt": child.attempt,
                    "pool": req.get("pool", ""),
                    "slot": child.slot,
                    "created": child.started,
                    "memory_mb": req.get("memory_mb", 0),
                    "cpus": req.get("cpus", 1),
                    "backend": "local",
                },
                int(req.get("ttl", 86400)),
                cred["BALLOONS_SECRET"],
            )
        )
        return {"ok": True, "pid": pid}

    def _fork(self, req: dict[str, Any]) -> int:
        """Fork the machine of launch request ``req``; its pid."""
        gc.freeze()  # see worker_mod.prepare: the machine's collections leave these objects be
        pid = os.fork()
        if pid == 0:  # child: never returns
            self._child(req)
        gc.unfreeze()
        return pid

    def _child(self, req: dict[str, Any]) -> None:
        code = forked.EXIT_BROKE
        try:
            self._leave()
            code = forked.become(req)
        except BaseException:
            with contextlib.suppress(Exception):
                import traceback

                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _leave(self) -> None:
        """In a child: a session of its own, default signals, none of the server's
        descriptors (its socket, the connection of the launch it answers, its wake-up pipe,
        its Redis connections, the spare's pipe)."""
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.listener.close()
        if self.conn is not None:  # the launch's connection: the launcher's, not the machine's
            self.conn.close()
        self.claim.leave()
        self.records.close()
        if self.spare is not None:
            self.spare.close()

    def _refill(self) -> None:
        """Fork the next launch's machine ahead of it (see :mod:`.forked`) when none waits,
        once the server is quiet: no machine running, or no launch for SPARE_AFTER seconds
        (a spare forked beside a machine that has just started would compete with it)."""
        now = time.monotonic()
        if self.spare is not None or self.draining or now < self.refill_at:
            return
        if self.children and now - self.launched < SPARE_AFTER:
            return
        if self.version_files:  # the version digest a machine of that app works out, made once
            compat.source_version(self.version_files.split(os.pathsep))
        try:
            self.spare = forked.fork_spare(self._leave)
        except OSError as exc:  # no process or descriptor to spare: launches fork, as before
            print(f"fork server: no spare forked ({exc}); trying again in 1s", file=sys.stderr)
            self.refill_at = now + 1.0

    # ----------------------------------------------------------- stop/kill
    def _stop(self, machine: str, grace: float) -> dict[str, Any]:
        child = self.by_machine.get(machine)
        if child is None:
            return {"ok": True, "found": False}
        self._stop_child(child, grace)
        return {"ok": True, "found": True}

    def _stop_child(self, child: Child, grace: float, requested: bool = True) -> None:
        """``SIGTERM`` to the child's group now, ``SIGKILL`` after ``grace`` seconds;
        ``requested``: a stop asked for (its job ends ``cancelled``), else the machine's exit
        says why."""
        child.stop_requested = child.stop_requested or requested
        child.stop_deadline = time.time() + grace
        _signal_group(child.pid, signal.SIGTERM)

    def _enforce_deadlines(self) -> None:
        now = time.time()
        for child in list(self.children.values()):
            if child.stop_deadline is not None and now >= child.stop_deadline:
                child.stop_deadline = None
                _signal_group(child.pid, signal.SIGKILL)

    # ---------------------------------------------------------------- reap
    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = _exited_child()
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                # The machine's grandchildren die with it. Killed before the child is reaped
                # where the platform can wait without reaping: its zombie holds the pid, so the
                # group's id cannot be anyone else's yet.
                _signal_group(pid, signal.SIGKILL)
            if status is None:
                _, status = os.waitpid(pid, 0)
            if child is None:
                continue
            self.by_machine.pop(child.machine, None)
            self.last_activity = time.monotonic()
            with contextlib.suppress(StoreError, OSError):
                self.records.exited(child, status)


def _exited_child() -> tuple[int, int | None]:
    """``(pid, None)``: a child that exited, not yet reaped; ``(0, None)`` when none has.
    Without ``waitid`` (macOS) the child comes reaped, with its status."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        pid, status = os.waitpid(-1, os.WNOHANG)
        return pid, status if pid else None
    found = waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return (found.si_pid, None) if found is not None else (0, None)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def main(argv: list[str] | None = None) -> int:
    """``python -m balloons.backends.forkserver``: serve on a socket path until idle; the exit
    code."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m balloons.backends.forkserver")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--state", default="", help="the state directory (the socket's)")
    parser.add_argument(
        "--daemonize", action="store_true", help="detach once listening; exit 0 when ready"
    )
    args = parser.parse_args(argv)
    worker_mod.prepare()  # what every machine would make for itself, made once
    server = ForkServer(args.socket, args.idle, args.state)
    if not server.bind():
        print(f"fork server: {args.socket} is served by another server; exiting", file=sys.stderr)
        return 0
    if args.daemonize and os.fork() != 0:
        # The launcher's child returns as soon as the socket listens; the server lives on,
        # re-parented to init, in its own session.
        os._exit(0)
    os.setsid() if args.daemonize else None
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
