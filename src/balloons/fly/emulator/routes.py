"""The ``/v1`` routes: request decoding around the operations in ``apps``, ``machines``,
``metadata``, ``leases`` and ``wait``.

Where Fly's spec and its own clients disagree (NOTES §9, §10), both forms are accepted:
``force`` or ``kill`` on delete, lease ``ttl`` in the query or the body, signal names or
numbers, Go durations or numbers, ``state`` repeated or comma-separated.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import apps, leases, machines, metadata, wait
from .errors import ApiError
from .parsing import parse_bool, parse_duration, parse_int
from .state import Emulator
from .web import api_route, lease_nonce, read_json

_APP = "/v1/apps/{app_name}"
_MACHINE = _APP + "/machines/{machine_id}"


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["app_name"], request.path_params["machine_id"]


def _no_content() -> Response:
    return Response(status_code=204)


# -- apps -----------------------------------------------------------------------------------


async def create_app(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps``: create an app."""
    # ``?wait=true`` asks Fly to return once the app exists; here it always does at once.
    return apps.create(emu, await read_json(request))


async def list_apps(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps``: the apps of an organization."""
    return apps.list_apps(emu, request.query_params.get("org_slug"))


async def get_app(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}``: one app."""
    return apps.get(emu, request.path_params["app_name"])


async def delete_app(request: Request, emu: Emulator) -> Any:
    """``DELETE /v1/apps/{app_name}``: delete an app and its machines."""
    apps.delete(emu, request.path_params["app_name"])
    return Response(status_code=202)


async def list_secrets(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/secrets``: the app's secrets (names and digests, never values)."""
    return apps.list_secrets(emu, request.path_params["app_name"])


async def update_secrets(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/secrets``: set and unset several secrets."""
    return apps.update_secrets(emu, request.path_params["app_name"], await read_json(request))


async def get_secret(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/secrets/{secret_name}``: one secret."""
    params = request.path_params
    return apps.get_secret(emu, params["app_name"], params["secret_name"])


async def set_secret(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/secrets/{secret_name}``: set one secret."""
    params = request.path_params
    return apps.set_secret(emu, params["app_name"], params["secret_name"], await read_json(request))


async def delete_secret(request: Request, emu: Emulator) -> Any:
    """``DELETE /v1/apps/{app_name}/secrets/{secret_name}``: delete one secret."""
    params = request.path_params
    return apps.delete_secret(emu, params["app_name"], params["secret_name"])


# -- machines -------------------------------------------------------------------------------


async def create_machine(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines``: create (and, unless asked not to, start) a machine."""
    answer = machines.create(emu, request.path_params["app_name"], await read_json(request))
    if emu.faults.lose_response():
        # The machine exists; only the answer is lost, so a retry must not create another.
        raise ApiError(503, "upstream connection error (injected lost response)")
    return answer


async def list_machines(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines``: the app's machines, filtered by state, region and
    metadata."""
    query = request.query_params
    prefix = "metadata."
    return machines.list_machines(
        emu,
        request.path_params["app_name"],
        include_deleted=parse_bool(query.get("include_deleted")),
        states={s.strip() for v in query.getlist("state") for s in v.split(",") if s.strip()},
        region=query.get("region") or None,
        metadata={k[len(prefix) :]: v for k, v in query.items() if k.startswith(prefix)},
        summary=parse_bool(query.get("summary")),
    )


async def get_machine(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines/{machine_id}``: one machine."""
    return machines.get(emu, *_ids(request))


async def update_machine(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines/{machine_id}``: replace a machine's config."""
    body = await read_json(request)
    return machines.update(emu, *_ids(request), body, lease_nonce(request))


async def start_machine(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines/{machine_id}/start``: start a stopped machine."""
    return machines.start(emu, *_ids(request), lease_nonce(request))


async def stop_machine(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines/{machine_id}/stop``: stop a machine (signal, then kill
    after a timeout)."""
    body = await read_json(request)
    return machines.stop(emu, *_ids(request), body, lease_nonce(request))


async def restart_machine(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines/{machine_id}/restart``: restart a machine."""
    query = dict(request.query_params)
    return machines.restart(emu, *_ids(request), query, lease_nonce(request))


async def signal_machine(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines/{machine_id}/signal``: send a signal to a machine's
    process."""
    body = await read_json(request)
    return machines.send_signal(emu, *_ids(request), body, lease_nonce(request))


async def delete_machine(request: Request, emu: Emulator) -> Any:
    """``DELETE /v1/apps/{app_name}/machines/{machine_id}``: destroy a machine
    (``force``/``kill`` to stop it first)."""
    query = request.query_params
    force = parse_bool(query.get("force")) or parse_bool(query.get("kill"))
    return machines.delete(emu, *_ids(request), force, lease_nonce(request))


async def wait_machine(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines/{machine_id}/wait``: wait for a machine to reach a
    state."""
    query = request.query_params
    raw_timeout = query.get("timeout")
    return await wait.wait(
        emu,
        *_ids(request),
        wanted=wait.parse_states(query.getlist("state")),
        timeout=None if not raw_timeout else parse_duration(raw_timeout, "timeout"),
        version=query.get("version") or query.get("instance_id") or None,
        from_event_id=query.get("from_event_id") or None,
    )


async def machine_events(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines/{machine_id}/events``: a machine's events, newest
    first."""
    limit = parse_int(request.query_params.get("limit"), "limit", 20)
    return machines.events(emu, *_ids(request), limit)


async def machine_versions(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines/{machine_id}/versions``: a machine's config versions."""
    return machines.versions(emu, *_ids(request))


# -- metadata -------------------------------------------------------------------------------


async def get_metadata(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines/{machine_id}/metadata``: a machine's metadata."""
    return metadata.get_all(emu, *_ids(request))


async def put_metadata(request: Request, emu: Emulator) -> Any:
    """``PUT /v1/apps/{app_name}/machines/{machine_id}/metadata``: replace a machine's metadata."""
    body = await read_json(request)
    metadata.write(emu, *_ids(request), body, lease_nonce(request), replace=True)
    return _no_content()


async def patch_metadata(request: Request, emu: Emulator) -> Any:
    """``PATCH /v1/apps/{app_name}/machines/{machine_id}/metadata``: update some keys of a
    machine's metadata."""
    body = await read_json(request)
    metadata.write(emu, *_ids(request), body, lease_nonce(request), replace=False)
    return _no_content()


async def get_metadata_key(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines/{machine_id}/metadata/{key}``: one metadata key."""
    return metadata.get_key(emu, *_ids(request), request.path_params["key"])


async def set_metadata_key(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines/{machine_id}/metadata/{key}``: set one metadata key."""
    body = await read_json(request)
    key = request.path_params["key"]
    metadata.set_key(emu, *_ids(request), key, body.get("value"), lease_nonce(request))
    return _no_content()


async def delete_metadata_key(request: Request, emu: Emulator) -> Any:
    """``DELETE /v1/apps/{app_name}/machines/{machine_id}/metadata/{key}``: delete one metadata
    key."""
    metadata.delete_key(emu, *_ids(request), request.path_params["key"], lease_nonce(request))
    return _no_content()


# -- leases ---------------------------------------------------------------------------------


async def acquire_lease(request: Request, emu: Emulator) -> Any:
    """``POST /v1/apps/{app_name}/machines/{machine_id}/lease``: take (or extend) a machine's
    lease."""
    body = await read_json(request)
    # fly-go sends ?ttl=N and no body; the spec puts ttl in the body. Accept either.
    raw_ttl = request.query_params.get("ttl") or body.get("ttl")
    ttl = None if raw_ttl in (None, "") else parse_int(raw_ttl, "ttl", 0)
    description = str(body.get("description") or "")
    return leases.acquire(emu, *_ids(request), ttl, description, lease_nonce(request))


async def get_lease(request: Request, emu: Emulator) -> Any:
    """``GET /v1/apps/{app_name}/machines/{machine_id}/lease``: a machine's lease."""
    return leases.show(emu, *_ids(request))


async def release_lease(request: Request, emu: Emulator) -> Any:
    """``DELETE /v1/apps/{app_name}/machines/{machine_id}/lease``: release a machine's lease (its
    nonce required)."""
    return leases.release(emu, *_ids(request), lease_nonce(request))


def api_routes() -> list[Route]:
    """Every ``/v1`` route, with its action (for faults) and rate-limit scope."""
    return [
        api_route("POST", "/v1/apps", "app_create", create_app, status_code=201,
                  scope="global"),
        api_route("GET", "/v1/apps", "app_list", list_apps, scope="global"),
        api_route("GET", _APP, "app_get", get_app),
        api_route("DELETE", _APP, "app_delete", delete_app),
        api_route("GET", _APP + "/secrets", "secrets", list_secrets),
        api_route("POST", _APP + "/secrets", "secrets", update_secrets),
        api_route("GET", _APP + "/secrets/{secret_name}", "secrets", get_secret),
        api_route("POST", _APP + "/secrets/{secret_name}", "secrets", set_secret,
                  status_code=201),
        api_route("DELETE", _APP + "/secrets/{secret_name}", "secrets", delete_secret),
        api_route("POST", _APP + "/machines", "create", create_machine),
        api_route("GET", _APP + "/machines", "list", list_machines),
        api_route("GET", _MACHINE, "get", get_machine, scope="machine"),
        api_route("POST", _MACHINE, "update", update_machine, scope="machine"),
        api_route("DELETE", _MACHINE, "delete", delete_machine, scope="machine"),
        api_route("POST", _MACHINE + "/start", "start", start_machine, scope="machine"),
        api_route("POST", _MACHINE + "/stop", "stop", stop_machine, scope="machine"),
        api_route("POST", _MACHINE + "/restart", "restart", restart_machine, scope="machine"),
        api_route("POST", _MACHINE + "/signal", "signal", signal_machine, scope="machine"),
        api_route("GET", _MACHINE + "/wait", "wait", wait_machine, scope="machine"),
        api_route("GET", _MACHINE + "/events", "events", machine_events, scope="machine"),
        api_route("GET", _MACHINE + "/versions", "events", machine_versions, scope="machine"),
        api_route("GET", _MACHINE + "/metadata", "metadata", get_metadata, scope="machine"),
        api_route("PUT", _MACHINE + "/metadata", "metadata", put_metadata, scope="machine"),
        api_route("PATCH", _MACHINE + "/metadata", "metadata", patch_metadata, scope="machine"),
        api_route("GET", _MACHINE + "/metadata/{key}", "metadata", get_metadata_key,
                  scope="machine"),
        api_route("POST", _MACHINE + "/metadata/{key}", "metadata", set_metadata_key,
                  scope="machine"),
        api_route("DELETE", _MACHINE + "/metadata/{key}", "metadata", delete_metadata_key,
                  scope="machine"),
        api_route("POST", _MACHINE + "/lease", "lease", acquire_lease, status_code=201,
                  scope="machine"),
        api_route("GET", _MACHINE + "/lease", "lease", get_lease, scope="machine"),
        api_route("DELETE", _MACHINE + "/lease", "lease", release_lease, scope="machine"),
    ]  # fmt: skip
