"""Serializers and signatures (pure logic)."""

from __future__ import annotations

import pytest

from balloons.errors import SerializationError
from balloons.serialize import (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    dumps_call,
    get_serializer,
    loads_call,
)
from balloons.signing import sign, verify


def test_json_round_trip_and_culprit() -> None:
    ser = JSONSerializer()
    data = dumps_call(ser, (1, "a"), {"k": [1.5]})
    assert loads_call(ser, data) == ([1, "a"], {"k": [1.5]})
    with pytest.raises(SerializationError, match="positional argument 0 \\(bytes b'x'\\)"):
        dumps_call(ser, (b"x",), {})
    with pytest.raises(SerializationError, match="keyword argument 'n'"):
        dumps_call(ser, (), {"n": float("nan")})


def test_pickle_by_name_and_bad_names() -> None:
    ser = get_serializer("pickle")
    assert isinstance(ser, PickleSerializer)
    assert loads_call(ser, dumps_call(ser, ({1, 2},), {})) == ([{1, 2}], {})
    with pytest.raises(SerializationError, match="unknown serializer 'yaml'"):
        get_serializer("yaml")
    with pytest.raises(SerializationError, match="not a serializer"):
        get_serializer(object())  # type: ignore[arg-type]


def test_msgpack_by_name_keeps_bytes_and_refuses_what_it_cannot_encode() -> None:
    ser = get_serializer("msgpack")
    assert isinstance(ser, MsgpackSerializer)
    data = dumps_call(ser, (b"\x00\xff", (1, 2)), {"k": {1: "one"}})
    assert loads_call(ser, data) == ([b"\x00\xff", [1, 2]], {"k": {1: "one"}})
    with pytest.raises(SerializationError, match="positional argument 0 \\(set"):
        dumps_call(ser, ({1},), {})
    with pytest.raises(SerializationError, match="cannot decode"):
        loads_call(ser, b"\xc1")


@pytest.mark.parametrize("data", [b"[1,2]", b"{}", b'{"args": 1, "kwargs": {}}', b"\xff"])
def test_malformed_calls_are_refused(data: bytes) -> None:
    with pytest.raises(SerializationError):
        loads_call(JSONSerializer(), data)


def test_signature_binds_payload_and_args() -> None:
    sig = sign(b"k", b'{"id":"a"}', b"args")
    assert verify(b"k", b'{"id":"a"}', b"args", sig)
    assert not verify(b"k", b'{"id":"a"}', b"argz", sig)
    assert not verify(b"other", b'{"id":"a"}', b"args", sig)
    # Moving bytes between payload and args changes the signature.
    assert not verify(b"k", b'{"id":"a"}a', b"rgs", sig)
    assert not verify(b"k", b'{"id":"a"}', b"args", "zz" * 32)
