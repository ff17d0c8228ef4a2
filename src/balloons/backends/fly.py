"""``FlyBackend``: each machine is a Fly.io Machine, created through the Machines REST API.

A job costs one API call on the happy path: ``POST /v1/apps/{app}/machines`` with the web
app's own image (``FLY_IMAGE_REF``), the worker command, the task's guest size,
``auto_destroy: true`` and restart policy ``no`` (the machine destroys itself when its worker
exits), metadata naming the job, the attempt, the pool and the namespace (tag ``balloons``), a
unique name per attempt, and an env holding only ``spec.env`` (the handoff variable and
allow-listed names) plus ``BALLOONS_NAMESPACE`` when it is not the default. Neither the API
token nor the Redis URL nor the signing key goes into a machine: the worker gets ``REDIS_URL``
and ``BALLOONS_SECRET`` from the app's secrets (``fly secrets set``). Results travel through
Redis; the API is not polled.

When the API refuses (429, 5xx, a lost answer), :mod:`balloons.fly.client` retries with
back-off behind a shared rate limiter; a create whose answer was lost is never repeated
blindly: the machine is first looked up by its metadata and name. Capacity refusals are tried
again, then in the fallback regions; what happened (the region used, the refusals, a
recovered answer) comes back in ``MachineInfo.detail["note"]``, which the app stores on the
attempt.

A pool with standby machines (``app.pool(..., standby=N)``) has its machines created with
``auto_destroy: false``: a machine whose worker idles out stops, and :meth:`FlyBackend.start`
runs it again later (``POST .../start``, rate-limited per machine rather than per app).
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, ConfigError, FlyAPIError
from ..fly import wire
from ..fly.ratelimit import RateLimiter
from ..fly.settings import FlySettings
from ..info import MachineInfo, MachineSpec
from ..store.keys import DEFAULT_NAMESPACE
from .base import BackendContext

if TYPE_CHECKING:
    from .base import BackgroundLaunches, RateLimited, Restartable

if TYPE_CHECKING:
    import httpx

    from ..fly.client import CapacityRefusal, FlyClient, RetryPolicy

#: The extra that installs the Fly backend's HTTP client (httpx).
EXTRA = "fly"


def require_httpx() -> None:
    """Raise ``ConfigError`` naming the extra to install when httpx cannot be imported."""
    try:
        import httpx  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the Fly backend needs httpx, which is not installed ({exc}): "
            f"pip install 'balloons[{EXTRA}]'"
        ) from None


#: What a job machine runs (``init.cmd``: the image's entrypoint, if any, stays).
DEFAULT_COMMAND = ("python", "-m", "balloons.machine")
#: Creates tried per region when Fly has no capacity there, before the next region.
DEFAULT_CAPACITY_TRIES = 2
#: Seconds a stopped machine has between SIGTERM and SIGKILL.
DEFAULT_STOP_TIMEOUT = 10
#: Seconds a start waits for a machine still on its way down to be stopped.
START_WAIT = 10


class FlyBackend:
    """Machines on Fly.io. Every argument defaults to its environment variable (see
    :class:`balloons.fly.settings.FlySettings`), read from the app's environment at ``bind``.

    ``token`` (``FLY_API_TOKEN``), ``app`` (``BALLOONS_FLY_APP``, else ``FLY_APP_NAME``),
    ``api_url`` (``BALLOONS_FLY_API_URL``, default ``https://api.machines.dev``), ``image``
    (``BALLOONS_FLY_IMAGE``, else ``FLY_IMAGE_REF``), ``region`` (``BALLOONS_FLY_REGION``,
    else ``FLY_REGION``, else Fly's choice), ``fallback_regions``
    (``BALLOONS_FLY_FALLBACK_REGIONS``), ``cpu_kind`` (``BALLOONS_FLY_CPU_KIND``, default
    ``shared``). ``command``: the worker command. ``http``: the httpx client to
    send with; ``limiter``/``retry``: rate limits and retry policy (Fly's documented limits).
    ``background_launches`` (default True): the app creates machines from its launcher thread,
    so that ``submit()`` returns without waiting for Fly's answer (a second or more on the
    real API); False makes each create in the submitting call, as other backends do.
    """

    name = "fly"
    #: A command job gets a machine of its own image running its argv, whose exit the
    #: supervisor observes (see :mod:`balloons.control.commands`); locally, the worker runs it.
    runs_images = True

    def __init__(
        self,
        *,
        token: str | None = None,
        app: str | None = None,
        api_url: str | None = None,
        image: str | None = None,
        region: str | None = None,
        fallback_regions: Sequence[str] | str | None = None,
        cpu_kind: str | None = None,
        command: Sequence[str] = DEFAULT_COMMAND,
        capacity_tries: int = DEFAULT_CAPACITY_TRIES,
        stop_timeout: int = DEFAULT_STOP_TIMEOUT,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        background_launches: bool = True,
    ) -> None:
        require_httpx()
        if capacity_tries < 1:
            raise ValueError(f"capacity_tries must be at least 1, got {capacity_tries}")
        self._options: dict[str, Any] = {
            "token": token, "app": app, "api_url": api_url, "image": image, "region": region,
            "fallback_regions": fallback_regions if isinstance(fallback_regions, str | None)
            else tuple(fallback_regions),
            "cpu_kind": cpu_kind,
        }  # fmt: skip
        self.command = tuple(command)
        self.capacity_tries = capacity_tries
        self.stop_timeout = stop_timeout
        self._limiter = limiter
        self._retry = retry
        self._http = http
        self._settings: FlySettings | None = None
        self._client: FlyClient | None = None
        self._namespace = DEFAULT_NAMESPACE
        self.launches_in_background = background_launches

    def __repr__(self) -> str:
        if self._settings is None:
            return "FlyBackend(unbound)"
        s = self._settings
        return f"FlyBackend(app={s.app!r}, api_url={s.api_url!r}, region={s.region!r})"

    # -------------------------------------------------------------- contract
    def bind(self, ctx: BackendContext) -> None:
        """Resolve the settings from the app's environment (``ConfigError`` naming what is
        missing) and make the API client."""
        require_httpx()
        from ..fly.client import FlyClient

        settings = FlySettings.resolve(ctx.env, **self._options)
        if self._client is None or settings != self._settings:
            if self._client is not None:
                self._client.close()  # the client of the old settings, if it made its own
            self._client = FlyClient(
                settings.api_url,
                settings.token,
                http=self._http,
                limiter=self._limiter,
                retry=self._retry,
            )
        self._settings = settings
        self._namespace = ctx.namespace

    @property
    def settings(self) -> FlySettings:
        """The resolved Fly settings (token, app, API URL, image, regions, CPU kind);
        ``BackendError`` before the backend is bound to an app."""
        if self._settings is None:
            raise BackendError("FlyBackend is not bound to an app: use App(backend=...)")
        return self._settings

    @property
    def image(self) -> str:
        """The image job machines run: their code version (``FLY_IMAGE_REF`` on each)."""
        return self.settings.image

    @property
    def client(self) -> FlyClient:
        """The Machines API client (rate limits, retries, errors); ``BackendError`` before the
        backend is bound to an app."""
        if self._client is None:
            raise BackendError("FlyBackend is not bound to an app: use App(backend=...)")
        return self._client

    def launch_delay(self) -> float:
        """Seconds the next create would wait for this client's rate limiter (0: none). The
        app launches from a thread of its own rather than hold a submitting caller that long."""
        return self.client.limiter.delay("create", self.settings.app)

    def launch(self, spec: MachineSpec) -> MachineInfo:
        """Create the attempt's machine (one request when all goes well)."""
        from ..fly.client import CapacityRefusal

        log = _LaunchLog()
        for region in self._regions():
            for tries in range(1, self.capacity_tries + 1):
                try:
                    machine = self.client.request(
                        "POST",
                        self._path("/machines"),
                        action="create",
                        scope=self.settings.app,
                        json=self._body(spec, region),
                        idempotent=False,
                        recover=lambda: log.recovered(self._find(spec)),
                    )
                except CapacityRefusal as exc:
                    log.refused(region, exc)
                    if tries < self.capacity_tries:
                        time.sleep(self.client.backoff(tries))
                    continue
                return log.info(machine)
        raise log.no_capacity(spec, self._regions())

    def start(self, machine_id: str) -> None:
        """Start a stopped machine again: its worker runs with the env it was created with
        (one request; Fly limits starts per machine, not per app). A machine still on its
        way down (its worker has only just exited) is waited for first. A start whose answer
        was lost is not sent twice: the machine's state tells whether it went through.
        Raises :class:`FlyAPIError`, with status 404 when the machine is gone (destroyed)."""
        try:
            self._start_once(machine_id)
        except FlyAPIError as exc:
            if exc.status != 412:
                raise
            path = self._path(f"/machines/{machine_id}")
            machine = self.client.request("GET", path, action="get", scope=machine_id)
            self._check_restartable(machine_id, machine, exc)
            self.client.request(
                "GET", f"{path}/wait", action="wait", scope=machine_id,
                params=self._wait_params(machine),
            )  # fmt: skip
            self._start_once(machine_id)

    def inspect(self, machine_id: str) -> MachineInfo | None:
        """The machine's state and its latest exit (code, signal, OOM, requested stop)."""
        try:
            data = self.client.request(
                "GET", self._path(f"/machines/{machine_id}"), action="get", scope=machine_id
            )
        except FlyAPIError as exc:
            if _machine_missing(exc):
                return None
            raise
        return wire.machine_info(data)

    def stop(self, machine_id: str) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` seconds; gone or stopped is fine."""
        try:
            self.client.request(
                "POST", self._path(f"/machines/{machine_id}/stop"), action="stop",
                scope=machine_id, json=self._stop_body(), idempotent=True,
            )  # fmt: skip
        except FlyAPIError as exc:
            if not _already_gone(exc):
                raise

    def destroy(self, machine_id: str) -> None:
        """Destroy the machine, killing it if it runs (``force=true``); gone is fine."""
        try:
            self.client.request(
                "DELETE", self._path(f"/machines/{machine_id}"), action="delete",
                scope=machine_id, params={"force": "true"},
            )  # fmt: skip
        except FlyAPIError as exc:
            if not _already_gone(exc):
                raise

    def list(self, **metadata: str) -> list[MachineInfo]:
        """This namespace's machines that are not destroyed, filtered by ``job``, ``pool``
        and ``attempt`` (one request, filtered by Fly)."""
        data = self.client.request(
            "GET", self._path("/machines"), action="list", scope=self.settings.app,
            params=self._list_params(metadata),
        )  # fmt: skip
        return [wire.machine_info(m) for m in data or []]

    def close(self) -> None:
        """Close the HTTP client this backend made (one given to it stays open)."""
        if self._client is not None:
            self._client.close()

    # --------------------------------------------------------------- helpers
    def _path(self, rest: str) -> str:
        # Machine ids come from Redis too (slot entries, standby sets): one holding a "/",
        # "..", "?" or "%" would aim the request at another path, even another app's machine.
        if not all(part.isascii() and part.replace("-", "").replace("_", "").isalnum()
                   for part in rest[1:].split("/")):  # fmt: skip
            shown = rest if len(rest) <= 80 else rest[:80] + "..."
            raise BackendError(
                f"refusing a Fly API path with {shown!r}: a machine id is letters and digits"
            )
        return f"/apps/{self.settings.app}{rest}"

    def _regions(self) -> builtins.list[str | None]:
        s = self.settings
        return [s.region, *s.fallback_regions]

    def _body(self, spec: MachineSpec, region: str | None) -> dict[str, Any]:
        extra = {}
        if self._namespace != DEFAULT_NAMESPACE:
            extra["BALLOONS_NAMESPACE"] = self._namespace
        return wire.create_body(
            spec,
            image=self.settings.image,
            command=self.command,
            cpu_kind=self.settings.cpu_kind,
            region=region,
            namespace=self._namespace,
            extra_env=extra,
        )

    def _start_once(self, machine_id: str) -> None:
        path = self._path(f"/machines/{machine_id}")

        def recover() -> Any:
            state = self.client.request("GET", path, action="get", scope=machine_id)
            return state if _started(state) else None

        self.client.request(
            "POST", f"{path}/start", action="start", scope=machine_id, idempotent=False,
            recover=recover,
        )  # fmt: skip

    def _wait_params(self, machine: Any) -> dict[str, str]:
        """``/wait`` for ``stopped`` of the machine's current version (Fly requires it)."""
        params = {"state": "stopped", "timeout": str(START_WAIT)}
        if isinstance(machine, dict) and machine.get("instance_id"):
            params["version"] = str(machine["instance_id"])
        return params

    @staticmethod
    def _check_restartable(machine_id: str, machine: Any, refused: FlyAPIError) -> None:
        """After a 412 to a start: go on (wait until stopped, start again) only for a machine
        still on its way down; a destroyed one is gone (404), anything else stays refused."""
        state = machine.get("state") if isinstance(machine, dict) else None
        if state in ("destroying", "destroyed"):
            raise FlyAPIError(
                f"cannot start machine {machine_id}: it was destroyed",
                status=404, error=refused.error, request_id=refused.request_id,
                method=refused.method, path=refused.path,
            )  # fmt: skip
        if state not in ("started", "stopping"):
            raise refused

    def _stop_body(self) -> dict[str, str]:
        return {"signal": "SIGTERM", "timeout": f"{self.stop_timeout}s"}

    def _list_params(self, metadata: builtins.dict[str, str]) -> dict[str, str]:
        params = {f"metadata.{wire.TAG}": self._namespace}
        for key, value in metadata.items():
            if key not in wire.FILTERS:
                raise BackendError(
                    f"cannot filter machines by {key!r}: use {', '.join(wire.FILTERS)}"
                )
            params[f"metadata.{wire.FILTERS[key]}"] = str(value)
        if "slot" in metadata:  # one machine at most, which may have died already: say how
            params["include_deleted"] = "true"
        return params

    def _slot_params(self, spec: MachineSpec) -> dict[str, str]:
        params = self._list_params({"slot": spec.metadata.get("balloons_slot", spec.name)})
        params["include_deleted"] = "true"  # a quick job may already be gone
        return params

    def _find(self, spec: MachineSpec) -> dict[str, Any] | None:
        """The attempt's machine if an earlier create made it (its answer lost)."""
        found = self.client.request(
            "GET", self._path("/machines"), action="list", scope=self.settings.app,
            params=self._slot_params(spec),
        )  # fmt: skip
        return _named(found, spec.name)


class _LaunchLog:
    """What happened while creating one attempt's machine, for ``detail["note"]``."""

    def __init__(self) -> None:
        self.refusals: list[tuple[str, CapacityRefusal]] = []
        self.recovered_answer = False

    def refused(self, region: str | None, exc: CapacityRefusal) -> None:
        self.refusals.append((region or "any", exc))

    def recovered(self, machine: dict[str, Any] | None) -> dict[str, Any] | None:
        if machine is not None:
            self.recovered_answer = True
        return machine

    def info(self, machine: dict[str, Any]) -> MachineInfo:
        info = wire.machine_info(machine, events=[])
        notes = []
        if self.refusals:
            refused = ", ".join(f"{region} ({exc.status})" for region, exc in self.refusals)
            notes.append(f"capacity refused in {refused}; created in {info.detail.get('region')}")
        if self.recovered_answer:
            notes.append("the create's answer was lost; the machine was found by its name")
        if not notes:
            return info
        detail = {**info.detail, "note": "; ".join(notes)}
        detail["capacity_refusals"] = str(len(self.refusals))
        return dataclasses.replace(info, detail=detail)

    def no_capacity(self, spec: MachineSpec, regions: builtins.list[str | None]) -> FlyAPIError:
        last = self.refusals[-1][1]
        where = ", ".join(r or "any" for r in regions)
        return FlyAPIError(
            f"Fly has no capacity for a {spec.cpus}-cpu {spec.memory_mb} MB machine in "
            f"{where} ({len(self.refusals)} refusals; last: {last.status} {last.error}): add "
            "regions to BALLOONS_FLY_FALLBACK_REGIONS or try a smaller size",
            status=last.status,
            error=last.error,
            request_id=last.request_id,
            method=last.method,
            path=last.path,
        )


def _named(found: Any, name: str) -> dict[str, Any] | None:
    for machine in found or []:
        if isinstance(machine, dict) and machine.get("name") == name:
            return machine
    return None


def _started(machine: Any) -> bool:
    return isinstance(machine, dict) and machine.get("state") in ("starting", "started")


def _machine_missing(exc: FlyAPIError) -> bool:
    return exc.status == 404 and "app not found" not in exc.error.lower()


def _already_gone(exc: FlyAPIError) -> bool:
    """A stop or destroy of a machine that is already stopped, destroyed or forgotten."""
    return _machine_missing(exc) or exc.status == 412


if TYPE_CHECKING:

    def _capabilities(b: FlyBackend) -> tuple[RateLimited, BackgroundLaunches, Restartable]:
        return b, b, b  # mypy checks that FlyBackend has each optional capability
