"""The balloons dashboard: jobs, one job live, pools and Prometheus ``/metrics``.

Serve it on its own with ``balloons dashboard``, or mount it in a web app::

    from balloons.dashboard import create_app, create_wsgi_app

    # ASGI (Starlette, FastAPI, ...)
    outer.mount("/balloons", create_app(app, token=TOKEN))

    # WSGI (Flask, Django, ...), with werkzeug's dispatcher
    flask_app.wsgi_app = DispatcherMiddleware(
        flask_app.wsgi_app, {"/balloons": create_wsgi_app(app, token=TOKEN)}
    )

Needs the ``dashboard`` extra (``pip install balloons[dashboard]``). Nothing on a machine's
start-up path imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .web import create_app

if TYPE_CHECKING:
    from ..app import App


def create_wsgi_app(app: App, *, token: str | None) -> Any:
    """:func:`create_app` behind a WSGI adapter (``a2wsgi``), for Flask-style apps.

    Live regions hold a request open per browser tab, so serve it with a threaded server.
    """
    from a2wsgi import ASGIMiddleware

    return ASGIMiddleware(create_app(app, token=token))  # type: ignore[arg-type]


__all__ = ["create_app", "create_wsgi_app"]
