"""``LocalBackend``: each machine is a fresh OS process on this host.

Machines are forked by a per-user fork server (see :mod:`balloons.backends.forkserver`) that
is started on first use with ``sys.executable`` (never a ``python3`` shim on PATH), lives in
its own session, and exits when idle. Each machine runs in a session of its own with an
allow-listed environment (what a worker needs plus the names the app lists: never the
parent's other variables) and its ``memory_mb`` as a hard data-segment limit.

How a machine's process starts, ``start=``: ``"fork"`` (default) forks from the pre-imported
parent: a cold job costs a fork, not an interpreter start. ``"exec"`` execs a fresh
interpreter per machine, which is what a Fly Machine does, at the price of interpreter
start-up. (This keyword was ``isolation=``, which still works with a ``DeprecationWarning``:
what one job may leave for the next is the pool's ``isolation``, see :mod:`balloons.pools`.)

Machine records live in Redis (``NS:machine:ID``), so any process can list, inspect and stop
machines. A stop goes through the fork server that started the machine; when that server is
gone, the record's pid is signalled only if the record proves it is the machine's process
(:mod:`balloons.backends.identity`), and a record that does not is marked gone instead. A
record that says a machine of this host runs while its process has ended (its fork server was
killed too, or Redis was down when it exited) reads as state ``gone``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError
from ..info import MachineInfo, MachineSpec
from ..store import keys
from . import identity
from .base import BackendContext

# Variables every local machine gets from the parent, when set. Everything else is dropped
# unless the app allow-lists it.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
START_METHODS = ("fork", "exec")
DEFAULT_IDLE = 30.0
#: Seconds a fork server started on first use has to listen on its socket.
START_TIMEOUT = 30.0
#: What a request fails with when no fork server serves it: no socket at the path, none
#: listening there, the connection closed with no reply, or reset (or its pipe broken) before
#: the request was read: the listening socket was closed with the connection in its backlog.
#: A server killed (or draining) closes it; so does a child it forked a moment before, which
#: holds a copy of the socket until it closes the server's descriptors, and so may close it
#: after the server has died.
UNSERVED = (
    FileNotFoundError,
    ConnectionRefusedError,
    ConnectionResetError,
    BrokenPipeError,
    EOFError,
)
RUNNING_STATES = ("created", "starting", "started")
#: Record fields a machine's ``detail`` shows; ``gone`` says why one was found not running.
DETAIL = ("pid", "host", "memory_mb", "cpus", "exited", "slot", "gone")

log = logging.getLogger("balloons.local")


def _package_fingerprint() -> str:
    """Changes whenever balloons' code changes, so a stale fork server is never reused."""
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(sys.executable.encode())
    for path in sorted(pkg.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(pkg)}:{st.st_mtime_ns}:{st.st_size};".encode())
    return h.hexdigest()[:12]


class LocalBackend:
    """Machines as local processes. ``start``: how a machine's process starts, ``"fork"``
    (default) or ``"exec"``; ``isolation`` is its former name (deprecated)."""

    name = "local"

    def __init__(
        self,
        start: str | None = None,
        idle_timeout: float | None = None,
        *,
        isolation: str | None = None,
    ) -> None:
        if isolation is not None:
            import warnings

            warnings.warn(
                f"LocalBackend(isolation={isolation!r}) is now LocalBackend(start={isolation!r}): "
                "it says how a machine's process starts; what a job may leave for the next is "
                "the pool's isolation (app.pool(..., isolation=...))",
                DeprecationWarning,
                stacklevel=2,
            )
            if start is not None and start != isolation:
                raise ConfigError(
                    f"LocalBackend: start={start!r} and isolation={isolation!r} disagree; "
                    "give start= only"
                )
            start = isolation
        start = "fork" if start is None else start
        if start not in START_METHODS:
            raise ConfigError(
                f"LocalBackend: unknown start {start!r}: expected one of {START_METHODS}"
            )
        if idle_timeout is not None:
            from ..config import check_seconds

            check_seconds("idle_timeout", idle_timeout, 0, 7 * 24 * 3600)
        self.start_method = start
        self.idle_timeout = idle_timeout
        self._ctx: BackendContext | None = None
        self._sock: str | None = None
        self._client: Any = None  # redis.Redis, made on first use

    def __repr__(self) -> str:
        return f"LocalBackend(start={self.start_method!r})"

    # -------------------------------------------------------------- contract
    def bind(self, ctx: BackendContext) -> None:
        """Keep the app's settings: the Redis URL, secret and namespace its machines are given,
        and the state directory of the fork server's socket and the machines' logs."""
        self._ctx = ctx

    @property
    def ctx(self) -> BackendContext:
        """The app's settings given by :meth:`bind`; ``BackendError`` before the backend is
        bound."""
        if self._ctx is None:
            raise BackendError("LocalBackend is not bound to an app: use App(backend=...)")
        return self._ctx

    def launch(self, spec: MachineSpec) -> MachineInfo:
        """Ask the fork server (started on first use) to start a machine for ``spec``: a process
        of its own session with an allow-listed environment and the spec's memory limit. Returns
        its id at once."""
        ctx = self.ctx
        machine = secrets.token_hex(7)
        env = {k: ctx.env[k] for k in BASE_ENV if k in ctx.env}
        env.update(spec.env)
        env.update(
            {
                "BALLOONS_REDIS_URL": ctx.redis_url,
                "BALLOONS_SECRET": ctx.secret,
                "BALLOONS_NAMESPACE": ctx.namespace,
                "BALLOONS_MACHINE_ID": machine,
                "BALLOONS_HOME": os.path.abspath(ctx.state_dir),
            }
            if not spec.protocol  # a worker of the worker protocol holds no store credentials
            else {"BALLOONS_MACHINE_ID": machine}
        )
        if spec.python_path:
            env["BALLOONS_PYTHONPATH"] = os.pathsep.join(spec.python_path)
        logs = ctx.state_dir / "machines"
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        req = {
            "op": "launch",
            "machine": machine,
            # A machine of the worker protocol starts a fresh interpreter (exec): nothing of
            # the fork server's memory, where the store's credentials are, reaches it.
            "mode": "exec" if spec.protocol else self.start_method,
            "env": env,
            "cwd": spec.cwd,
            "memory_mb": spec.memory_mb,
            "cpus": spec.cpus,
            "timeout": spec.timeout,
            "job_id": spec.job_id,
            "attempt": spec.attempt,
            "pool": spec.pool,
            "slot": spec.metadata.get("balloons_slot", ""),
            "log": str(logs / f"{machine}.log"),
        }
        if spec.protocol:  # kept by the fork server, never given to the machine
            req["store"] = {
                "BALLOONS_REDIS_URL": ctx.redis_url,
                "BALLOONS_SECRET": ctx.secret,
                "BALLOONS_NAMESPACE": ctx.namespace,
            }
        reply = self._request(req)
        return MachineInfo(
            id=machine,
            backend=self.name,
            state="started",
            job_id=spec.job_id,
            attempt=spec.attempt,
            pool=spec.pool,
            created_at=time.time(),
            detail={"pid": str(reply.get("pid", ""))},
        )

    @property
    def _redis(self) -> Any:
        if self._client is None:
            from ..store.cluster import redis_client
            from ..store.redisurl import DEFAULT_TIMEOUT, timeout_of

            url = self.ctx.redis_url
            self._client = redis_client(url, 5.0, timeout_of(url, DEFAULT_TIMEOUT))
        return self._client

    def close(self) -> None:
        """Close this backend's Redis connections (made again when next needed)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def inspect(self, machine_id: str) -> MachineInfo | None:
        """The machine's record (launch, state, exit), read from Redis; ``None`` when there is
        none."""
        with _store_errors(self.ctx.redis_url):
            (raw,) = _records(self._redis, [keys.machine_key(self.ctx.namespace, machine_id)])
        return _info(machine_id, raw) if raw else None

    def stop(self, machine_id: str, grace: float = 10.0) -> None:
        """Stop the machine: through the fork server that started it (``SIGTERM``, ``SIGKILL``
        after ``grace`` seconds), else by signalling its process group, only when its record
        proves the process is the one launched (:mod:`balloons.backends.identity`)."""
        reply = self._request({"op": "stop", "machine": machine_id, "grace": grace}, start=False)
        if reply.get("found"):
            return
        # The fork server that started it is gone (or is another version's): signal the
        # machine's process group ourselves, only if its record proves the process is the one
        # launched (see identity.py). A record that does not is marked gone, never signalled.
        mk = keys.machine_key(self.ctx.namespace, machine_id)
        with _store_errors(self.ctx.redis_url):
            (raw,) = _records(self._redis, [mk])
        record = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
        if record.get("state") not in RUNNING_STATES:
            return
        host = socket.gethostname()
        if record.get("host") != host:
            return  # another host's machine, or no host at all: not ours to judge or signal
        verdict = identity.verify(record, machine_id, host, self.ctx.secret)
        if isinstance(verdict, int):
            secret = self.ctx.secret
            _terminate(verdict, grace, lambda: identity.verify(record, machine_id, host, secret))
            return
        log.warning("machine %s was not signalled: %s", machine_id, verdict)
        from redis.exceptions import WatchError

        # transaction=True: a cluster client's pipeline is not one by default.
        with contextlib.suppress(WatchError), self._redis.pipeline(transaction=True) as pipe:
            pipe.watch(mk)
            if (pipe.hget(mk, "state") or b"").decode(errors="replace") not in RUNNING_STATES:
                return  # its exit was recorded meanwhile
            pipe.multi()
            pipe.hset(mk, mapping={"state": "stopped", "exited": time.time(), "gone": verdict})
            pipe.execute()

    def destroy(self, machine_id: str) -> None:
        """Stop the machine at once (a local machine leaves nothing behind to remove)."""
        self.stop(machine_id, grace=0.0)

    def list(self, **metadata: str) -> list[MachineInfo]:
        """The newest 1,000 machines' records, filtered by ``job``, ``pool``, ``attempt`` or
        ``slot`` (any other key is a ``BackendError``)."""
        r = self._redis
        with _store_errors(self.ctx.redis_url):
            found = r.zrevrange(keys.machines_key(self.ctx.namespace), 0, 999)
            ids = [m.decode(errors="replace") for m in found]
            raws = _records(r, [keys.machine_key(self.ctx.namespace, mid) for mid in ids])
        out = [_info(mid, raw) for mid, raw in zip(ids, raws, strict=True) if raw]
        want = {k: str(v) for k, v in metadata.items()}
        for k in want:
            if k not in ("job", "pool", "attempt", "slot"):
                raise BackendError(
                    f"cannot filter machines by {k!r}: use job, pool, attempt or slot"
                )

        def value(m: MachineInfo, k: str) -> str:
            if k == "slot":
                return m.detail.get("slot", "")
            return str(getattr(m, {"job": "job_id"}.get(k, k)))

        return [m for m in out if all(value(m, k) == v for k, v in want.items())]

    @property
    def launches_from_machines(self) -> bool:
        """Whether a machine may launch machines here (the next link of a chain): while a fork
        server of this code serves the state directory (a local machine is told it,
        ``BALLOONS_HOME``), which then forks them as it forked the machine asking."""
        return os.path.exists(self.socket_path())

    # ----------------------------------------------------------- fork server
    def socket_path(self) -> str:
        """The unix socket of this state directory's fork server, named after the installed
        package's fingerprint (a fork server of other code has another)."""
        if self._sock is None:
            state = self.ctx.state_dir.resolve()
            name = f"forkserver-{_package_fingerprint()}.sock"
            path = state / name
            if len(str(path)) > 100:
                digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
                path = Path(tempfile.gettempdir()) / f"balloons-{os.getuid()}-fs-{digest}.sock"
            self._sock = str(path)
        return self._sock

    def _request(self, req: dict[str, Any], start: bool = True) -> dict[str, Any]:
        """Send ``req`` to the fork server (started first when none serves its path, unless
        not ``start``: then none found reads ``{"found": False}``); its reply. A failure is a
        ``BackendError`` naming the request and the socket."""
        path = self.socket_path()
        try:
            try:
                reply = _send(path, req)
            except UNSERVED:
                if not start:
                    return {"ok": True, "found": False}
                self._start_server()
                reply = _send(path, req)
        except (OSError, EOFError, ValueError) as exc:
            raise BackendError(
                f"local fork server: {req.get('op')!r} on {path} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if not reply.get("ok"):
            raise BackendError(f"local fork server refused {req.get('op')}: {reply.get('error')}")
        return reply

    def _start_server(self) -> None:
        """Start the fork server unless another process just did (flock: one, never two)."""
        state = self.ctx.state_dir
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.socket_path()
        with open(state / "forkserver.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(OSError, EOFError):
                if _send(path, {"op": "ping"}).get("ok"):
                    return
            pkg_root = str(Path(__file__).resolve().parent.parent.parent)
            env = {k: self.ctx.env[k] for k in BASE_ENV if k in self.ctx.env}
            env["PYTHONPATH"] = pkg_root
            idle = self.idle_timeout
            if idle is None:
                idle = float(self.ctx.env.get("BALLOONS_FORKSERVER_IDLE") or DEFAULT_IDLE)
            with open(state / "forkserver.log", "ab") as log:
                # --daemonize: the process we start exits once the server listens, and the
                # server is re-parented to init, so no zombie or Popen is left with us.
                argv = [sys.executable, "-m", "balloons.backends.forkserver"]
                argv += ["--socket", path, "--idle", str(idle), "--daemonize"]
                argv += ["--state", str(state.resolve())]
                try:
                    subprocess.run(
                        argv,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                        close_fds=True,
                        timeout=START_TIMEOUT,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    raise BackendError(
                        f"the local fork server did not listen on {path} within "
                        f"{START_TIMEOUT:g}s; see {state / 'forkserver.log'}"
                    ) from None
                except OSError as exc:
                    raise BackendError(
                        f"could not start the local fork server ({sys.executable}): {exc}"
                    ) from None
            with contextlib.suppress(OSError, EOFError):
                if _send(path, {"op": "ping"}).get("ok"):
                    return
        raise BackendError(f"the local fork server did not start; see {state / 'forkserver.log'}")

    def shutdown(self) -> bool:
        """Ask the fork server to exit once its machines have; False if none was running."""
        try:
            _send(self.socket_path(), {"op": "shutdown"})
        except (OSError, EOFError, ValueError):  # none, or not a fork server
            return False
        return True


def _send(path: str, req: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("fork server closed the connection")
            data += chunk
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError(f"expected a JSON object, got {type(reply).__name__}")
    return reply


def _terminate(pid: int, grace: float, proved: Callable[[], int | str]) -> None:
    """``SIGTERM`` to the machine's process group now and ``SIGKILL`` after ``grace`` seconds
    (at once for 0), as its fork server would; the ``SIGKILL`` only while its record still
    ``proved`` the process is the machine's (not exited, its pid not taken since)."""

    def kill() -> None:
        if proved() == pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    if grace <= 0:
        kill()
    else:
        import threading

        timer = threading.Timer(grace, kill)
        timer.daemon = True
        timer.start()


@contextlib.contextmanager
def _store_errors(url: str) -> Iterator[None]:
    """redis-py's errors as the store's (``StoreError`` naming the masked URL)."""
    import redis

    try:
        yield
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        from ..store.reads import store_error

        raise store_error(url, exc) from None


def _records(r: Any, names: list[str]) -> list[dict[bytes, bytes]]:
    """Machine records (hostile: one that is no hash reads as none, with a log line)."""
    from ..store.reads import read_hashes

    return read_hashes(r, names)


def _info(machine_id: str, raw: dict[bytes, bytes]) -> MachineInfo:
    """A machine record as read: hostile input, so a malformed value reads as unknown."""
    d = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    if d.get("state") in RUNNING_STATES and _ended(d):
        # Its process ended and no exit was recorded (yet): the fork server that would have
        # seen it was gone too, or Redis was down (an earlier run of the embedded server).
        d["state"] = "gone"
    return MachineInfo.from_record(machine_id, d, "local", DETAIL)


def _ended(record: dict[str, str]) -> bool:
    """Whether a record that says its machine runs on this host names a process that has ended:
    no process has the pid, it is a zombie, or the process there now started at another time
    than the one recorded (the pid was reused). Nothing is signalled; without ``/proc``, or with
    a pid that does not parse, nothing can be told (the machine's lease decides)."""
    pid, start = record.get("pid", ""), record.get("start", "")
    if record.get("host") != socket.gethostname() or not identity.has_proc():
        return False
    if not (0 < len(pid) <= 10 and pid.isascii() and pid.isdigit()) or int(pid) < 2:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # Field 2, the command name in parentheses, may hold spaces and parentheses itself.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if fields[:1] == [b"Z"]:
        return True
    return start.isascii() and start.isdigit() and len(fields) > 19 and fields[19] != start.encode()
