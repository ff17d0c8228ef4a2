"""A fork server's claim on its socket path: one server per path, never two.

A launcher starts a server, under a lock of its state directory, once its ping finds none;
a ping that fails for another reason (a server too busy to answer in time, a full backlog)
would start a second one, and binding would take the path from the first. So the server
claims the path itself: it holds an exclusive ``flock`` on ``PATH.lock`` from before it binds
until it stops taking requests (it drains, and unlinks its socket), and binds only while it
holds it. A server started for a path whose holder listens exits at once, binding nothing
(the launcher's ping then finds the holder); one started while the holder drains (its socket
already gone) waits for the lock, for :data:`CLAIM_WAIT` seconds at most. A stale socket, its
server killed (the kernel releases a dead holder's lock), is replaced only under the lock.
The lock's descriptor is closed in every child: a machine never holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time

#: Seconds a server waits for a draining holder of its path to let the path go.
CLAIM_WAIT = 20.0


class PathClaim:
    """The lock of the socket path ``path``: held by the one server that serves it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def take(self, wait: float = CLAIM_WAIT) -> bool:
        """Take the path's lock; False, at once, while a server listens on the path (or once
        ``wait`` seconds have passed with the lock held by one that does not)."""
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        give_up = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if listening(self.path) or time.monotonic() > give_up:
                    os.close(fd)
                    return False
                time.sleep(0.05)  # its holder drains, or is about to bind
            else:
                self.fd = fd
                return True

    def release(self) -> None:
        """Let the path go (the server drains): another server may take it."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def leave(self) -> None:
        """In a child of the server: close the lock's descriptor, the server keeping the lock
        (a ``flock`` belongs to the open file, which the server still has open)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def listening(path: str) -> bool:
    """Whether a server accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True
