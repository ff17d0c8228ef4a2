"""balloons' own RESP client: replies of every shape, whole however the bytes arrive."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from balloons.states import JobStatus
from balloons.store import resp
from balloons.store.redisurl import _simple_url, _url
from balloons.store.resp import Redirect, RespClient, RespError, _Incomplete, _parse
from tests.authvalkey import AuthValkey

REPLY = b"*6\r\n:1\r\n$6\r\nlaunch\r\n$-1\r\n*2\r\n+OK\r\n-ERR no\r\n*-1\r\n$0\r\n\r\n"  # nested


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


def test_a_cluster_redirect_is_an_error_of_its_own_kind() -> None:
    for line in (b"-MOVED 3999 127.0.0.1:6381\r\n", b"-ASK 3999 10.0.0.2:6379\r\n"):
        reply, _ = _parse(line, 0)
        assert type(reply) is Redirect and str(reply) == line[1:-2].decode()
    for line in (b"-ERR MOVED\r\n", b"-MOVEDX 1 a:1\r\n", b"-CLUSTERDOWN no\r\n"):
        reply, _ = _parse(line, 0)
        assert type(reply) is RespError


def test_a_single_server_is_never_routed(redis_url: str) -> None:
    client = RespClient(redis_url)
    assert client.pipeline([["SET", "k", "v"], ["GET", "k"], ["PING"]]) == [b"OK", b"v", b"PONG"]
    with pytest.raises(RespError, match="WRONGTYPE"):
        client.execute("HGET", "k", "f")
    assert client._routes is None
    client.close()


def _plain(commands: list[list[object]]) -> bytes:
    """RESP arrays of bulk strings, written out the long way."""
    out = b""
    for cmd in commands:
        out += b"*%d\r\n" % len(cmd)
        for arg in cmd:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            out += b"$%d\r\n" % len(raw) + raw + b"\r\n"
    return out


ARG = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from([*JobStatus, 1, 1.0, True, "1", b"1"]),  # equal keys, each its own bytes
)


@given(st.lists(st.lists(ARG, min_size=1, max_size=8), min_size=1, max_size=4))
@settings(max_examples=500, deadline=None)
def test_commands_encode_alike_however_often_their_strings_were_sent(
    commands: list[list[object]],
) -> None:
    expected = _plain(commands)
    assert resp._encode(commands) == expected  # first time
    assert resp._encode(commands) == expected  # from what was kept
    assert resp._encode(commands, memo=False) == expected


def test_what_encoding_keeps_stays_bounded() -> None:
    for i in range(resp._MEMO_SIZE + 10):
        resp._encode([["GET", f"key:{i}"]])
        assert len(resp._MEMO) <= resp._MEMO_SIZE
    resp._encode([["SET", "k", "x" * (resp._MEMO_CHARS + 1)]])
    assert "x" * (resp._MEMO_CHARS + 1) not in resp._MEMO
    assert resp._encode([["GET", "key:3"]]) == _plain([["GET", "key:3"]])


def test_the_password_of_a_connection_is_not_kept_by_encoding(tmp_path: Path) -> None:
    password = "kept-nowhere-" + "93b1e0"
    server = AuthValkey(tmp_path / "valkey", password, [("reader", password + "-user")])
    server.start()
    try:
        for url in (server.url, f"redis://reader:{password}-user@127.0.0.1:{server.port}"):
            client = RespClient(url)
            assert client.execute("PING") == b"PONG"
            client.close()
    finally:
        server.stop()
    kept = b"".join(resp._MEMO.values()) + "".join(resp._MEMO).encode()
    assert password.encode() not in kept


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


URL_PARTS = (
    st.sampled_from(["redis://", "rediss://", "unix://", "REDIS://", "http://", "redis:/", ""]),
    st.text(alphabet="abcXYZ09:@/.-_%?#=[]& \t\u00e9\x01", max_size=40),
)


def _read_by_urllib(url: str) -> object:
    try:
        return _url(url)
    except ValueError as exc:
        return ("error", str(exc))


@pytest.mark.slow
@given(*URL_PARTS)
@settings(max_examples=2000, deadline=None)
def test_the_light_url_reader_agrees_with_urllib_or_steps_aside(scheme: str, rest: str) -> None:
    url = scheme + rest
    light = _simple_url(url)
    if light is not None:
        assert light == _read_by_urllib(url)


@given(
    st.sampled_from(["redis://", "rediss://", "unix://"]),
    st.text(alphabet="abcXYZ0129:@/.-_", max_size=40),
)
@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
def test_plain_urls_are_read_alike_by_both_readers(scheme: str, rest: str) -> None:
    url = scheme + rest
    light = _simple_url(url)
    urllib = _read_by_urllib(url)
    no_db = scheme != "unix://" and urllib[0] != "error" and not str(urllib[6]).isdigit()  # type: ignore[index]
    assert light is not None or urllib[0] == "error" or ":" in rest or (no_db and urllib[6])  # type: ignore[index]
    if light is not None:
        assert light == urllib


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379",
        "redis://localhost",
        "redis://Cache.Example.com:6380/2",
        "rediss://default:s3cret@fly-abc.upstash.io:6379",
        "redis://:pa55@host:1/0",
        "redis://user:@host",
        "redis://u:p@ss:w@host:0",
        "redis://host:",
        "unix:///tmp/balloons/valkey.sock",
    ],
)
def test_the_urls_machines_are_given_are_read_without_urllib(url: str) -> None:
    assert _simple_url(url) == _url(url)


# The query options of a Redis URL: those a machine's client reads, and no other. The app's
# redis-py client reads the same URL, so an option it would act on and a machine would not is
# refused when either starts.
REFUSED = [
    (
        "rediss://h/0?socket_connect_timeout=5",
        "option 'socket_connect_timeout' in rediss://h/0?socket_connect_timeout",
    ),
    ("rediss://h/0?ssl_password=hunter2", "option 'ssl_password' in rediss://h/0?ssl_password=***"),
    ("unix:///tmp/v.sock?health_check_interval=3", "'health_check_interval' in unix://"),
    (
        "redis://h/0?ssl_ca_certs=/ca.pem",
        "ssl_ca_certs in redis://h/0?ssl_ca_certs=/ca.pem applies",
    ),
    ("rediss://h/0?ssl_cert_reqs=CERT_NONE", "'CERT_NONE' in rediss://h/0?ssl_cert_reqs=CERT_NONE"),
    ("rediss://h/0?ssl_check_hostname=maybe", "expected true or false"),
    ("rediss://h/0?ssl_keyfile=/k.pem", "ssl_keyfile in rediss://h/0?ssl_keyfile=/k.pem needs"),
    ("rediss://h?db=1&db=2", "option db is given twice"),
    ("rediss://h/0?ssl_ca_certs=", "ssl_ca_certs='' in rediss://h/0?ssl_ca_certs=: expected a"),
    ("redis://h?db=x", "db='x' in redis://h?db=x: expected a database number"),
    ("redis://:hunter2@h/0?password=hunter2", "gives its password twice"),
    ("redis://app@h/0?username=app", "gives its username twice"),
    ("http://h/0", "'http://h/0' must start with redis://, rediss:// or unix://"),
    ("redis://h:99999/0", "malformed Redis URL redis://h:99999/0"),
]
ACCEPTED = [
    "rediss://app:hunter2@h:6380/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=optional"
    "&ssl_check_hostname=false&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_ca_path=/etc/ssl",
    "rediss://h/2?ssl_cert_reqs=none",
    "unix:///tmp/v.sock?db=2&password=hunter2",
    "unix:///tmp/v.sock?username=app&password=hunter2&db=1",
    "redis://:hunter2@h:1/3",
    "redis://h/0?db=4",
]


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_a_url_option_a_machine_would_not_act_on_is_refused_at_start(
    url: str, message: str, secret: str
) -> None:
    import balloons
    from balloons.store.redisurl import check_url

    for start in (check_url, RespClient, lambda u: balloons.App(redis_url=u, secret=secret)):
        with pytest.raises(balloons.ConfigError) as info:
            start(url)
        assert message in str(info.value)
        assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ACCEPTED)
def test_the_url_options_a_machine_reads_it_reads_as_redis_py_does(url: str) -> None:
    from redis.connection import parse_url

    from balloons.store.redisurl import check_url

    check_url(url)
    _, host, port, username, password, path, db, query = _url(url)
    theirs = parse_url(url)
    assert (username, password) == (theirs.get("username"), theirs.get("password"))
    assert int(db or 0) == theirs.get("db", 0)
    if path:
        assert theirs["path"] == path
    else:
        assert (theirs["host"], theirs.get("port", 6379)) == (host, port)
    for name, [value] in query.items():
        if name not in ("db", "username", "password"):
            assert str(theirs[name]).lower() == value.lower()


@pytest.mark.slow
def test_a_worker_given_a_url_option_it_would_not_act_on_says_so(secret: str) -> None:
    from balloons.machine.worker import EXIT_USAGE
    from tests.test_worker import run_worker

    url = "rediss://:hunter2@h:6380/0?ssl_cert_reqs=none&socket_keepalive=true"
    job = {"BALLOONS_JOB": "default.01jd3x9k2m8vq4t7w0c5r6y1zh/1"}
    out = run_worker(job, url, secret)
    assert out.returncode == EXIT_USAGE
    assert "option 'socket_keepalive' in rediss://***@h:6380/0?" in out.stderr
    assert "hunter2" not in out.stderr and secret not in out.stderr
