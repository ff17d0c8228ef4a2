"""TCP ports for servers a test starts on 127.0.0.1 by number (a Valkey, a CLI's server).

A port found free with ``bind(("127.0.0.1", 0))`` comes from the kernel's ephemeral range, the
same range every outgoing connection takes its local port from: in the moment between finding
it and the server binding it, a connection of this or another test process (pytest-xdist runs
several) may take it. ``free_port()`` hands out ports below the ephemeral range instead, which
the kernel never gives to a connection, walking up from a random start per process (so
parallel workers are thousands of ports apart), and checks each is free.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; macOS starts at 49152


_END = _ephemeral_start()
_next = random.randrange(_LOWEST, _END) if _END - _LOWEST > 1000 else 0


def free_port() -> int:
    """A port on 127.0.0.1 that is free now and that no outgoing connection will take."""
    global _next
    if not _next:  # no room below the ephemeral range: let the kernel choose
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(_END - _LOWEST):
        port, _next = _next, _next + 1 if _next + 1 < _END else _LOWEST
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port on 127.0.0.1 between {_LOWEST} and {_END}")
