"""When a local fork server ends other than by idling out: on ``SIGTERM``, and once orphaned.

``SIGTERM`` makes the server take no more requests and stop every child (``SIGTERM`` to its
group, ``SIGKILL`` after :data:`~balloons.backends.forkserver.STOP_GRACE`); each child's exit
is recorded as ever (its job's attempt ends with the machine's reason, retried as its policy
allows), and the server exits once none is left.

A server whose state directory is gone, or whose socket path no longer names its listener
(deleted, or taken by another server), is *orphaned*: its app and its machines' logs are gone,
or no launch or stop can reach it. It takes no more requests and exits once its children have;
a child whose Redis the server has found unreachable for its ``idle`` seconds is stopped: such
a machine can record nothing and would only wait out an outage nobody will end (its pool's idle
timeout, which may be long). A Redis restart under a server that still has its state directory
and socket stops nothing: machines ride it out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..store.resp import RespError

if TYPE_CHECKING:
    from .forkserver import ForkServer

#: Seconds between two looks at the socket path (and, once orphaned, at the children's Redis).
CHECK_EVERY = 1.0


@dataclass
class Exits:
    """A fork server's state for these exits."""

    state: str  # the state directory the server serves
    inode: int = -1  # its socket's, once bound
    terminating: bool = False  # SIGTERM: stop every child, then exit
    # Redis URL -> time.monotonic() since when it has been found unreachable
    unreachable: dict[str, float] = field(default_factory=dict)
    checked: float = 0.0  # time.monotonic() of the last look


def terminate(server: ForkServer) -> None:
    """``SIGTERM``: take no more requests; the loop's next :func:`check` stops the children."""
    server.exits.terminating = True
    server._begin_drain()


def check(server: ForkServer) -> None:
    """Once per turn of the server's loop: stop the children of a terminating server, and look
    (every :data:`CHECK_EVERY` seconds) whether it is orphaned."""
    from .forkserver import STOP_GRACE

    if server.exits.terminating:
        for child in list(server.children.values()):
            if child.stop_deadline is None:
                server._stop_child(child, STOP_GRACE, requested=False)
    mono = time.monotonic()
    if mono - server.exits.checked < CHECK_EVERY:
        return
    server.exits.checked = mono
    if not orphaned(server):
        return
    server._begin_drain()
    for url in {c.redis_url for c in server.children.values()}:
        if reachable(server, url):
            server.exits.unreachable.pop(url, None)
            continue
        since = server.exits.unreachable.setdefault(url, mono)
        if mono - since < server.idle:
            continue
        for child in list(server.children.values()):
            if child.redis_url == url and child.stop_deadline is None:
                server._stop_child(child, STOP_GRACE, requested=False)


def orphaned(server: ForkServer) -> bool:
    """Whether the server's state directory is gone, or its socket path no longer names its
    listener."""
    try:
        exits = server.exits
        return os.stat(server.path).st_ino != exits.inode or not os.path.isdir(exits.state)
    except OSError:
        return True


def reachable(server: ForkServer, url: str) -> bool:
    """Whether the Redis at ``url`` answers a ``PING`` (within the client's timeout)."""
    if not url:
        return False
    try:
        server.records.client(url).execute("PING")
    except (StoreError, RespError, OSError, ValueError):
        return False
    return True
