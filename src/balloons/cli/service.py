"""The job service's commands: ``serve``, and ``keys create|list|revoke`` for its API keys.

Nothing here imports the service's web stack until ``serve`` runs: the other commands stay
as quick to start as before.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import click

from ..untrusted import shown
from .common import Seconds, err_console, import_app, load_app, main

DEFAULT_PORT = 8280


@main.command()
@click.option("-A", "--app", "module", default=None, help="Module defining the App and its tasks.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--idle-exit",
    type=Seconds(7 * 24 * 3600),
    default=None,
    help="Exit after this many seconds with no request and no job deadline or due time near.",
)
@click.option(
    "--supervise/--no-supervise",
    default=True,
    show_default=True,
    help="Run the supervisor in the service while it serves.",
)
def serve(
    module: str | None, host: str, port: int, idle_exit: float | None, supervise: bool
) -> None:
    """Serve the job service: the HTTP API for any language (OpenAPI at /v1/openapi.json).

    Requests need an API key (balloons keys create); BALLOONS_SERVICE_TOKEN, when set, is an
    admin key for bootstrapping. BALLOONS_WEBHOOK_SECRET (whsec_...) signs job callbacks,
    which the service delivers. On start the service reconciles what happened while it was
    down (expired leases, orphan machines, due jobs).
    """
    try:
        from ..service.server import check_installed
        from ..service.server import serve as run

        check_installed()
    except ImportError as exc:
        raise click.ClickException(
            f"the job service needs the service extra (pip install 'balloons[service]'): {exc}"
        ) from None
    from ..config import service_token, webhook_secret

    app = import_app(module)
    app.store.pools()  # a wrong Redis URL is said now, before listening
    where = f"[{host}]" if ":" in host else host
    err_console.print(f"balloons service on http://{where}:{port}/v1/", highlight=False)
    run(
        app,
        host,
        port,
        token=service_token(os.environ),
        idle_exit=idle_exit,
        supervise=supervise,
        webhook_secret=webhook_secret(os.environ),
    )


@main.group()
def keys() -> None:
    """API keys of the job service (Redis keeps only their digests)."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    required=True,
    help="Comma-separated scopes: jobs:write, jobs:read, admin.",
)
def keys_create(name: str, scopes: str) -> None:
    """Make a key named NAME and print it (it is shown this once only)."""
    from ..service.auth import Keys, parse_scopes

    app = load_app()
    key = Keys(app.store, app.settings.namespace).create(name, parse_scopes(scopes))
    click.echo(key)
    err_console.print(
        "keep it now: it is not stored (only its digest) and cannot be shown again",
        highlight=False,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(as_json: bool) -> None:
    """The keys: name, scopes, when made (never the key)."""
    from ..service.auth import Keys

    app = load_app()
    found = Keys(app.store, app.settings.namespace).list()
    if as_json:
        click.echo(
            json.dumps(
                [{"name": k.name, "scopes": list(k.scopes), "created": k.created} for k in found]
            )
        )
        return
    for k in found:
        made = "?"
        if k.created:
            made = datetime.fromtimestamp(k.created, UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(shown(f"{k.name}\t{','.join(k.scopes) or '-'}\t{made} UTC\t{k.prefix}"))
    if not found:
        err_console.print("no keys", highlight=False)


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the key named NAME (every process stops taking it within a second)."""
    from ..service.auth import Keys

    app = load_app()
    n = Keys(app.store, app.settings.namespace).revoke(name)
    if not n:
        raise click.ClickException(f"no key named {name!r}: balloons keys list shows them")
    click.echo(f"revoked {name}")
