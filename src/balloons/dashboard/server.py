"""Serving the dashboard with uvicorn, refusing to listen beyond loopback without a token."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..app import App

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8270
#: Where ``balloons dashboard`` keeps the token it makes for a loopback-only server.
TOKEN_FILE = "dashboard-token"  # noqa: S105 (a file name)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def resolve_token(host: str, token: str | None, state_dir: Path) -> tuple[str, Path | None]:
    """The token to serve with, and the file it was kept in when balloons made it.

    Beyond loopback a configured token is required. On loopback without one, a random token
    is made once and kept (mode 0600) under the state directory, so only this user can read it.
    """
    if token:
        return token, None
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host!r} without a token: set "
            "BALLOONS_DASHBOARD_TOKEN (16+ characters), or listen on 127.0.0.1"
        )
    path = state_dir / TOKEN_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return path.read_text().strip(), path


def check_installed() -> None:
    """Import what serving the dashboard needs (the ``dashboard`` extra), so that a missing
    library raises ``ImportError`` before anything is printed or served."""
    import jinja2  # noqa: F401
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401


def serve(app: App, host: str, port: int, token: str, log_level: str = "info") -> None:
    """Serve the dashboard of ``app`` until interrupted."""
    import uvicorn

    from .web import create_app

    web = create_app(app, token=token)
    uvicorn.run(web, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
