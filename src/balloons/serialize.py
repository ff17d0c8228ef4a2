"""Serializers: how arguments and results become bytes. JSON by default.

A serializer is anything with ``name``, ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``.
``msgpack`` (the ``msgpack`` extra: compact, and bytes stay bytes) and ``pickle`` are available
by name; since the worker verifies a job's signature before it
decodes its arguments, only payloads signed with the app's secret are ever unpickled.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError, SerializationError


@runtime_checkable
class Serializer(Protocol):
    """How arguments and results are encoded: a ``name`` (stored with each result) and two
    methods. ``App(serializer=...)`` takes a name (``json``, ``msgpack``, ``pickle``) or any
    object with these."""

    name: str

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; raise on a value it cannot encode."""

    def loads(self, data: bytes) -> Any:
        """Decode what :meth:`dumps` made."""


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JSONSerializer:
    """Compact JSON; tuples come back as lists, as with any JSON."""

    name = "json"

    def dumps(self, obj: Any) -> bytes:
        """Compact UTF-8 JSON (no NaN or infinity)."""
        return _ENCODER.encode(obj).encode()

    def loads(self, data: bytes) -> Any:
        """Decode JSON."""
        return json.loads(data)


class PickleSerializer:
    """Any picklable object. Only enable it when you need it (see the module docstring)."""

    name = "pickle"

    def dumps(self, obj: Any) -> bytes:
        """Pickle with the highest protocol."""
        import pickle

        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        """Unpickle (only signed payloads reach here)."""
        import pickle

        return pickle.loads(data)  # noqa: S301 - only signed payloads reach here


class MsgpackSerializer:
    """MessagePack: compact, bytes stay bytes, tuples come back as lists. Needs the ``msgpack``
    extra; made without it, raises ``ConfigError`` naming the extra to install."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise ConfigError(
                f"the msgpack serializer needs msgpack, which is not installed ({exc}): "
                "pip install 'balloons[msgpack]'"
            ) from None
        self._msgpack = msgpack

    def dumps(self, obj: Any) -> bytes:
        """Encode as MessagePack, bytes as bytes."""
        data: bytes = self._msgpack.packb(obj, use_bin_type=True)
        return data

    def loads(self, data: bytes) -> Any:
        # Only signed payloads reach here; keys other than strings (ints) come back as sent.
        """Decode MessagePack; map keys other than strings come back as sent."""
        return self._msgpack.unpackb(data, raw=False, strict_map_key=False)


_BUILTIN: dict[str, type[JSONSerializer] | type[PickleSerializer] | type[MsgpackSerializer]] = {
    "json": JSONSerializer,
    "msgpack": MsgpackSerializer,
    "pickle": PickleSerializer,
}


def get_serializer(spec: str | Serializer) -> Serializer:
    """A serializer from a name (``json``, ``msgpack``, ``pickle``) or an object that already
    is one."""
    if isinstance(spec, str):
        try:
            return _BUILTIN[spec]()
        except KeyError:
            raise SerializationError(
                f"unknown serializer {spec!r}: expected one of {sorted(_BUILTIN)} "
                "or an object with name, dumps and loads"
            ) from None
    if not isinstance(spec, Serializer):
        raise SerializationError(f"{spec!r} is not a serializer: it needs name, dumps and loads")
    return spec


def dumps_call(ser: Serializer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Encode a call's arguments; on failure name the argument that could not be encoded."""
    try:
        return ser.dumps({"args": list(args), "kwargs": kwargs})
    except Exception as exc:
        culprit = _find_culprit(ser, args, kwargs)
        raise SerializationError(
            f"cannot serialize {culprit} with the {ser.name} serializer: {exc}"
        ) from exc


def _find_culprit(ser: Serializer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for i, value in enumerate(args):
        try:
            ser.dumps(value)
        except Exception:
            return f"positional argument {i} ({type(value).__name__} {_short(value)})"
    for key, value in kwargs.items():
        try:
            ser.dumps(value)
        except Exception:
            return f"keyword argument {key!r} ({type(value).__name__} {_short(value)})"
    return "the arguments"


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of too many digits, a list nested too deep
        return "too large or too deeply nested to show"
    return text if len(text) <= 60 else text[:57] + "..."


def loads_call(ser: Serializer, data: bytes) -> tuple[list[Any], dict[str, Any]]:
    """Decode what :func:`dumps_call` produced, checking its shape."""
    try:
        call = ser.loads(data)
    except Exception as exc:
        raise SerializationError(f"cannot decode the job's arguments: {exc}") from exc
    if (
        not isinstance(call, dict)
        or not isinstance(call.get("args"), list)
        or not isinstance(call.get("kwargs"), dict)
    ):
        raise SerializationError("the job's arguments are not an {args, kwargs} mapping")
    return call["args"], call["kwargs"]
