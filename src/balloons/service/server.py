"""``balloons serve``: reconcile, then serve the API with uvicorn, and stop when idle.

On every start the service runs one step of the supervisor (:mod:`balloons.control`):
reclaiming slots whose lease ran out, promoting due delayed jobs, launching machines for
queued work, and sweeping orphaned machines, whatever happened while it slept. While it
serves, the supervisor runs in a thread as ``balloons supervise`` would.

With ``idle_exit=S`` it exits once, for S seconds, no request was in flight (an open stream or
long-poll counts until it ends), no connection is open, and no job of any pool has a deadline
or a due time within the next S seconds (the Redis server's clock), no job callback is due
within them and none waits for its job to end: a platform that starts it
on the next request (Fly's proxy with ``auto_start_machines``, socket activation) then costs
nothing while idle.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..store.keys import PoolKeys
from ..store.records import slot_entry
from ..untrusted import number

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from ..app import App
    from ..control.supervisor import StepReport, Supervisor
    from .activity import Activity
    from .callbacks import Deliverer

log = logging.getLogger("balloons.service")

#: Seconds between two looks at whether the service may exit.
IDLE_CHECK = 0.5


def reconcile(app: App) -> StepReport:
    """One supervisor step over every pool, orphan sweep included (the service's start)."""
    return app.supervisor().step(gc=True)


def due_within(app: App, horizon: float) -> bool:
    """Whether a job's deadline or due time falls within ``horizon`` seconds of now (the
    Redis server's clock): a delayed job or retry, or a running job's deadline."""
    store = app.store
    now = store.server_time()
    until = now + horizon
    for pool in store.pools():
        pk = PoolKeys(app.settings.namespace, pool)
        with store.errors():
            if store.redis.zrangebyscore(pk.delayed, "-inf", until, start=0, num=1):
                return True
            entries = store.redis.hvals(pk.slot)
        for raw in entries:
            deadline = number(slot_entry(raw).get("deadline"), 0, 1e11)
            if deadline is not None and deadline <= until:
                return True
    return False


def check_installed() -> None:
    """Import what serving needs (the ``service`` extra), so that a missing library raises
    ``ImportError`` before anything is served."""
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401


def serve(
    app: App,
    host: str,
    port: int,
    *,
    token: str | None,
    idle_exit: float | None = None,
    supervise: bool = True,
    log_level: str = "warning",
    sockets: list[socket.socket] | None = None,
    webhook_secret: str | None = None,
) -> None:
    """Serve the job service of ``app`` until interrupted, or until idle for ``idle_exit``;
    deliver its jobs' callbacks, signed with ``webhook_secret`` when they give no secret."""
    import uvicorn

    from .api import create_app
    from .attempts import attempt_routes
    from .webhooks import WebhookSecret

    try:
        secret = WebhookSecret(webhook_secret) if webhook_secret else None
    except ConfigError as exc:
        raise ConfigError(f"BALLOONS_WEBHOOK_SECRET: {exc}") from None
    web = create_app(app, token=token, attempt_routes=attempt_routes(app), webhook_secret=secret)
    activity: Activity = web.state.activity
    # The reconcile runs beside the server once it listens: a request woken by a platform's
    # proxy is answered without waiting for it (nor for its imports), and the service does
    # not exit idle before it is done.
    reconciled = threading.Thread(target=_reconcile, args=(app,), name="balloons-reconcile")
    config = uvicorn.Config(
        web,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",
        timeout_graceful_shutdown=2,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    supervisor: list[Supervisor] = []
    deliverers: list[Deliverer] = []

    def listening() -> None:
        reconciled.start()
        if supervise:
            supervisor.append(app.start_supervisor())
        from .callbacks import Deliverer

        deliverers.append(Deliverer(app, secret).start())

    server = _server(config, listening)
    stop = threading.Event()
    if idle_exit is not None:
        threading.Thread(
            target=_watch_idle,
            args=(app, server, activity, idle_exit, stop, reconciled),
            name="balloons-idle-exit",
            daemon=True,
        ).start()
    try:
        server.run(sockets=sockets)
    finally:
        stop.set()
        for sup in supervisor:
            sup.stop()
        for deliverer in deliverers:
            deliverer.stop()
        if reconciled.ident is not None:
            reconciled.join()


def _server(config: Any, listening: Callable[[], None]) -> Any:
    """A uvicorn server that calls ``listening`` once its sockets listen."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                listening()

    return Server(config)


def _callbacks_due(app: App, horizon: float) -> bool:
    """Whether a job callback keeps the service up (:func:`.callbacks.busy`; imported when
    first asked, off the start's path)."""
    from .callbacks import busy

    return busy(app, horizon)


def _connections(server: object) -> int:
    """Connections the server holds open: one that woke the service (a proxy's, socket
    activation) may not have sent its request yet."""
    state = getattr(server, "server_state", None)
    return len(getattr(state, "connections", ()))


def _reconcile(app: App) -> None:
    try:
        report = reconcile(app)
    except Exception as exc:  # Redis unreachable, say: the supervisor (or next start) retries
        log.warning("reconcile on start failed: %s", exc)
        return
    if report:
        log.warning("reconciled on start: %s", report)


def _watch_idle(
    app: App,
    server: object,
    activity: Activity,
    idle_exit: float,
    stop: threading.Event,
    reconciled: threading.Thread,
) -> None:
    started = False
    while not stop.wait(min(IDLE_CHECK, max(idle_exit, 0.05))):
        if not started:  # idle time counts from when the service listens and has reconciled
            started = bool(getattr(server, "started", False)) and reconciled.ident is not None
            started = started and not reconciled.is_alive()
            activity.last = time.monotonic()
            continue
        if activity.idle_for() < idle_exit or _connections(server):
            continue
        try:
            busy = due_within(app, idle_exit) or _callbacks_due(app, idle_exit)
        except Exception as exc:  # Redis unreachable: stay up, and say why
            log.warning("idle exit: cannot read the jobs' deadlines: %s", exc)
            continue
        if not busy and activity.idle_for() >= idle_exit and not _connections(server):
            log.warning(
                "idle for %gs with nothing due: exiting (%d requests served)",
                idle_exit,
                activity.requests,
            )
            server.should_exit = True  # type: ignore[attr-defined]
            return
