"""Cluster throughput: aggregate submits/s into many pools spread over a 3-node Valkey
Cluster, against a single Valkey, in the same run.

Two loads, each from ``--clients`` processes given one node's ``redis://`` URL, round-robin
over their share of the pools (``--pools`` per node, their hash slots on each of the three
nodes; the same names on the single server):

* ``task.submit()``: the whole client path (a backend whose ``launch`` returns at once, as in
  ``submit_throughput.py``), one submit at a time per process.
* ``SUBMIT writes``: the write balloons sends for a submit (``EVALSHA SUBMIT`` with its keys
  and arguments, built by the store beforehand), pipelined 64 at a time to the node of each
  pool: what the servers absorb when submitting processes are many and elsewhere.

A round starts every process at once and ends when the last is done: jobs/s is all the jobs
over that time. The targets take turns round by round, so that machine noise hits them alike.
Each server's own CPU time (``INFO cpu``) is read around the rounds.

    .venv/bin/python bench/cluster_throughput.py [--clients 3] [--n 3000] [--pools 8]
        [--rounds 3] [--loads submit,writes]

A cluster adds servers: it pays where one server's core is the limit. On a machine with few
cores the servers share them with the clients; with ``task.submit()`` the clients (Python,
several times the server's time per job) are the limit first.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, SECRET, ManualBackend, header, table, valkey_server

sys.path.insert(0, str(REPO_ROOT))
from tests.cluster import ValkeyCluster, pools_on_each_node


def client(
    url: str, pools: list[str], n: int, ready: Any, go: Any, results: Any, state: str
) -> None:
    """One submitting process: warm up on each pool, wait for the start, submit ``n`` jobs
    round-robin over ``pools``, report (jobs, seconds)."""
    import _balloons_tasks

    import balloons
    from balloons.pools import MAX_MACHINES

    app = balloons.App(
        redis_url=url,
        secret=SECRET,
        backend=ManualBackend(keep_specs=False),
        state_dir=state,
    )
    noop = app.task(timeout=60)(_balloons_tasks.noop.fn)
    tasks = []
    for p in pools:
        app.pool(p, max_machines=MAX_MACHINES)  # every submit takes a new slot: launch path
        tasks.append(noop.options(pool=p))
    for t in tasks:  # connections made, scripts cached, the cluster's routes known
        t.submit()
    ready.put(os.getpid())
    go.wait()
    t0 = time.perf_counter()
    k = len(tasks)
    for i in range(n):
        tasks[i % k].submit()
    results.put((n, time.perf_counter() - t0))
    app.close()


def writer(
    url: str, pools: list[str], n: int, ready: Any, go: Any, results: Any, state: str
) -> None:
    """One process replaying SUBMIT writes: ``n`` of them built by the store beforehand,
    round-robin over ``pools``, each to its pool's node, 64 in flight per node."""
    import hashlib
    import socket

    import _balloons_tasks

    import balloons
    from balloons.pools import MAX_MACHINES
    from balloons.store import lua
    from balloons.store.cluster import hash_slot
    from balloons.store.resp import RespError

    app = balloons.App(
        redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state
    )
    noop = app.task(timeout=60)(_balloons_tasks.noop.fn)
    tasks = []
    for p in pools:
        app.pool(p, max_machines=MAX_MACHINES)
        tasks.append(noop.options(pool=p))
    sha = hashlib.sha1(lua.SUBMIT.encode()).hexdigest()
    # Where each slot is served: this server, or the cluster's node for it.
    host, port = url.removeprefix("redis://").split(":")
    with contextlib.closing(socket.create_connection((host, int(port)))) as probe:
        probe.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n")
        rows = _read(probe, 1)[0]
    ranges = (
        [(0, 16383, (host, int(port)))]
        if isinstance(rows, RespError)
        else [(r[0], r[1], (r[2][0].decode(), int(r[2][1]))) for r in rows]
    )
    writes: dict[tuple[str, int], list[bytes]] = {}
    for i in range(n):
        t = tasks[i % len(tasks)]
        jk, req = app._submit_args(t, t.opts, (), {})
        keys, argv = app.store._submit_cmd(jk, req)
        slot = hash_slot(keys[0])
        node = next(addr for first, last, addr in ranges if first <= slot <= last)
        writes.setdefault(node, []).append(_encode(["EVALSHA", sha, len(keys), *keys, *argv]))
    socks = {}
    for node in writes:
        sock = socket.create_connection(node)
        sock.sendall(_encode(["SCRIPT", "LOAD", lua.SUBMIT]))
        _read(sock, 1)
        socks[node] = sock
    ready.put(os.getpid())
    go.wait()
    t0 = time.perf_counter()
    pending = {node: list(reversed(cmds)) for node, cmds in writes.items()}
    while pending:
        batch = {
            node: [cmds.pop() for _ in range(min(64, len(cmds)))] for node, cmds in pending.items()
        }
        for node, cmds in batch.items():
            socks[node].sendall(b"".join(cmds))
        for node, cmds in batch.items():
            for reply in _read(socks[node], len(cmds)):
                assert not isinstance(reply, RespError), reply
        pending = {node: cmds for node, cmds in pending.items() if cmds}
    results.put((n, time.perf_counter() - t0))
    for sock in socks.values():
        sock.close()
    app.close()


def _encode(cmd: list[Any]) -> bytes:
    out = [b"*%d\r\n" % len(cmd)]
    for arg in cmd:
        b = arg if isinstance(arg, bytes) else str(arg).encode()
        out += (b"$%d\r\n" % len(b), b, b"\r\n")
    return b"".join(out)


def _read(sock: Any, n: int) -> list[Any]:
    from balloons.store.resp import _Incomplete, _parse

    buf, pos, out = b"", 0, []
    while len(out) < n:
        try:
            reply, pos = _parse(buf, pos)
            out.append(reply)
        except (_Incomplete, IndexError):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise EOFError("server closed the connection") from None
            buf = buf[pos:] + chunk
            pos = 0
    return out


def server_cpu(ports: list[int]) -> dict[int, float]:
    from redis import Redis

    out = {}
    for port in ports:
        with Redis(port=port) as r:
            info = r.info("cpu")
            out[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return out


LOADS = {"submit": ("task.submit()", client), "writes": ("SUBMIT writes", writer)}


def one_round(
    load: str, url: str, shares: list[list[str]], n: int, state: str
) -> tuple[int, float]:
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    target = LOADS[load][1]
    procs = [
        ctx.Process(target=target, args=(url, share, n, ready, go, results, state))
        for share in shares
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    t0 = time.perf_counter()
    go.set()
    done = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    return sum(jobs for jobs, _ in done), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=3, help="submitting processes")
    ap.add_argument("--n", type=int, default=3000, help="jobs per process per round")
    ap.add_argument("--pools", type=int, default=8, help="pools per cluster node")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", default="submit,writes", help="submit, writes or both")
    args = ap.parse_args()
    loads = [x for x in args.loads.split(",") if x]

    print(header("cluster throughput: submits into many pools, 3-node cluster vs one server"))
    print(
        f"{args.clients} processes x {args.n} jobs per round, {args.pools} pools per node "
        f"({3 * args.pools} pools), {args.rounds} rounds per load and target; "
        f"{os.cpu_count()} CPUs shared by the submitting processes and every server\n"
    )
    root = Path(tempfile.mkdtemp(prefix="balloons-bench-cluster-"))
    state = str(root / "state")
    cluster = ValkeyCluster(root / "cluster").start()
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], dict[int, float]] = {}
    jobs_total: dict[tuple[str, str], int] = {}
    try:
        with valkey_server() as single_url:
            pools = pools_on_each_node(cluster, per_node=args.pools)
            shares = [pools[i :: args.clients] for i in range(args.clients)]
            single_port = int(single_url.rsplit(":", 1)[1])
            targets = {
                "single Valkey": (single_url, [single_port]),
                "3-node cluster": (cluster.url, [n.port for n in cluster.primaries]),
            }
            for _ in range(args.rounds):
                for load in loads:
                    for name, (url, ports) in targets.items():
                        before = server_cpu(ports)
                        jobs, wall = one_round(load, url, shares, args.n, state)
                        after = server_cpu(ports)
                        key = (load, name)
                        rates.setdefault(key, []).append(jobs / wall)
                        jobs_total[key] = jobs_total.get(key, 0) + jobs
                        used = cpu.setdefault(key, {})
                        for port in ports:
                            used[port] = used.get(port, 0.0) + after[port] - before[port]
                        flush(ports)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

    rows = []
    for (load, name), xs in rates.items():
        base = statistics.median(rates[(load, "single Valkey")])
        per_node = cpu[(load, name)]
        total_cpu = sum(per_node.values())
        spread = " / ".join(f"{100 * v / total_cpu:.0f}%" for v in per_node.values())
        rows.append(
            [
                LOADS[load][0],
                name,
                f"{statistics.median(xs):,.0f}",
                f"{min(xs):,.0f}-{max(xs):,.0f}",
                f"{statistics.median(xs) / base:.2f}x",
                f"{1e6 * total_cpu / jobs_total[(load, name)]:.1f}",
                spread,
            ]
        )
    headers = ["load", "target", "jobs/s (median)", "range", "/ single", "server us/job"]
    print(table([*headers, "server CPU per node"], rows))
    for load in loads:
        ratio = statistics.median(rates[(load, "3-node cluster")]) / statistics.median(
            rates[(load, "single Valkey")]
        )
        verdict = "met" if ratio >= 2 else "below target"
        what = f"{LOADS[load][0]}: 3-node cluster / single Valkey"
        print(f"{what}: {ratio:.2f}x (target >= 2.00x: {verdict})")
    return 0


def flush(ports: list[int]) -> None:
    """Empty the servers between rounds, so every round starts alike."""
    from redis import Redis

    for port in ports:
        with Redis(port=port) as r:
            r.flushall()


if __name__ == "__main__":
    sys.exit(main())
