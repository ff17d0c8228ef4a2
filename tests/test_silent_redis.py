"""A Redis host that goes silent (accepts and never answers, or stops answering mid-wait) ends
every wait with a ``StoreError`` naming the masked URL and what was awaited, never a hang:
submit, ``job.result()``, their asyncio twins, the CLI's ``wait`` and ``result``, a machine."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest

import balloons
from balloons import App, StoreError
from balloons.config import Settings
from balloons.errors import ConfigError
from balloons.machine.worker import EXIT_STORE
from balloons.store.resp import RespClient
from tests import tasks
from tests.clirun import balloons as run_cli
from tests.silentredis import MuteProxy, SilentServer
from tests.test_worker import HoldBackend, bound, run_worker

#: A short reply timeout, so that each silence ends soon (seconds).
SHORT = 0.2
PASSWORD = "hunter2-not-to-be-shown"
#: How late a loaded host's replies come (seconds): later than SHORT.
LATE = 2 * SHORT


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


def mute_at(redis_url: str, trigger: bytes, lag: float = 0.0) -> MuteProxy:
    return MuteProxy(redis_url.removeprefix("unix://"), trigger, lag)


def held_app(url: str, secret: str, **kw: Any) -> App:
    kw.setdefault("redis_timeout", SHORT)
    return App(redis_url=url, secret=secret, backend=HoldBackend(), **kw)


def test_the_timeout_is_a_setting_with_a_default() -> None:
    assert Settings.resolve({}).redis_timeout == 10.0
    assert Settings.resolve({"BALLOONS_REDIS_TIMEOUT": "2.5"}).redis_timeout == 2.5
    assert Settings.resolve({"BALLOONS_REDIS_TIMEOUT": "9"}, redis_timeout=3).redis_timeout == 3
    for bad in ("nan", "0", "-1", "inf", "soon"):
        with pytest.raises(ConfigError, match="BALLOONS_REDIS_TIMEOUT"):
            Settings.resolve({"BALLOONS_REDIS_TIMEOUT": bad})
    with pytest.raises(ConfigError, match="redis_timeout"):
        Settings.resolve({}, redis_timeout=float("nan"))
    with pytest.raises(ConfigError, match="socket_timeout"):
        Settings.resolve({}, redis_url="redis://h/?socket_timeout=never")
    # The URL's option is what every client of that URL uses (as redis-py does), machines too.
    assert RespClient("redis://h:1/0?socket_timeout=0.5", timeout=7).timeout == 0.5
    assert RespClient("redis://h:1/0").timeout == 10.0


def test_a_submit_to_a_host_that_never_answers_fails_naming_the_handshake(
    silent: SilentServer, secret: str
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{silent.port}"
    app = held_app(url, secret)
    with pytest.raises(StoreError) as err:
        bound(app, tasks.add).submit(1, 2)
    message = str(err.value)
    assert f"127.0.0.1:{silent.port}" in message
    assert "AUTH" in message or "a command" in message
    assert "sent no reply within 0.2 s" in message
    assert PASSWORD not in message
    assert silent.accepted >= 1


def test_the_submit_write_names_the_script_it_awaited(secret: str, redis_url: str) -> None:
    # Nothing before the silence awaits a reply (no handshake without a password): SHORT
    # holds, the replies of a loaded host notwithstanding.
    proxy = mute_at(redis_url, b"EVALSHA", lag=LATE)
    app = held_app(proxy.url, secret)
    try:
        with pytest.raises(StoreError, match=r"expected the reply to .*EVALSHA SUBMIT"):
            bound(app, tasks.add).submit(1, 2)
    finally:
        app.close()
        proxy.close()


def test_an_async_submit_to_a_host_that_never_answers_fails(
    silent: SilentServer, secret: str
) -> None:
    app = held_app(silent.url, secret)

    async def submit() -> None:
        try:
            await bound(app, tasks.add).submit_async(1, 2)
        finally:
            await app.store.aclose()

    with pytest.raises(StoreError) as err:
        asyncio.run(submit())
    assert f"127.0.0.1:{silent.port}" in str(err.value)
    assert "sent no reply within 0.2 s" in str(err.value)
    app.close()


def _job_on(proxy: MuteProxy, secret: str) -> tuple[App, balloons.Job[Any]]:
    """A job submitted through ``proxy`` (before it goes silent), whose machine never comes.
    The timeout holds every reply awaited, those before the silence too (the submit, the
    record read): a short one fails on a loaded host before the wait. The default, then; the
    proxy's replies come later than SHORT until the silence (a loaded host), which must not
    matter."""
    app = held_app(proxy.url, secret, redis_timeout=Settings.resolve({}).redis_timeout)
    return app, bound(app, tasks.add).submit(1, 2)


@pytest.mark.slow
def test_a_result_whose_host_goes_silent_mid_wait_fails_naming_the_wait(
    redis_url: str, secret: str
) -> None:
    proxy = mute_at(redis_url, b"BLMOVE", lag=LATE)
    app, job = _job_on(proxy, secret)
    try:
        with pytest.raises(StoreError) as err:
            job.result(timeout=30)  # the lagged replies before the wait take their time
        assert proxy.muted.is_set()
        message = str(err.value)
        assert "BLMOVE" in message
        assert f"127.0.0.1:{proxy.port}" in message
        # Within the block asked for and the timeout on top.
        assert re.search(r"sent no reply within [\d.]+ s", message)
    finally:
        app.close()
        proxy.close()


@pytest.mark.slow
def test_an_async_result_whose_host_goes_silent_mid_wait_fails_naming_the_wait(
    redis_url: str, secret: str
) -> None:
    proxy = mute_at(redis_url, b"BLMOVE", lag=LATE)
    app, job = _job_on(proxy, secret)

    async def wait() -> None:
        try:
            await job.result_async(timeout=30)
        finally:
            await app.store.aclose()

    try:
        with pytest.raises(StoreError) as err:
            asyncio.run(wait())
        assert proxy.muted.is_set()
        assert "BLMOVE" in str(err.value)
        assert job.id in str(err.value)
        assert f"127.0.0.1:{proxy.port}" in str(err.value)
    finally:
        app.close()
        proxy.close()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["wait", "result"])
def test_the_cli_ends_when_its_host_goes_silent_mid_wait(
    redis_url: str, secret: str, command: str
) -> None:
    # The timeout holds every reply the CLI awaits, those before the silence too: a short one
    # fails a CLI on a loaded host before it ever waits. The default, then, and replies that
    # come later than SHORT until the silence (a loaded host), which must not matter.
    timeout = Settings.resolve({}).redis_timeout
    proxy = mute_at(redis_url, b"BLMOVE", lag=LATE)
    app, job = _job_on(proxy, secret)
    try:
        env = {
            "BALLOONS_REDIS_URL": proxy.url,
            "BALLOONS_SECRET": secret,
            "BALLOONS_REDIS_TIMEOUT": str(timeout),
        }
        ran = run_cli(command, job.id, "--timeout", "30", env=env)
        assert proxy.muted.is_set(), ran  # it got as far as the wait
        assert ran.code == 5, ran  # Redis unreachable
        assert "BLMOVE" in ran.err
        assert f"127.0.0.1:{proxy.port}" in ran.err
    finally:
        app.close()
        proxy.close()


@pytest.mark.machines
def test_a_machine_whose_host_goes_silent_ends(redis_url: str, secret: str) -> None:
    """The machine runs its job, waits for the next one (BLPOP), and its host goes silent
    there: it gives up and exits, and its slot is left to its lease."""
    app = App(redis_url=redis_url, secret=secret, backend=HoldBackend())
    app.pool("default", idle_timeout=1)
    job = bound(app, tasks.add).submit(2, 3)
    (spec,) = app.backend.specs  # type: ignore[attr-defined]
    proxy = mute_at(redis_url, b"BLPOP")
    try:
        url = f"{proxy.url}/0?socket_timeout={SHORT}"
        out = run_worker(spec.env, url, secret)
        assert proxy.muted.is_set()
        assert job.result(timeout=5) == 5
        assert out.returncode == EXIT_STORE, out.stderr
        assert "BLPOP" in out.stderr  # what it waited for when the host went silent
        assert "EVALSHA TAKE" in out.stderr  # and what it asked for after
        assert f"127.0.0.1:{proxy.port}" in out.stderr
    finally:
        app.close()
        proxy.close()


def test_keepalive_is_on_for_every_client_connection(redis_url: str, secret: str) -> None:
    import socket

    proxy = mute_at(redis_url, b"never sent")
    app = held_app(proxy.url, secret)
    try:
        job = bound(app, tasks.add).submit(1, 2)
        job.status()
        assert job.app.store.wait_record(job._keys, 0.01) is None
        clients = [*app.store._idle, *app.store._waiting]
        assert clients
        for client in clients:
            assert client._sock is not None
            assert client._sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        pool = app.store.redis.connection_pool
        conn = pool.get_connection()
        try:
            assert conn._sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        finally:
            pool.release(conn)
    finally:
        app.close()
        proxy.close()


@pytest.mark.parametrize("spin", [0.0, 200e-6])
def test_a_silent_host_ends_a_read_whether_the_client_polls_or_sleeps(
    silent: SilentServer, spin: float
) -> None:
    client = RespClient(silent.url, timeout=SHORT, spin=spin)
    try:
        with pytest.raises(StoreError, match=r"sent no reply within 0\.2 s: .*PING"):
            client.execute("PING")
    finally:
        client.close()


@pytest.mark.parametrize("spin", [0.0, 200e-6])
@pytest.mark.parametrize("url", ["redis_url", "tcp"])
def test_a_blocking_wait_may_outlast_the_timeout_and_the_next_read_is_bounded_again(
    redis_url: str, spin: float, url: str
) -> None:
    """The kernel bounds a read (``SO_RCVTIMEO``, no ``poll`` before each read): a blocking
    command's reply may take its block time on top of the timeout, then the bound is the
    timeout again."""
    import socket
    import struct

    proxy = mute_at(redis_url, b"never sent") if url == "tcp" else None
    timeout = 0.5  # the wait below outlasts it; its reply is late by less than that
    client = RespClient(proxy.url if proxy else redis_url, timeout=timeout, spin=spin)
    try:
        assert client.execute("BLPOP", "nothing-here", "1", block=1.0) is None
        assert client.execute("PING") == b"PONG"
        sock = client._sock
        assert sock is not None and sock.gettimeout() is None  # Python's timeout polls first
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("ll"))
        assert struct.unpack("ll", raw) == (0, int(timeout * 1e6))
    finally:
        client.close()
        if proxy:
            proxy.close()
