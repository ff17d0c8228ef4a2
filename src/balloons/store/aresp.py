"""A small asyncio RESP2 client for the asyncio submit path (the job service's ``POST``).

redis-py's asyncio client costs more per call (its connection pool, a timeout context and a
parser coroutine per reply) than the rest of a service's submit. This one keeps one
connection per event loop, on which any number of callers pipeline at once: each call is one
write, and its replies are the next ones to arrive (RESP answers in order), parsed by
:mod:`balloons.store.resp`'s parser as the bytes come in.

A reply later than the store's timeout, a connection lost or a reply that cannot be parsed
(what a server sends is hostile input too) fails every call awaiting one with a
:class:`~balloons.errors.StoreError`, and closes the connection: a late reply is never read
as another call's. The next call connects again. Error replies are values
(:class:`~balloons.store.resp.RespError`, a cluster's redirect a
:class:`~balloons.store.resp.Redirect`), for the caller to judge.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any

from ..errors import StoreError
from .redisurl import _read_url, _simple_url, keepalive, mask_url, tls_context, url_timeout
from .resp import Reply, RespError, _encode, _Incomplete, _parse


class _Call:
    __slots__ = ("deadline", "future", "n", "replies")

    def __init__(self, n: int, future: asyncio.Future[list[Reply]], deadline: float) -> None:
        self.n = n
        self.future = future
        self.deadline = deadline
        self.replies: list[Reply] = []


class AsyncResp:
    """Connections to one server, one at a time, for one event loop (see the module)."""

    def __init__(self, url: str, timeout: float | None, connect_timeout: float) -> None:
        self.url = url
        fields = _simple_url(url) or _read_url(url)
        self._scheme, self._host, self._port, self._user, self._password = fields[:5]
        self._path, db, self._query = fields[5], fields[6], fields[7]
        self._db = int(db) if db else 0
        self.timeout = url_timeout(self._query, timeout)
        self.connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    def __repr__(self) -> str:
        return f"AsyncResp({mask_url(self.url)!r})"

    async def pipeline(self, commands: list[list[Any]], wire: bytes | None = None) -> list[Reply]:
        """Send ``commands`` in one write (``wire``: already encoded); their replies, errors
        as values, in order."""
        conn = self._conn
        if conn is None or conn.transport is None:
            conn = await self._connect()
        return await conn.call(_encode(commands) if wire is None else wire, len(commands))

    def close(self) -> None:
        """Close the connection (the calls awaiting replies fail)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(f"connection to Redis at {mask_url(self.url)} closed")

    async def _connect(self) -> _Connection:
        # Callers that find no connection share one attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            conn = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        self._conn = conn
        return conn

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(mask_url(self.url), self.timeout)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._scheme == "unix":
                    await loop.create_unix_connection(lambda: conn, self._path)
                else:
                    tls = tls_context(self._query) if self._scheme == "rediss" else None
                    await loop.create_connection(
                        lambda: conn,
                        self._host,
                        self._port,
                        ssl=tls,
                        server_hostname=self._host if tls is not None else None,
                    )
                setup: list[list[Any]] = []
                if self._password is not None:
                    setup.append(["AUTH", *([self._user] if self._user else []), self._password])
                if self._db:
                    setup.append(["SELECT", str(self._db)])
                answers = await conn.call(_encode(setup, memo=False), len(setup)) if setup else []
        except (OSError, TimeoutError, ValueError, StoreError) as exc:
            conn.fail("connecting failed")
            raise StoreError(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None
        for reply in answers:
            if isinstance(reply, RespError):
                conn.fail("refused")
                raise StoreError(f"Redis at {mask_url(self.url)} refused the connection: {reply}")
        return conn


class _Connection(asyncio.Protocol):
    """One connection: the calls awaiting replies, oldest first, and the bytes of a reply not
    whole yet."""

    def __init__(self, where: str, timeout: float | None) -> None:
        self.where = where  # the masked URL
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buf = b""
        self._calls: collections.deque[_Call] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def call(self, data: bytes, n: int) -> asyncio.Future[list[Reply]]:
        """Write ``data`` (``n`` commands); the future of their replies."""
        if self.transport is None:
            raise StoreError(f"lost connection to Redis at {self.where}")
        loop = self._loop
        future: asyncio.Future[list[Reply]] = loop.create_future()
        timeout = self.timeout
        deadline = loop.time() + (timeout if timeout is not None else 0.0)
        self._calls.append(_Call(n, future, deadline))
        if self._timer is None and timeout is not None:
            self._timer = loop.call_at(deadline, self._expire)
        self.transport.write(data)
        return future

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream's (uvloop's too)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            keepalive(sock)  # TCP_NODELAY: asyncio sets it on every TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"lost connection to Redis at {self.where}: {exc or 'closed by the server'}")

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos, calls = 0, self._calls
        try:
            while pos < len(buf):
                if not calls:
                    raise EOFError(f"a reply nobody asked for: {buf[pos : pos + 40]!r}")
                call = calls[0]
                reply, pos = _parse(buf, pos)
                call.replies.append(reply)
                if len(call.replies) == call.n:
                    calls.popleft()
                    if not call.future.done():  # a caller gone (cancelled): its replies dropped
                        call.future.set_result(call.replies)
        except _Incomplete:
            pass
        except (EOFError, ValueError, IndexError, RecursionError) as exc:
            # ValueError: a length that is no number; RecursionError: arrays nested too deep
            self.fail(f"unexpected reply from Redis at {self.where}: {str(exc)[:200]}")
            return
        self._buf = buf[pos:]

    def _expire(self) -> None:
        """The timer of the oldest call awaiting replies: fail them all once it is late."""
        self._timer = None
        if not self._calls:
            return
        head = self._calls[0]
        if self._loop.time() < head.deadline:  # older calls were answered: wait for this one
            self._timer = self._loop.call_at(head.deadline, self._expire)
            return
        self.fail(
            f"Redis at {self.where} sent no reply within {self.timeout or 0:.3g} s (the "
            "timeout is BALLOONS_REDIS_TIMEOUT, App(redis_timeout=...) or the URL's "
            "socket_timeout option)"
        )

    def fail(self, message: str) -> None:
        """Close the connection; every call awaiting replies fails with ``message``."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()
        self._buf = b""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        calls, self._calls = self._calls, collections.deque()
        error = StoreError(message)
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error)
