"""The body of ``POST /v1/jobs``, checked: a task job or a command job, and their options.

Every field is checked for its type and range here, and a bad one is a ``400 invalid-request``
problem naming the field, the value and what was expected. What only the task can say (an
unknown task, arguments that do not bind to its signature) is a ``422`` in
:mod:`balloons.service.api`. Values ``{"$bytes": BASE64}`` in ``args``, ``kwargs`` and
``input`` are bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect

from ..store.keys import POOL_RE
from ..untrusted import MAX_CPUS, MAX_MEMORY_MB, describe, shown
from . import webhooks
from .problems import Problem

if TYPE_CHECKING:
    from starlette.requests import Request

#: Largest request body accepted, in bytes.
MAX_BODY = 1024 * 1024
#: Longest timeout and delay, in seconds (the library checks them against its own limits too).
MAX_SECONDS = 30 * 24 * 3600.0
MAX_RETRIES = 100
MAX_LABELS = 32
LABEL_KEY_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._/-]{0,62}\Z")
MAX_LABEL_VALUE = 256
#: How deep ``$bytes`` values are looked for (JSON nested deeper is refused).
MAX_DEPTH = 64

_JSON_TYPE_RE = re.compile(r"\Aapplication/([a-z0-9.+-]+\+)?json\Z")

COMMON = frozenset(
    {"input", "pool", "timeout", "retries", "machine", "at", "delay", "labels", "callback"}
)
TASK_FIELDS = COMMON | {"task", "args", "kwargs"}
COMMAND_FIELDS = COMMON | {"command", "retry_on_exit_codes"}


@dataclass(frozen=True)
class Common:
    """What every job may ask for."""

    input: Any = None
    has_input: bool = False
    pool: str | None = None
    timeout: float | None = None
    retries: int | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    at: dt.datetime | None = None
    delay: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    callback: webhooks.Callback | None = None


@dataclass(frozen=True)
class TaskJob:
    """A checked task job: the task, its arguments and the common fields."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    common: Common


@dataclass(frozen=True)
class Command:
    """A checked command: image, argv and environment."""

    image: str | None
    cmd: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class CommandJob:
    """A checked command job."""

    command: Command
    retry_on_exit_codes: tuple[int, ...]
    common: Common


def invalid(detail: str) -> Problem:
    """A ``400 invalid-request`` problem."""
    return Problem(400, "invalid-request", detail)


async def read(request: Request) -> object:
    """The request's body as JSON (see :func:`load`): 415 unless its type is JSON, 413 past
    :data:`MAX_BODY` bytes (a body declared larger is refused unread)."""
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not _JSON_TYPE_RE.match(ctype):
        raise Problem(
            415,
            "unsupported-media-type",
            f"the body must be application/json, got {shown(ctype)[:60]!r}",
        )
    too_large = Problem(413, "body-too-large", f"the body is over {MAX_BODY:,} bytes")
    declared = request.headers.get("content-length", "")
    if (
        declared.isascii()
        and declared.isdigit()
        and (len(declared) > 9 or int(declared) > MAX_BODY)
    ):
        raise too_large
    chunks, size = [], 0
    async with gone_mid_body():
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise too_large
            chunks.append(chunk)
    return load(b"".join(chunks))


@contextlib.asynccontextmanager
async def gone_mid_body() -> AsyncIterator[None]:
    """A client that hung up before its body was read: a 400 problem nobody reads, rather
    than an error logged with its traceback (anyone could flood the log with them)."""
    try:
        yield
    except ClientDisconnect:
        raise Problem(400, "client-disconnected", "the client went away mid-body") from None


def load(data: bytes) -> object:
    """The request body's JSON value: UTF-8 text (no byte order mark), finite numbers (no
    ``NaN``, ``Infinity``, nor ``1e400``), distinct names in each object (parsers disagree
    on which of ``{"task": A, "task": B}`` counts) and no lone surrogate (``"\\ud800"``, a
    string with no UTF-8 form); a ``400 invalid-request`` problem otherwise."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_distinct,
            parse_constant=no_constant,
            parse_float=finite,
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise invalid(f"the body is not valid JSON: {exc}"[:300]) from None
    if lone_surrogate(data, value):
        raise invalid(
            "the body holds a lone surrogate (\\ud800-\\udfff not in a pair): "
            "strings must be Unicode text"
        )
    return value


def lone_surrogate(data: bytes, value: object) -> bool:
    """Whether ``value``, parsed from the JSON ``data``, holds a string with no UTF-8 form (a
    lone surrogate, which only a ``\\uD800``-``\\uDFFF`` escape can spell)."""
    if not _SURROGATE_ESCAPE.search(data):  # the rule: only then is the value looked at
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _distinct(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise invalid(f"the body names {shown(name)[:60]!r} twice in one object")
            seen.add(name)
    return value


def no_constant(name: str) -> Any:
    """``json.loads``' ``parse_constant``: ``NaN`` and the infinities are no JSON numbers."""
    raise ValueError(f"{name} is not a JSON number")


def finite(raw: str) -> float:
    """``json.loads``' ``parse_float``: a number out of a float's range (``1e400``) is
    refused, not read as infinity."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{raw[:40]} is out of a number's range")
    return value


def parse(body: object) -> TaskJob | CommandJob:
    """The job a request body asks for; a 400 (or 422) problem naming what is wrong."""
    if not isinstance(body, dict):
        raise invalid(f"the body must be a JSON object, got {_kind(body)}")
    if ("task" in body) == ("command" in body):
        raise invalid("the body must hold exactly one of 'task' and 'command'")
    allowed = TASK_FIELDS if "task" in body else COMMAND_FIELDS
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise invalid(f"unknown field(s) {unknown}: expected some of {sorted(allowed)}")
    common = _common(body)
    if "task" in body:
        task = body["task"]
        if not isinstance(task, str) or ":" not in task or len(task) > 512:
            raise invalid(f"task must be 'module:function', got {describe(task)[:80]}")
        args = body.get("args", [])
        if not isinstance(args, list):
            raise invalid(f"args must be a JSON array, got {_kind(args)}")
        kwargs = body.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise invalid(f"kwargs must be a JSON object, got {_kind(kwargs)}")
        return TaskJob(task, decode_bytes(args, "args"), decode_bytes(kwargs, "kwargs"), common)
    return CommandJob(_command(body["command"]), _exit_codes(body), common)


def _common(body: dict[str, Any]) -> Common:
    pool = body.get("pool")
    if pool is not None and (not isinstance(pool, str) or not POOL_RE.match(pool)):
        raise invalid(
            f"pool must be a pool name (lower-case letters, digits, '-', '_'; up to 40), "
            f"got {describe(pool)[:80]}"
        )
    timeout = _seconds(body, "timeout", low=0.0, open_low=True)
    delay = _seconds(body, "delay", low=0.0, open_low=False)
    retries = body.get("retries")
    if retries is not None and not _whole(retries, 0, MAX_RETRIES):
        raise invalid(f"retries must be a whole number from 0 to {MAX_RETRIES}, got {retries!r}")
    at = _at(body.get("at"))
    if at is not None and delay is not None:
        raise invalid("give 'at' or 'delay', not both")
    cpus, memory_mb = _machine(body.get("machine"))
    return Common(
        input=decode_bytes(body["input"], "input") if "input" in body else None,
        has_input="input" in body,
        pool=pool,
        timeout=timeout,
        retries=retries,
        cpus=cpus,
        memory_mb=memory_mb,
        at=at,
        delay=delay,
        labels=_labels(body.get("labels")),
        callback=webhooks.parse(body.get("callback")),
    )


def _seconds(body: dict[str, Any], name: str, *, low: float, open_low: bool) -> float | None:
    raw = body.get(name)
    if raw is None:
        return None
    ok = (
        isinstance(raw, int | float)
        and not isinstance(raw, bool)
        and math.isfinite(raw)
        and (raw > low if open_low else raw >= low)
        and raw <= MAX_SECONDS
    )
    if not ok:
        bound = f"over {low:g}" if open_low else f"from {low:g}"
        raise invalid(f"{name} must be a number of seconds {bound} to {MAX_SECONDS:g}, got {raw!r}")
    return float(raw)


def _at(raw: object) -> dt.datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 64:
        raise invalid(f"at must be an RFC 3339 time string, got {describe(raw)[:80]}")
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise invalid(
            f"at must be an RFC 3339 time with a time zone (2030-01-01T12:00:00Z), got {raw!r}"
        )
    return when


def _machine(raw: object) -> tuple[int | None, int | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise invalid(f"machine must be a JSON object, got {_kind(raw)}")
    unknown = sorted(str(k) for k in raw if k not in ("cpus", "memory_mb", "region"))
    if unknown:
        raise invalid(f"unknown machine field(s) {unknown}: expected cpus, memory_mb, region")
    if raw.get("region") is not None:
        raise Problem(
            422,
            "option-unsupported",
            "machine.region is not supported per job: regions are the backend's settings "
            "(BALLOONS_FLY_REGION, BALLOONS_FLY_FALLBACK_REGIONS)",
        )
    cpus, mem = raw.get("cpus"), raw.get("memory_mb")
    if cpus is not None and not _whole(cpus, 1, MAX_CPUS):
        raise invalid(f"machine.cpus must be a whole number from 1 to {MAX_CPUS}, got {cpus!r}")
    if mem is not None and not _whole(mem, 1, MAX_MEMORY_MB):
        raise invalid(
            f"machine.memory_mb must be a whole number from 1 to {MAX_MEMORY_MB}, got {mem!r}"
        )
    return cpus, mem


def _labels(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid(f"labels must be a JSON object of strings, got {_kind(raw)}")
    if len(raw) > MAX_LABELS:
        raise invalid(f"labels holds {len(raw)} entries: at most {MAX_LABELS}")
    for k, v in raw.items():
        if not LABEL_KEY_RE.match(k):
            raise invalid(
                f"label name {k[:80]!r} is not valid: 1-63 letters, digits, '.', '_', '/', '-'"
            )
        if not isinstance(v, str) or len(v) > MAX_LABEL_VALUE:
            raise invalid(
                f"label {k!r} must be a string of at most {MAX_LABEL_VALUE} characters, "
                f"got {describe(v)[:80]}"
            )
    return dict(raw)


def _command(raw: object) -> Command:
    if not isinstance(raw, dict):
        raise invalid(f"command must be a JSON object, got {_kind(raw)}")
    unknown = sorted(str(k) for k in raw if k not in ("image", "cmd", "env"))
    if unknown:
        raise invalid(f"unknown command field(s) {unknown}: expected image, cmd, env")
    image = raw.get("image")
    if image is not None and (not isinstance(image, str) or not image or len(image) > 512):
        raise invalid(f"command.image must be an image reference, got {describe(image)[:80]}")
    cmd = raw.get("cmd")
    if (
        not isinstance(cmd, list)
        or not cmd
        or len(cmd) > 1024
        or not all(isinstance(a, str) and "\0" not in a for a in cmd)
    ):
        raise invalid("command.cmd must be a non-empty JSON array of strings (no NUL)")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in env.items()
    ):
        raise invalid("command.env must be a JSON object of strings (names without '=' or NUL)")
    return Command(image, list(cmd), dict(env))


def _exit_codes(body: dict[str, Any]) -> tuple[int, ...]:
    raw = body.get("retry_on_exit_codes", [])
    if not isinstance(raw, list) or not all(_whole(c, 1, 255) for c in raw):
        raise invalid("retry_on_exit_codes must be a JSON array of exit codes from 1 to 255")
    return tuple(raw)


def _whole(raw: object, low: int, high: int) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool) and low <= raw <= high


def _kind(raw: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(raw), type(raw).__name__)


def decode_bytes(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` with each ``{"$bytes": BASE64}`` turned into bytes."""
    if depth > MAX_DEPTH:
        raise invalid(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            raw = value["$bytes"]
            if not isinstance(raw, str):
                raise invalid(f"{where}: $bytes must be a base64 string")
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise invalid(f"{where}: $bytes is not valid base64") from None
        return {k: decode_bytes(v, where, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_bytes(v, where, depth + 1) for v in value]
    return value


def encode_value(value: Any, depth: int = 0) -> Any:
    """A decoded result as JSON: bytes as ``{"$bytes": BASE64}``, tuples and sets as arrays,
    non-finite numbers as null, other objects as ``{"$repr": ...}``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > MAX_DEPTH:
        return {"$repr": "..."}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): encode_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode_value(v, depth + 1) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return {"$repr": repr(value)[:1000]}
