"""The submit write: one round trip on balloons' own connections, robust to what a server
and a process can do to them (script cache flushed, connection closed, fork)."""

from __future__ import annotations

import os
import threading

import redis

import balloons
from balloons import JobStatus
from balloons.store.keys import JobKeys
from balloons.store.writes import Store
from tests import tasks
from tests.waiting import wait_for


def _submit(app: balloons.App) -> JobKeys:
    task = tasks.add
    jk, req = app._submit_args(task, task.opts, (1, 2), {})
    app.store.submit(jk, req)  # stored and given a slot; no machine is launched here
    return jk


def _fresh_app(redis_url: str, secret: str) -> balloons.App:
    return balloons.App(redis_url=redis_url, secret=secret, record_ttl=60)


def test_submit_stores_the_record_and_the_pool(redis_url: str, secret: str, r: redis.Redis) -> None:
    app = _fresh_app(redis_url, secret)
    jk = _submit(app)
    assert app.store.status(jk) is JobStatus.STARTING
    assert r.sismember("balloons:pools", "default")
    assert r.ttl(jk.job) == 60
    app.close()


def test_a_pool_is_listed_once_per_period_and_again_when_redis_lost_it(
    redis_url: str, secret: str, r: redis.Redis
) -> None:
    app = _fresh_app(redis_url, secret)
    r.config_resetstat()
    for _ in range(20):
        _submit(app)
    assert r.info("commandstats")["cmdstat_sadd"]["calls"] == 1  # not one per job
    assert r.sismember("balloons:pools", "default")
    r.flushall()  # a Redis that lost its data: the next submit lists the pool again
    _submit(app)
    assert r.smembers("balloons:pools") == {b"default"}
    app.close()


def test_submit_survives_a_flushed_script_cache(
    redis_url: str, secret: str, r: redis.Redis
) -> None:
    app = _fresh_app(redis_url, secret)
    _submit(app)
    r.script_flush()
    jk = _submit(app)  # EVALSHA answers NOSCRIPT: the script is sent once more
    assert app.store.status(jk) is JobStatus.STARTING
    app.close()


def test_submit_reconnects_when_the_server_closed_the_connection(
    redis_url: str, secret: str, r: redis.Redis
) -> None:
    app = _fresh_app(redis_url, secret)
    _submit(app)
    killed = r.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    jk = _submit(app)
    assert app.store.status(jk) is JobStatus.STARTING
    app.close()


def test_concurrent_submits_each_get_a_connection(redis_url: str, secret: str) -> None:
    app = _fresh_app(redis_url, secret)
    ids: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                ids.append(_submit(app).job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 200
    statuses = [app.store.status(JobKeys.of("balloons", i)) for i in ids]
    # Nothing is launched here: the pool's cap of slots went to the first jobs, the rest queue.
    assert statuses.count(JobStatus.STARTING) == app.get_pool("default").max_machines
    assert set(statuses) == {JobStatus.STARTING, JobStatus.QUEUED}
    app.close()


def test_threads_first_using_the_store_share_one_client(redis_url: str, r: redis.Redis) -> None:
    # Each thread's first use builds the redis-py client at once; a second client built beside
    # it and then dropped would close its pool, cutting a pipeline still waiting on it.
    store = Store(redis_url, "balloons")
    n = 8
    start = threading.Barrier(n)
    pools: list[object] = []
    got: list[object] = []
    errors: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            pipe = store.redis.pipeline(transaction=False)
            pools.append(pipe.connection_pool)
            pipe.blpop("shared-client", 60)
            got.extend(pipe.execute())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    wait_for(lambda: r.info("clients")["blocked_clients"] + len(errors) == n)
    r.rpush("shared-client", *range(n))
    for t in threads:
        t.join()
    store.close()
    assert not errors
    assert len(got) == n
    assert len({id(pool) for pool in pools}) == 1


def test_a_forked_child_submits_on_its_own_connection(redis_url: str, secret: str) -> None:
    app = _fresh_app(redis_url, secret)
    _submit(app)  # leaves an idle connection the child inherits
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        try:
            jk = _submit(app)
            os._exit(0 if Store(redis_url, "balloons").status(jk) is JobStatus.STARTING else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    jk = _submit(app)  # the parent's connection was not disturbed by the child
    assert app.store.status(jk) is JobStatus.STARTING
    app.close()


def test_submit_works_on_file_descriptors_above_1023(redis_url: str, secret: str) -> None:
    # A busy server process holds many files; the submit connection then gets a high number.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    null = os.open(os.devnull, os.O_RDONLY)
    held = [os.dup(null) for _ in range(1100)]
    try:
        app = _fresh_app(redis_url, secret)
        _submit(app)
        [client] = app.store._idle
        assert client._sock is not None and client._sock.fileno() > 1023
        jk = _submit(app)  # reuses the idle connection: its check must not refuse the number
        assert app.store.status(jk) is JobStatus.STARTING
        app.close()
    finally:
        for fd in (*held, null):
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class _SlowPong:
    """A RESP server on 127.0.0.1 that answers every command with ``+PONG`` after
    ``delay`` seconds: a stand-in for a distant or busy server."""

    def __init__(self) -> None:
        import socket

        self.delay = 0.0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import time

        conn, _ = self.sock.accept()
        with conn:
            while data := conn.recv(65536):
                for _ in range(data.count(b"*")):
                    time.sleep(self.delay)
                    conn.sendall(b"+PONG\r\n")


def test_a_submit_connection_polls_for_its_reply_only_while_replies_come_fast() -> None:
    from balloons.store.resp import RespClient

    server = _SlowPong()
    client = RespClient(f"redis://127.0.0.1:{server.port}", timeout=None, spin=0.002)
    assert client.spinning
    server.delay = 0.02  # replies take ten times the spin
    for _ in range(3):
        assert client.execute("PING") == b"PONG"
    assert not client.spinning
    server.delay = 0.0  # and fast again: the client spins again once replies come fast (on
    # a machine busy enough to delay this process's own threads by milliseconds, not at once)
    wait_for(
        lambda: client.execute("PING") == b"PONG" and client.spinning,
        "the client to spin again once replies come fast",
        interval=0,
    )
    client.close()
    server.sock.close()


def test_only_plain_connections_spin(redis_url: str, secret: str) -> None:
    from balloons.store.resp import RespClient
    from balloons.store.writes import SUBMIT_SPIN_S

    assert RespClient(redis_url, timeout=None, spin=0.001).spinning
    # With a timeout too: its wait polls the socket for the time left once spinning ends.
    assert RespClient(redis_url, timeout=5.0, spin=0.001).spinning
    assert not RespClient("rediss://127.0.0.1:1", timeout=None, spin=0.001).spinning
    app = _fresh_app(redis_url, secret)
    _submit(app)
    (client,) = app.store._idle
    assert client.spin == SUBMIT_SPIN_S
    app.close()


def test_a_wait_on_a_result_reads_the_record_in_the_same_round_trip(
    redis_url: str, r: redis.Redis
) -> None:
    """The ``HGETALL`` behind the ``BLMOVE``: None while nothing wakes the waiter, the record
    once the done token is there (for every waiter: it stays), on one connection reused."""
    store = Store(redis_url, "balloons")
    jk = JobKeys.of("balloons", "default.01jd3x9k2m8vq4t7w0c5r6y1zh")
    r.hset(jk.job, mapping={"status": "RUNNING"})
    assert store.wait_record(jk, 0.05) is None
    r.hset(jk.job, mapping={"status": "SUCCEEDED", "result": b"\xff\x00"})
    r.lpush(jk.done, "1")
    for _ in range(2):
        assert store.wait_record(jk, 1.0) == {"status": b"SUCCEEDED", "result": b"\xff\x00"}
    assert len(store._waiting) == 1
    store.close()
    assert store._waiting == []
