"""A request to the local fork server that fails is a ``BackendError`` naming it, and a
connection reset before the server read it counts as no server at all.

A fork server's listening socket is held, for a moment, by each child it forks (until the
child closes the server's descriptors). A server killed in that moment leaves the socket
listening in the child: a request connects, waits in the backlog, and is reset when the child
closes the socket. Before, ``stop`` and ``destroy`` let that ``ConnectionResetError`` escape
(while a refused connection, the same server gone, read as "not found here" and fell back to
the machine's record), and a launch did not start a new server. Other socket errors, a reply
that is no JSON object, and a server start that timed out escaped raw too."""

from __future__ import annotations

import os
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import balloons
from balloons.backends import local
from balloons.backends.local import LocalBackend
from balloons.errors import BackendError


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    app = balloons.App(state_dir=tmp_path / "state")
    b = app.backend
    assert isinstance(b, LocalBackend)
    (tmp_path / "state").mkdir()
    try:
        yield b
    finally:
        b.shutdown()
        app.close()


def _reset_while_queued(path: str, call: Callable[[], Any]) -> Any:
    """Run ``call`` (a request to the fork server at ``path``) against a listening socket
    that never accepts: the copy a child of a killed server still holds. Once the request's
    connection waits in its backlog, the socket is closed, as the child closes it."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the test to check
            result.append(exc)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held:
        held.bind(path)
        held.listen(8)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        readable, _, _ = select.select([held], [], [], 30)  # the connection is queued
        assert readable, "the request never connected"
    thread.join(60)
    assert not thread.is_alive()
    return result[0]


def test_a_stop_reset_before_the_server_read_it_falls_back_to_the_record(
    backend: LocalBackend,
) -> None:
    got = _reset_while_queued(backend.socket_path(), lambda: backend.stop("m0", grace=0))
    assert got is None  # no server has it, and no record says it runs: nothing to do


@pytest.mark.machines
def test_a_request_reset_before_the_server_read_it_starts_a_server(
    backend: LocalBackend,
) -> None:
    reply = _reset_while_queued(backend.socket_path(), lambda: backend._request({"op": "ping"}))
    assert isinstance(reply, dict), reply
    assert reply["ok"] is True and reply["pid"] > 0


def test_another_socket_error_is_a_backend_error_naming_the_socket(
    backend: LocalBackend,
) -> None:
    path = backend.socket_path()
    os.symlink(path, path)  # a path that cannot be resolved: ELOOP, not "no server"
    try:
        with pytest.raises(BackendError, match=rf"'stop' on {re.escape(path)} failed: OSError"):
            backend.stop("m0")
    finally:
        os.unlink(path)


@pytest.mark.parametrize("answer", [b"not json\n", b"[1, 2]\n"])
def test_a_reply_that_is_no_json_object_is_a_backend_error(
    backend: LocalBackend, answer: bytes
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(backend.socket_path())
        server.listen(1)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        path = re.escape(backend.socket_path())
        with pytest.raises(
            BackendError, match=rf"'ping' on {path} failed: (JSONDecode|Value)Error"
        ):
            backend._request({"op": "ping"})
        thread.join(30)


@pytest.mark.machines
def test_a_server_start_that_times_out_is_a_backend_error(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No interpreter starts, imports balloons and listens in a microsecond.
    monkeypatch.setattr(local, "START_TIMEOUT", 1e-6)
    path = re.escape(backend.socket_path())
    with pytest.raises(BackendError, match=rf"did not listen on {path} within 1e-06s; see .*log"):
        backend._request({"op": "ping"})
