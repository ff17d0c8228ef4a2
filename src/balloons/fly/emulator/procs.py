"""Running a machine as a local process.

An image is either *mapped* (``--image REF=DIR``, :attr:`EmulatorConfig.images`) or not.

Unmapped images (balloons' own): a machine's command comes from its config, first match wins:
``init.exec``; ``init.entrypoint`` + ``init.cmd``; ``processes[0]`` (``exec``, or ``entrypoint``
+ ``cmd``); the image's default command from ``image_commands`` (exact reference, then without
tag/digest); the emulator's ``default_command``. A bare ``python``/``python3`` becomes
:data:`sys.executable`, so machines run the emulator's own interpreter rather than whatever shim
is first on ``PATH``. The working directory is a fresh empty folder.

Mapped images run in a fresh copy of their directory (made at every start, as a Fly machine's
root filesystem is rebuilt from its image), which is the working directory, as the image's
``WORKDIR`` would be. The command is resolved the way a container runtime resolves it, from the
spec's ``fly.MachineInit`` and ``fly.MachineProcess`` fields (NOTES §3), first match wins:

1. ``init.exec``, then ``processes[0].exec``: the whole argv, replacing entrypoint and cmd;
2. otherwise entrypoint + cmd, where entrypoint is ``init.entrypoint`` or
   ``processes[0].entrypoint`` (the emulator knows no image ``ENTRYPOINT``) and cmd is
   ``init.cmd`` or ``processes[0].cmd``, else the image's default command (``image_commands``,
   standing for its ``CMD``) unless an entrypoint was given (Docker drops the image's ``CMD``
   when the entrypoint is overridden), else ``default_command`` likewise.

A program without a ``/`` is looked up on the ``PATH`` the emulator was started with (no
interpreter substitution: ``python`` is the first ``python`` on that ``PATH``); one with a ``/``
is taken as is, relative to the working directory.

The process starts in a clean environment: ``PATH`` (the emulator's), ``HOME`` and ``LANG``
from the emulator, then ``base_env``, then Fly's runtime variables (NOTES §6), then the app's
secrets (unless ``processes[0].ignore_app_secrets``), then the config's ``env``, then
``FLY_EMULATOR_ROOT``. Config ``files`` are written
under that root (``/job/x.json`` becomes ``$FLY_EMULATOR_ROOT/job/x.json``), which is also the
working directory.

Memory: ``guest.memory_mb`` caps the process's data segment with ``RLIMIT_DATA`` (a program
over it sees allocation failures itself, e.g. ``MemoryError``, and exits as it chooses), and
the supervisor's watchdog SIGKILLs a machine whose group leader's resident set (``VmRSS``)
exceeds it, which is what reports ``oom_killed: true``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .errors import bad_request

log = logging.getLogger("balloons.fly.emulator")

MIB = 1024 * 1024
_PYTHON_NAMES = frozenset({"python", "python3"})
_T = TypeVar("_T")


def command_for(
    config: Mapping[str, Any],
    image_commands: Mapping[str, Sequence[str]],
    default_command: Sequence[str] | None,
    *,
    mapped: bool = False,
) -> list[str]:
    """The argv a machine with ``config`` runs, as the module docstring says (``mapped``: its
    image is mapped to a directory); 400 when there is none."""
    if mapped:
        argv = _container_command(config, image_commands, default_command)
    else:
        argv = _legacy_command(config, image_commands, default_command)
    if not argv:
        raise bad_request(
            f"emulator has no command for image {config.get('image')!r}: set init.exec or "
            "init.cmd, or configure image_commands / a default command"
        )
    if not mapped and argv[0] in _PYTHON_NAMES:
        argv[0] = sys.executable
    return argv


def check_command_fields(config: Mapping[str, Any]) -> None:
    """400 unless ``init`` is an object, ``processes`` a list of objects, and their ``exec``,
    ``entrypoint`` and ``cmd`` lists of strings (the spec's ``fly.MachineInit`` and
    ``fly.MachineProcess``), checked at create/update."""
    init = config.get("init")
    if init is not None and not isinstance(init, dict):
        raise bad_request("invalid config.init: expected an object")
    processes = config.get("processes")
    if processes is not None and not isinstance(processes, list):
        raise bad_request("invalid config.processes: expected a list")
    sections = [("config.init", init or {})]
    for i, process in enumerate(processes or []):
        if not isinstance(process, dict):
            raise bad_request(f"invalid config.processes[{i}]: expected an object")
        sections.append((f"config.processes[{i}]", process))
    for where, section in sections:
        for name in ("exec", "entrypoint", "cmd"):
            value = section.get(name)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(a, str) for a in value)
            ):
                raise bad_request(f"invalid {where}.{name} {value!r}: expected a list of strings")


def _strings(section: Mapping[str, Any], name: str) -> list[str]:
    return [str(a) for a in section.get(name) or []]


def _legacy_command(
    config: Mapping[str, Any],
    image_commands: Mapping[str, Sequence[str]],
    default_command: Sequence[str] | None,
) -> list[str] | None:
    argv = _from_section(config.get("init") or {})
    if argv is None:
        processes = config.get("processes") or []
        if processes:
            argv = _from_section(processes[0])
    if argv is None:
        argv = _image_default(config, image_commands, default_command)
    return argv


def _container_command(
    config: Mapping[str, Any],
    image_commands: Mapping[str, Sequence[str]],
    default_command: Sequence[str] | None,
) -> list[str] | None:
    init = config.get("init") or {}
    processes = config.get("processes") or []
    process = processes[0] if processes else {}
    exec_argv = _strings(init, "exec") or _strings(process, "exec")
    if exec_argv:
        return exec_argv
    entrypoint = _strings(init, "entrypoint") or _strings(process, "entrypoint")
    cmd = _strings(init, "cmd") or _strings(process, "cmd")
    if not cmd and not entrypoint:
        cmd = _image_default(config, image_commands, default_command) or []
    return entrypoint + cmd or None


def _image_default(
    config: Mapping[str, Any],
    image_commands: Mapping[str, Sequence[str]],
    default_command: Sequence[str] | None,
) -> list[str] | None:
    found = lookup_image(image_commands, str(config.get("image", "")))
    if found:
        return list(found)
    return list(default_command) if default_command else None


def _from_section(section: Mapping[str, Any]) -> list[str] | None:
    if section.get("exec"):
        return _strings(section, "exec")
    return _strings(section, "entrypoint") + _strings(section, "cmd") or None


def lookup_image(table: Mapping[str, _T], image: str) -> _T | None:
    """``table``'s entry for ``image``: by exact reference, then without its tag/digest."""
    found = table.get(image)
    return found if found is not None else table.get(_strip_tag(image))


def resolve_program(argv: Sequence[str], path: str) -> list[str]:
    """``argv`` with a bare program name replaced by its file on ``path``; ``ValueError``
    naming the program when there is none (the machine then fails to exec, exit 127)."""
    program = argv[0]
    if "/" in program:
        return list(argv)
    found = shutil.which(program, path=path)
    if found is None:
        raise ValueError(f"program {program!r} not found on the emulator's PATH {path!r}")
    return [found, *argv[1:]]


def copy_image(source: Path, root: Path) -> None:
    """Make ``root`` a fresh copy of the image directory ``source`` (symlinks kept as such)."""
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(source, root, symlinks=True)


def _strip_tag(image: str) -> str:
    image = image.partition("@")[0]
    head, sep, tail = image.rpartition(":")
    return head if sep and "/" not in tail else image


def ignores_app_secrets(config: Mapping[str, Any]) -> bool:
    """Whether the machine's process is set to ignore its app's secrets
    (``processes[0].ignore_app_secrets``)."""
    processes = config.get("processes")
    first = processes[0] if isinstance(processes, list) and processes else None
    return isinstance(first, Mapping) and first.get("ignore_app_secrets") is True


def machine_env(
    *,
    base_env: Mapping[str, str],
    fly_env: Mapping[str, str],
    secrets: Mapping[str, str],
    config_env: Mapping[str, str],
    root: Path,
    path: str,
) -> dict[str, str]:
    """The environment of a machine process, layered as the module docstring says."""
    env = {
        "PATH": path,
        "HOME": os.environ.get("HOME", str(root)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    env.update(base_env)
    env.update(fly_env)
    env.update(secrets)
    env.update({str(k): str(v) for k, v in config_env.items()})
    env["FLY_EMULATOR_ROOT"] = str(root)
    return env


def check_files(files: Sequence[Mapping[str, Any]]) -> None:
    """400 for a ``files`` entry the emulator cannot write (checked at create/update)."""
    for entry in files:
        path = entry.get("guest_path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise bad_request(f"invalid files[].guest_path {path!r}: must be an absolute path")
        if ".." in Path(path).parts:
            raise bad_request(f"invalid files[].guest_path {path!r}: must not contain '..'")
        if "raw_value" in entry:
            try:
                base64.b64decode(str(entry["raw_value"]), validate=True)
            except binascii.Error:
                raise bad_request(f"invalid files[].raw_value for {path}: not base64") from None
        elif "secret_name" not in entry:
            raise bad_request(
                f"unsupported files[] entry for {path}: the emulator writes raw_value or "
                "secret_name files only"
            )


def write_files(root: Path, files: Sequence[Mapping[str, Any]], secrets: Mapping[str, str]) -> None:
    """Write config ``files`` under ``root``; a missing ``secret_name`` writes nothing."""
    for entry in files:
        if "raw_value" in entry:
            encoded = str(entry["raw_value"])
        elif str(entry.get("secret_name")) in secrets:
            encoded = secrets[str(entry["secret_name"])]
        else:
            continue
        target = root / str(entry["guest_path"]).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(encoded))
        if isinstance(entry.get("mode"), int):
            target.chmod(entry["mode"])


def _limit_memory(limit_bytes: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))

    return apply


def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, memory_mb: int
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session, output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_limit_memory(memory_mb * MIB),  # rlimit applies in the child only
        )


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from ``/proc/PID/status``, ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None  # a zombie has no VmRSS line


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group; a group already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(popen: subprocess.Popen[bytes]) -> int | None:
    """The process's return code once it has exited (reaping it), else ``None``. Its group is
    killed first, while its zombie still holds the pid: once reaped, the pid and so the group
    id may be another process's. A VM dies whole: this takes any stragglers with it."""
    if popen.returncode is not None:
        return popen.returncode
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # macOS: the group is killed just after the reap
        code = popen.poll()
        if code is not None:
            kill_group(popen.pid)
        return code
    try:
        exited = waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return popen.poll()
    if exited is None:
        return None
    kill_group(popen.pid)
    return popen.wait()


def signal_leader(popen: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the main process only, as Fly's init forwards a stop signal."""
    try:
        popen.send_signal(sig)
    except ProcessLookupError:
        pass


def wait_groups_gone(pgids: list[int], timeout: float = 5.0) -> None:
    """Wait (at most ``timeout`` seconds in all) until no process of these groups is left: a
    machine's own children (its job's process, forked by the worker) outlive its leader by
    the moment their SIGKILL takes, as the processes of a VM stop with it."""
    import time

    deadline = time.monotonic() + timeout
    for pgid in pgids:
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                break
            kill_group(pgid)
            time.sleep(0.01)


def kill_all(live: dict[int, subprocess.Popen[bytes]]) -> None:
    """SIGKILL and reap every process group in ``live`` (by leader pid), emptying it."""
    for pid, popen in list(live.items()):
        if popen.returncode is None:  # a reaped pid may be another process's by now
            kill_group(pid, signal.SIGKILL)
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("machine process %d did not die after SIGKILL", pid)
        live.pop(pid, None)
