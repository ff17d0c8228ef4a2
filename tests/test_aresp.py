"""The asyncio RESP client of the asyncio submit (``balloons.store.aresp``): callers pipelining
on one connection each get their own replies, against a real Valkey; whatever a server sends
(garbage, a reply nobody asked for, a reply cut short, silence) fails the calls awaiting one
with a ``StoreError`` naming the masked URL, and the next call connects afresh."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from balloons.errors import StoreError
from balloons.store.aresp import AsyncResp
from balloons.store.resp import RespError

PASSWORD = "aresp-password-not-to-be-shown"


def test_concurrent_callers_each_get_their_own_replies(redis_url: str) -> None:
    async def main() -> None:
        client = AsyncResp(redis_url, 5.0, 5.0)

        async def one(i: int) -> None:
            key = f"aresp:test:{i}"
            got = await client.pipeline([["SET", key, f"v{i}"], ["GET", key], ["HGET", key, "x"]])
            assert got[:2] == [b"OK", f"v{i}".encode()]
            # An error reply is a value, and the replies after it stay the caller's.
            assert isinstance(got[2], RespError) and "WRONGTYPE" in str(got[2])

        await asyncio.gather(*(one(i) for i in range(300)))
        assert await client.pipeline([["DEL", *(f"aresp:test:{i}" for i in range(300))]]) == [300]
        client.close()

    asyncio.run(main())


def test_a_cancelled_callers_replies_are_never_another_callers(redis_url: str) -> None:
    async def main() -> None:
        client = AsyncResp(redis_url, 5.0, 5.0)
        await client.pipeline([["DEL", "aresp:empty"], ["SET", "aresp:v", "mine"]])
        waiting = asyncio.ensure_future(client.pipeline([["BLPOP", "aresp:empty", "0.3"]]))
        await asyncio.sleep(0.05)
        waiting.cancel()
        # Sent behind the blocked command on the same connection: answered after it, with
        # its own reply, not the BLPOP's nil.
        assert await client.pipeline([["GET", "aresp:v"]]) == [b"mine"]
        assert waiting.cancelled()
        client.close()

    asyncio.run(main())


class ScriptedServer:
    """A server on 127.0.0.1 that answers the Kth read of its Nth connection with
    ``answers[N][K]`` (``None``: with nothing, ever), then closes it if ``close``."""

    def __init__(self, answers: list[list[bytes | None]], close: bool = False) -> None:
        self.answers = answers
        self.close_after = close
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}"

    def _serve(self) -> None:
        for answers in self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            for answer in answers:
                conn.recv(65536)
                if answer is None:
                    break
                conn.sendall(answer)
            else:
                if self.close_after:
                    conn.close()

    def stop(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    made: list[ScriptedServer] = []
    yield made
    for s in made:
        s.stop()


GOOD: list[bytes | None] = [b"+OK\r\n", b"+PONG\r\n"]  # AUTH, then the call's PING


@pytest.mark.parametrize(
    ("answer", "close", "said"),
    [
        ([b"+OK\r\n", b"?what\r\n"], False, "unexpected reply"),
        ([b"+OK\r\n", b"$abc\r\nxyz\r\n"], False, "unexpected reply"),
        ([b"+OK\r\n", b"*1\r\n" * 5000 + b":1\r\n"], False, "unexpected reply"),
        ([b"+OK\r\n", b"$10\r\nabc"], True, "lost connection"),
        ([b"+OK\r\n", None], False, "sent no reply within 0.3 s"),
        ([b"-ERR invalid password\r\n"], False, "refused the connection"),
    ],
)
def test_what_a_hostile_server_sends_fails_the_call_and_the_next_connects_afresh(
    scripted: list[ScriptedServer], answer: list[bytes | None], close: bool, said: str
) -> None:
    server = ScriptedServer([answer, GOOD], close)
    scripted.append(server)

    async def main() -> None:
        client = AsyncResp(server.url, 0.3, 2.0)
        with pytest.raises(StoreError) as err:
            await client.pipeline([["PING"]])
        message = str(err.value)
        assert said in message and f"127.0.0.1:{server.port}" in message, message
        assert PASSWORD not in message
        assert await client.pipeline([["PING"]]) == [b"PONG"]
        client.close()

    asyncio.run(main())


def test_a_reply_nobody_asked_for_drops_the_connection(scripted: list[ScriptedServer]) -> None:
    server = ScriptedServer([[b"+OK\r\n", b"+PONG\r\n+EXTRA\r\n", None], GOOD])
    scripted.append(server)

    async def main() -> None:
        client = AsyncResp(server.url, 2.0, 2.0)
        assert await client.pipeline([["PING"]]) == [b"PONG"]
        await asyncio.sleep(0.05)
        # The first connection, which sent more than was asked, is no longer used.
        assert await client.pipeline([["PING"]]) == [b"PONG"]
        assert len(server.conns) == 2
        client.close()

    asyncio.run(main())


def test_a_server_that_is_not_there_is_a_store_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        client = AsyncResp(f"redis://127.0.0.1:{port}", 1.0, 1.0)
        with pytest.raises(StoreError, match=f"cannot reach Redis at redis://127.0.0.1:{port}"):
            await client.pipeline([["PING"]])

    asyncio.run(main())


# ------------------------------------------------------------- the asyncio submit on it
def _submit_read(app: object, reads: bool) -> tuple[object, list[object]]:
    import balloons
    from tests import tasks

    assert isinstance(app, balloons.App)

    async def go() -> tuple[object, list[object]]:
        task = tasks.add
        jk, req = app._submit_args(task, task.opts, (1, 2), {})
        try:
            got, replies = await app.store.submit_read_async(
                jk, req, [["HGET", jk.job, "status"], ["HGET", jk.pool.jobs, "x"]] if reads else []
            )
        finally:
            await app.store.aclose()
        return (got.placed, jk), replies

    return asyncio.run(go())


def test_the_async_submit_reads_behind_it_and_survives_a_flushed_script_cache_and_a_kill(
    redis_url: str, secret: str, r: object
) -> None:
    import redis

    import balloons
    from tests import tasks

    assert isinstance(r, redis.Redis)
    r.delete("balloons:pools")
    app = balloons.App(redis_url=redis_url, secret=secret, record_ttl=60)
    try:
        (placed, jk), replies = _submit_read(app, reads=True)
        # The reads run after the script, in the same write: they see the job it stored.
        assert replies[0] == b"STARTING" and placed == "launch"
        assert isinstance(replies[1], RespError) and "WRONGTYPE" in str(replies[1])
        assert r.sismember("balloons:pools", "default")
        r.script_flush()
        (placed, jk), replies = _submit_read(app, reads=True)  # NOSCRIPT: sent with EVAL
        assert replies[0] is not None and r.hget(jk.job, "status") == replies[0]  # type: ignore[attr-defined]

        async def across_a_kill() -> bool:
            task = tasks.add
            try:
                for i in range(2):
                    jk, req = app._submit_args(task, task.opts, (1, 2), {})
                    await app.store.submit_async(jk, req)
                    if i == 0:  # the server closes the connection: the next call makes one
                        conn = app.store._aresp[asyncio.get_running_loop()]._conn
                        await asyncio.to_thread(r.client_kill_filter, _type="normal", skipme=True)
                        for _ in range(500):
                            if conn.transport is None:
                                break
                            await asyncio.sleep(0.01)
                        assert conn.transport is None
            finally:
                await app.store.aclose()
            return bool(r.exists(jk.job))

        assert asyncio.run(across_a_kill())
    finally:
        app.close()


def test_the_reads_behind_a_submit_become_the_resource_only_when_they_are_whole() -> None:
    from balloons.service.resources import Raw, raw_of

    rec = [b"status", b"QUEUED", b"attempt", b"1"]
    got = raw_of([rec, [], None, []])
    assert isinstance(got, Raw) and got.rec == {"status": b"QUEUED", "attempt": b"1"}
    assert got.attempts == {} and got.meta is None and got.hook == {}
    assert raw_of([[], [], None, []]) is None  # no record: the job is not there
    for bad in (
        [rec, [], None],  # a reply missing
        [RespError("WRONGTYPE"), [], None, []],  # a key of another type
        [rec, [b"1"], None, []],  # an odd hash
        [rec, [], 7, []],  # a meta that is no string
        [rec, [], None, [b"k", 7]],  # a field that is no string
        [b"x", [], None, []],
    ):
        assert raw_of(bad) is False, bad
