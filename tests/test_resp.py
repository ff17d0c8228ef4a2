"""balloons' own RESP client: replies of every shape, whole however the bytes arrive."""

from __future__ import annotations

import pytest
import redis

from balloons.resp import RespClient, RespError, _Incomplete, _parse

REPLY = (
    b"*6\r\n:1\r\n$6\r\nlaunch\r\n$-1\r\n*2\r\n+OK\r\n-ERR no\r\n*-1\r\n$0\r\n\r\n"  # nested
)


def test_a_reply_of_every_kind_parses_to_its_values_and_its_end() -> None:
    value, end = _parse(REPLY + b"+NEXT\r\n", 0)
    assert end == len(REPLY)
    assert value[:3] == [1, b"launch", None]
    assert value[3][0] == b"OK" and isinstance(value[3][1], RespError)
    assert str(value[3][1]) == "ERR no"
    assert value[4:] == [None, b""]


def test_every_cut_short_reply_is_incomplete_never_a_wrong_value() -> None:
    for i in range(len(REPLY)):
        with pytest.raises(_Incomplete):
            _parse(REPLY[:i], 0)


def test_a_bulk_string_may_hold_the_line_end() -> None:
    assert _parse(b"$4\r\n\r\n\r\n\r\n", 0) == (b"\r\n\r\n", 10)
    assert _parse(b"*2\r\n$2\r\n\r\n\r\n:7\r\n", 0) == ([b"\r\n", 7], 16)


def test_an_unknown_reply_kind_is_an_error() -> None:
    with pytest.raises(EOFError, match="unexpected reply"):
        _parse(b"?what\r\n", 0)


def test_long_replies_arrive_whole_over_many_reads(redis_url: str, r: redis.Redis) -> None:
    big = bytes(range(256)) * 12_000  # 3 MB, with every byte value, "\r\n" included
    r.hset("resp-test", mapping={"a": big, "b": b"", "c": b"x"})
    r.rpush("resp-test-list", *[f"item-{i}" for i in range(20_000)])
    try:
        for spin in (0.0, 0.001):
            client = RespClient(redis_url, timeout=None, spin=spin)
            got = client.execute("HGETALL", "resp-test")
            assert dict(zip(got[::2], got[1::2], strict=True)) == {b"a": big, b"b": b"", b"c": b"x"}
            items = client.execute("LRANGE", "resp-test-list", 0, -1)
            assert items == [f"item-{i}".encode() for i in range(20_000)]
            assert client.execute("PING") == b"PONG"  # nothing left over in the buffer
            client.close()
    finally:
        r.delete("resp-test", "resp-test-list")
