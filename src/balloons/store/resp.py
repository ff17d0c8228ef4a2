"""A small synchronous RESP2 client for the worker's hot path.

Machines pay for every import: redis-py costs ~100 ms to import on small machines, which is
more than a whole job should take. A worker needs a handful of commands (``EVALSHA``,
``HGETALL``, ``HSET``, ``EXPIRE``), one connection and no pooling, so it speaks RESP itself.
Client-side code (the app, the CLI, the supervisor) uses redis-py, except for the submit write
(:meth:`.writes.Store.submit`), where redis-py's per-call overhead would cost more than
the rest of a submit.

URLs (:mod:`balloons.store.redisurl`): ``redis://[user:password@]host[:port][/db]``, ``rediss://``
(TLS), ``unix:///path/to.sock``, with the query options that module names.

The URL of any node of a Redis Cluster will do: the first ``MOVED`` or ``ASK`` reply turns the
client into a router (:class:`balloons.store.cluster.Routes`) that sends each command to the node
serving its key's slot. A single server never sends one, and costs nothing more.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import StoreError
from .lua import sha as script_sha
from .redisurl import (
    DEFAULT_TIMEOUT,
    _read_url,
    _recv_timeout,
    _send_timeout,
    _simple_url,
    keepalive,
    mask_url,
    tls_context,
    url_timeout,
)

Reply = Any
#: A non-blocking read for a single call (0 where the platform has none: never spin there).
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)


class RespError(StoreError):
    """The server answered a command with an error."""


class Redirect(RespError):
    """A cluster node's ``MOVED`` or ``ASK``: the command's key is served by another node."""


class RespClient:
    """One connection to one server; reconnects on the next command after a failure. On a
    cluster, one connection per node (see :meth:`_redirected`)."""

    #: Where commands go once the server turned out to be a cluster node.
    _routes: Any = None
    #: The commands of the last :meth:`send`, for a redirect to send again.
    _sent: list[list[Any]] | tuple[()] = ()

    def __init__(
        self,
        url: str,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        spin: float = 0.0,
    ) -> None:
        """``timeout`` bounds every read and write (``None``: wait as long as it takes), and
        a blocking command's reply its block time plus ``timeout`` (see :meth:`pipeline`);
        the URL's ``socket_timeout`` option, when given, replaces it. ``connect_timeout``
        bounds connecting (default: ``timeout``). ``spin``: seconds to poll for a reply
        before sleeping on the socket (see :meth:`_fill`); never over TLS. A TCP connection
        has keepalive on (:data:`~balloons.store.redisurl.KEEPALIVE`)."""
        self.url = url
        fields = _simple_url(url) or _read_url(url)
        scheme, self._host, self._port, self._username, self._password, path, db, query = fields
        timeout = url_timeout(query, timeout)
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.spin = spin if _DONTWAIT else 0.0
        self._wait_avg = 0.0  # how long replies took to arrive, lately (moving average)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._query = query
        self._scheme = scheme
        if scheme == "rediss":
            self.spin = 0.0  # a TLS socket reads whole records: no partial, non-blocking reads
        self._path = path
        self._db = int(db) if db else 0

    def __repr__(self) -> str:
        return f"RespClient({mask_url(self.url)!r})"

    def _connect(self) -> socket.socket:
        try:
            if self._scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout)
                sock.connect(self._path)
            else:
                sock = socket.create_connection(
                    (self._host, self._port), timeout=self.connect_timeout
                )
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                keepalive(sock)
                if self._scheme == "rediss":
                    sock = self._tls().wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._sock_timeout)
            if self._sock_timeout is None and self.timeout is not None:
                _send_timeout(sock, self.timeout)  # bounded by the kernel: see _sock_timeout
                _recv_timeout(sock, self.timeout)
        except (OSError, ValueError) as exc:  # ValueError: a certificate file ssl refused
            raise StoreError(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None
        self._sock = sock
        self._buf = b""
        # poll, not select: select refuses file descriptors above 1023, common in busy servers.
        self._idle_check = select.poll()
        self._idle_check.register(sock, select.POLLIN)
        setup: list[list[Any]] = []
        if self._password is not None:
            user = [self._username] if self._username else []
            setup.append(["AUTH", *user, self._password])
        if self._db:
            setup.append(["SELECT", str(self._db)])
        try:
            answers = self._roundtrip(sock, setup) if setup else []
        except TimeoutError:
            self.close()
            raise self._silent(self.timeout, ", ".join(c[0] for c in setup)) from None
        except (OSError, EOFError) as exc:
            self._lost(exc)
        for reply in answers:
            if isinstance(reply, RespError):
                self.close()
                raise StoreError(f"Redis at {mask_url(self.url)} refused the connection: {reply}")
        return sock

    def _tls(self) -> Any:
        """The TLS context of this URL's ``ssl_*`` options (:func:`~.redisurl.tls_context`)."""
        return tls_context(self._query)

    def close(self) -> None:
        """Close the connection (and a cluster's connections to its nodes)."""
        if self._routes is not None:
            self._routes.close()
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    @property
    def _sock_timeout(self) -> float | None:
        """The socket's own timeout (Python's, which polls the socket before each read and
        write): :attr:`timeout` over TLS only. Any other socket blocks, and the kernel bounds
        its reads and writes (``SO_RCVTIMEO``, ``SO_SNDTIMEO``), which costs no system call
        of its own: a submit makes one write and one read."""
        return self.timeout if self._scheme == "rediss" else None

    def execute(self, *args: Any, block: float = 0.0) -> Reply:
        """Send one command and return its reply; server errors raise :class:`RespError`.
        ``block``: see :meth:`pipeline`."""
        reply = self.pipeline([list(args)], block)[0]
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: list[list[Any]], block: float = 0.0) -> list[Reply]:
        """Send several commands in one write; replies (errors as values) in order.
        ``block``: the seconds a blocking command among them (``BLPOP``, ``BLMOVE``, ``XREAD
        BLOCK``...) may wait on the server, which the replies may take on top of
        :attr:`timeout`; no reply within that ends in a :class:`StoreError` naming the
        commands awaited."""
        self.send(commands)
        return self.receive(len(commands), block)

    def send(self, commands: list[list[Any]], wire: bytes | None = None) -> None:
        """The write half of :meth:`pipeline`: then read the ``len(commands)`` replies with
        :meth:`receive` before anything else is sent. ``wire``: the commands already encoded
        (sent as they are to a single server; a cluster's routes encode them per node)."""
        if self._routes is not None:
            self._routes.send(commands)
            return
        self._put(commands, wire)

    def receive(self, n: int, block: float = 0.0) -> list[Reply]:
        """The read half of :meth:`pipeline`: ``n`` replies (errors as values), in order."""
        if self._routes is not None:
            return self._routes.receive(n, block)  # type: ignore[no-any-return]
        replies = self._get(n, block)
        for reply in replies:
            if reply.__class__ is Redirect:
                return self._redirected(replies)
        return replies

    def _put(self, commands: list[list[Any]], wire: bytes | None = None) -> None:
        """:meth:`send` on this connection, whatever the server."""
        self._sent = commands
        try:
            self._send(commands, wire)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_SNDTIMEO, spinning
            self.close()
            raise StoreError(
                f"Redis at {mask_url(self.url)} took nothing of the commands sent within "
                f"{self.timeout or 0:g} s: expected it to read {self._awaited()}"
            ) from None
        except (OSError, EOFError) as exc:
            self._lost(exc)

    def _get(self, n: int, block: float = 0.0) -> list[Reply]:
        """:meth:`receive` on this connection, redirects left as they are."""
        limit = None if self.timeout is None else self.timeout + block
        sock = self._sock
        waits = block and sock is not None and limit is not None
        try:
            if waits:
                self._bound(sock, limit)  # type: ignore[arg-type]
            replies = [self._read() for _ in range(n)]
            if waits:
                self._bound(sock, self.timeout)  # type: ignore[arg-type]
            return replies
        except TimeoutError:
            self.close()  # a reply may still come: never read it as the next command's
            raise self._silent(limit, self._awaited()) from None
        except (OSError, EOFError) as exc:
            self._lost(exc)

    def _bound(self, sock: socket.socket, seconds: float | None) -> None:
        """Bound the socket's reads by ``seconds``, as :attr:`_sock_timeout` says."""
        if self._sock_timeout is None:
            _recv_timeout(sock, seconds)
        else:
            sock.settimeout(seconds)

    def _awaited(self) -> str:
        """The commands whose replies are awaited (their names, never their arguments: an
        ``AUTH`` carries a password), a script named as :mod:`balloons.store.lua` names it."""
        from . import lua

        names = []
        for cmd in self._sent:
            name = str(cmd[0]).upper() if cmd else "?"
            if name == "EVALSHA" and len(cmd) > 1:
                script = next((s for s in lua.NAMES if lua.sha(getattr(lua, s)) == cmd[1]), "")
                name = f"EVALSHA {script}" if script else name
            names.append(name)
        return ", ".join(names) or "a command"

    def _silent(self, limit: float | None, what: str) -> StoreError:
        """The error of a server that answered nothing within ``limit`` seconds."""
        return StoreError(
            f"Redis at {mask_url(self.url)} sent no reply within {limit:.3g} s: expected the "
            f"reply to {what} (a server that accepts connections and never answers, or a "
            "network path that went silent; the timeout is BALLOONS_REDIS_TIMEOUT, "
            "App(redis_timeout=...) or the URL's socket_timeout option)"
        )

    def _redirected(self, replies: list[Reply]) -> list[Reply]:
        """The server is a cluster node, which sent a command of the last :meth:`send` to
        another node: from now on every command goes to the node that serves its key's slot
        (:class:`balloons.store.cluster.Routes`), and the redirected ones are sent again there."""
        from .cluster import Routes

        sent, self._sent = self._sent, ()
        routes = Routes(self)
        self.close()  # the routes connect to each node, this one included
        self._routes = routes
        return routes.redo(sent, replies)

    def _lost(self, exc: BaseException) -> NoReturn:
        self.close()
        raise StoreError(f"lost connection to Redis at {mask_url(self.url)}: {exc}") from None

    def _roundtrip(self, sock: socket.socket, commands: list[list[Any]]) -> list[Reply]:
        """Commands on a connection just made: written straight to it. The idle check of
        :meth:`_send` must not see it: a TLS 1.3 server's session tickets may have arrived by
        then, and a reconnect from in here would leave the caller the socket it closed."""
        sock.sendall(_encode(commands, memo=False))  # AUTH: its password is kept nowhere
        return [self._read() for _ in commands]

    def _send(self, commands: list[list[Any]], wire: bytes | None = None) -> None:
        sock = self._sock
        if sock is not None and self._idle_check.poll(0) and self._stale(sock):
            # The server closed it (a restart, an idle timeout) or sent something unasked.
            # Start afresh rather than fail the command.
            self.close()
            sock = None
        if sock is None:
            sock = self._connect()
        sock.sendall(_encode(commands) if wire is None else wire)

    def _stale(self, sock: socket.socket) -> bool:
        """Whether an idle connection found readable must be replaced. Over TLS it may only
        hold records a server sends whenever it likes (TLS 1.3 session tickets, a key
        update), with no data for the client: they are read here, and the connection kept."""
        if self._scheme != "rediss":
            return True
        import ssl

        sock.setblocking(False)
        try:
            sock.recv(1)  # data nobody asked for, or b"": the server closed it
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # TLS records only: nothing to read for the client
        except OSError:
            pass
        finally:
            sock.settimeout(self._sock_timeout)
        return True

    def eval(
        self, script: str, keys: list[str], args: list[Any], before: Sequence[list[Any]] = ()
    ) -> Reply:
        """``EVALSHA`` with a one-time ``EVAL`` fallback when the server lacks the script.
        ``before``: commands sent in the same write ahead of it; any error reply raises."""
        return self.eval_send(script, keys, args, before)()

    def eval_send(
        self,
        script: str,
        keys: list[str],
        args: list[Any],
        before: Sequence[list[Any]] = (),
        wire: bytes | None = None,
    ) -> Callable[[], Reply]:
        """:meth:`eval` in two halves: send now; the function returned reads the reply (call
        it once, before anything else is sent), so the caller can work while Redis does.
        ``wire``: the ``EVALSHA`` already encoded (:mod:`balloons.store.wire`)."""
        evalsha = ["EVALSHA", script_sha(script), len(keys), *keys, *args]
        if wire is not None and before:
            wire = _encode(list(before)) + wire
        self.send([*before, evalsha], wire)

        def reply() -> Reply:
            replies = self.receive(len(before) + 1)
            last = replies[-1]
            if isinstance(last, RespError) and str(last).startswith("NOSCRIPT"):
                last = self.pipeline([["EVAL", script, len(keys), *keys, *args]])[0]
            for r in (*replies[:-1], last):
                if isinstance(r, RespError):
                    raise r
            return last

        return reply

    @property
    def spinning(self) -> bool:
        """Whether the next wait for a reply polls before it sleeps: while replies have
        lately come within :attr:`spin` (a server next door), not when they take longer (a
        server across a network, or a busy one), so no time is burnt where it cannot pay."""
        return self._wait_avg < self.spin

    def _fill(self) -> None:
        """Read what the server has sent, waiting for it if need be. A spinning client polls
        the socket for up to :attr:`spin` seconds first: a reply due in microseconds then
        costs no sleep and wake-up of this thread, which on a busy machine can take longer
        than the server's whole work (the submit path, where every job pays it)."""
        sock = self._sock
        assert sock is not None
        size = max(65536, len(self._buf))  # a long reply takes as many reads as it doubles
        if not self.spin:
            chunk = self._recv_within(sock, size)
        else:
            began = time.perf_counter()
            chunk = b""
            if self._wait_avg < self.spin:
                deadline = began + self.spin
                while True:
                    try:
                        chunk = sock.recv(size, _DONTWAIT)
                        break
                    except BlockingIOError:
                        if time.perf_counter() >= deadline:
                            chunk = self._recv_within(sock, size)
                            break
            else:
                chunk = self._recv_within(sock, size)
            self._wait_avg += (time.perf_counter() - began - self._wait_avg) / 8
        if not chunk:
            raise EOFError("connection closed by server")
        self._buf += chunk

    @staticmethod
    def _recv_within(sock: socket.socket, size: int) -> bytes:
        """A wait on the socket, for as long as its timeout lets it (the kernel's, or
        Python's over TLS): :attr:`timeout`, plus a blocking command's own time."""
        try:
            return sock.recv(size)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise TimeoutError("timed out") from None

    def _read(self) -> Reply:
        """One whole reply: parsed from what is buffered, reading more until it is there."""
        if not self._buf:
            self._fill()
        while True:
            try:
                reply, end = _parse(self._buf, 0)
            except _Incomplete:
                self._fill()
                continue
            self._buf = self._buf[end:]
            return reply


#: Strings sent before, as RESP bulk strings: most arguments of a script's command are the
#: same on every call (its SHA, the pool's key names in ``KEYS``, the pool's tag, a machine's
#: slot), and looking one up costs a tenth of encoding it. Strings up to :data:`_MEMO_CHARS`
#: long; emptied when it holds :data:`_MEMO_SIZE` (a job's own keys come and go).
_MEMO: dict[str, bytes] = {}
_MEMO_CHARS = 128
_MEMO_SIZE = 4096


def _encode(commands: list[list[Any]], memo: bool = True) -> bytes:
    """Commands as RESP arrays of bulk strings. ``memo``: keep the encoding of short strings
    for the next commands (never for credentials: the connection's ``AUTH``)."""
    out: list[bytes] = []
    add = out.append
    seen = _MEMO.get
    for cmd in commands:
        add(b"*%d\r\n" % len(cmd))
        for arg in cmd:
            if arg.__class__ is str:
                b = seen(arg) if memo else None
                if b is None:
                    raw = arg.encode()
                    b = b"$%d\r\n%b\r\n" % (len(raw), raw)
                    if memo and len(arg) <= _MEMO_CHARS:
                        if len(_MEMO) >= _MEMO_SIZE:
                            _MEMO.clear()
                        _MEMO[arg] = b
                add(b)
            else:
                raw = arg if isinstance(arg, bytes) else str(arg).encode()
                add(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


class _Incomplete(Exception):
    """The buffer ends before the reply does."""


def _parse(buf: bytes, pos: int) -> tuple[Reply, int]:
    """The reply that starts at ``buf[pos]``, and where it ends. Offsets rather than slices of
    the rest: a reply is parsed without copying the buffer once per line."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _Incomplete
        return buf[end + 2 : stop], stop + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        pos = end + 2
        items: list[Reply] = []
        size = len(buf)
        for _ in range(n):
            end = buf.find(b"\r\n", pos)
            if end > pos and buf[pos] == 36:  # a bulk string, the usual item: parsed here
                k = int(buf[pos + 1 : end])
                if k >= 0:
                    pos = end + 4 + k
                    if size < pos:
                        raise _Incomplete
                    items.append(buf[end + 2 : pos - 2])
                    continue
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # - error
        text = buf[pos + 1 : end].decode("utf-8", "replace")
        return (Redirect if text.startswith(("MOVED ", "ASK ")) else RespError)(text), end + 2
    raise EOFError(f"unexpected reply from server: {buf[pos : min(end, pos + 40)]!r}")
