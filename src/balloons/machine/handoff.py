"""What a machine is told when it is launched: ``BALLOONS_JOB=POOL.ULID/ATTEMPT`` (its first job
and its slot), how to reach Redis, the app's signing key. Read by the worker's entry point, the
one reader of a machine's environment; on every machine's start-up path (lean imports only).
"""

from __future__ import annotations

from ..compat import MAX_VERSION, Compat, source_version
from ..config import check_secret
from ..errors import ConfigError, WorkerError
from ..frozen import Frozen
from ..store.keys import DEFAULT_NAMESPACE, split_job_id

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping


class Handoff(Frozen):
    """What a machine is told: its job and attempt, and how to reach Redis."""

    __slots__ = (
        "attempt", "job_id", "machine_id", "namespace", "redis_url", "secret", "standby",
        "version",
    )  # fmt: skip
    __match_args__ = (
        "job_id", "attempt", "redis_url", "secret", "namespace", "machine_id", "standby",
        "version",
    )  # fmt: skip
    job_id: str
    attempt: int
    redis_url: str
    secret: bytes
    namespace: str
    machine_id: str
    standby: bool  # the machine stops rather than vanishing when the worker exits
    version: str  # the code version this machine runs (see balloons.compat)

    def __init__(
        self,
        job_id: str,
        attempt: int,
        redis_url: str,
        secret: bytes,
        namespace: str,
        machine_id: str,
        standby: bool = False,
        version: str = "",
    ) -> None:
        self._set(job_id, attempt, redis_url, secret, namespace, machine_id, standby, version)

    def __repr__(self) -> str:
        return (
            f"Handoff(job_id={self.job_id!r}, attempt={self.attempt}, machine={self.machine_id!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Handoff:
        """The handoff from a machine's environment: ``BALLOONS_JOB`` and the connection
        settings; ``WorkerError`` naming what is missing or malformed."""
        raw = env.get("BALLOONS_JOB", "")
        if not raw:
            raise WorkerError(
                "usage",
                "BALLOONS_JOB is not set: a worker runs the one job named by "
                "BALLOONS_JOB=JOB_ID/ATTEMPT, which balloons sets on every machine it launches",
            )
        job_id, _, attempt = raw.rpartition("/")
        if not job_id or not (attempt.isascii() and attempt.isdigit()):
            raise WorkerError(
                "usage",
                f"BALLOONS_JOB={raw!r} is malformed: expected JOB_ID/ATTEMPT, "
                "e.g. default.01jd3x9k2m8vq4t7w0c5r6y1zh/1",
            )
        try:
            split_job_id(job_id)
        except ValueError as exc:
            raise WorkerError("usage", f"BALLOONS_JOB={raw!r} is malformed: {exc}") from None
        url = env.get("BALLOONS_REDIS_URL") or env.get("REDIS_URL") or ""
        if not url:
            raise WorkerError(
                "usage",
                "no Redis URL: set BALLOONS_REDIS_URL or REDIS_URL on the worker "
                "(on Fly: `fly secrets set REDIS_URL=...` for the worker's app)",
            )
        secret = env.get("BALLOONS_SECRET", "")
        if not secret:
            raise WorkerError(
                "usage",
                "BALLOONS_SECRET is not set: the worker needs the app's signing key to verify jobs",
            )
        try:
            check_secret(secret, "BALLOONS_SECRET")  # a short key is guessed: refused here too
        except ConfigError as exc:
            raise WorkerError("usage", str(exc)) from None
        return cls(
            job_id=job_id,
            attempt=int(attempt),
            redis_url=url,
            secret=secret.encode(),
            namespace=env.get("BALLOONS_NAMESPACE") or DEFAULT_NAMESPACE,
            machine_id=env.get("BALLOONS_MACHINE_ID") or env.get("FLY_MACHINE_ID") or "",
            standby=env.get("BALLOONS_STANDBY") == "1" and attempt == "0",
            version=machine_version(env),
        )


def machine_version(env: Mapping[str, str]) -> str:
    """The code version of this machine: the app's own (``BALLOONS_VERSION``, given at
    launch when the app sets one), else its image on Fly (``FLY_IMAGE_REF``), else the digest
    of the task modules' source named at launch (``BALLOONS_VERSION_FILES``, read now)."""
    version = env.get("BALLOONS_VERSION") or env.get("FLY_IMAGE_REF") or ""
    if version:
        return version[:MAX_VERSION]
    files = env.get("BALLOONS_VERSION_FILES", "")
    if not files:
        return ""
    import os

    return source_version(files.split(os.pathsep))


def machine_compat(tag: str, env: Mapping[str, str] | None = None) -> Compat:
    """This machine's compatibility (its tag ``tag``) as an app's (``App.pin_compat``): what
    it submits carries its tag, and a machine it launches is told its version as it was."""
    import os

    env = os.environ if env is None else env
    if env.get("BALLOONS_VERSION"):
        return Compat(tag, env["BALLOONS_VERSION"][:MAX_VERSION], (), True)
    files = tuple(f for f in env.get("BALLOONS_VERSION_FILES", "").split(os.pathsep) if f)
    return Compat(tag, machine_version(env), files, False)
