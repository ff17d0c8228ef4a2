"""Redis Cluster: hash slots, the RESP client's routes, redis-py's cluster client.

Any node's URL is enough. balloons' RESP client (:mod:`balloons.store.resp`: the worker, the submit
write) finds out at the first ``MOVED`` or ``ASK`` reply, and from then on sends each command
to the node that serves its key's hash slot (:class:`Routes`); redis-py's client is chosen
once per store (``INFO cluster``: :func:`redis_client`). A single server never redirects, so
it pays nothing for this, and the worker imports this module only on a cluster.
"""

from __future__ import annotations

from ..errors import ConfigError, StoreError
from .redisurl import mask_url
from .resp import Redirect, RespClient

TYPE_CHECKING = False  # set without importing typing, as on the worker's path
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

#: Hash slots of a cluster.
SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


_SLOT_OF: dict[bytes, int] = {}  # hash tag -> slot: every key of a pool has the same tag


def hash_slot(key: str | bytes) -> int:
    """The cluster hash slot of ``key``: CRC16 (XMODEM) of its hash tag (the part between
    the first ``{`` and the next ``}``, when not empty), else of the whole key, mod 16384.
    The one place balloons computes it."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    slot = _SLOT_OF.get(raw)
    if slot is None:
        crc = 0
        for b in raw:
            crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
        slot = crc & (SLOTS - 1)
        if len(_SLOT_OF) > 10_000:
            _SLOT_OF.clear()
        _SLOT_OF[raw] = slot
    return slot


#: Commands with no key: any node answers them.
_KEYLESS = frozenset(
    {"ASKING", "AUTH", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DBSIZE", "ECHO", "FLUSHALL",
     "FLUSHDB", "HELLO", "INFO", "PING", "READONLY", "ROLE", "SCRIPT", "SELECT", "TIME"}
)  # fmt: skip
#: A node's address; None: the URL's own (a unix socket, say).
Addr = tuple[str, int] | None
#: How many redirects one command follows before its last one is its reply.
MAX_REDIRECTS = 5


def key_of(cmd: Sequence[Any]) -> str | bytes | None:
    """The key that decides where a command of balloons' RESP client goes: a script's first
    key, else the first argument (every other command it sends has its key there)."""
    name = cmd[0].upper() if isinstance(cmd[0], str) else bytes(cmd[0]).decode().upper()
    if name in ("EVALSHA", "EVAL"):
        return cmd[3] if len(cmd) > 3 and int(cmd[2]) > 0 else None
    if len(cmd) < 2 or name in _KEYLESS:
        return None
    key = cmd[1]
    return key if isinstance(key, str | bytes) else str(key)


class Routes:
    """The commands of one :class:`~balloons.store.resp.RespClient` on a cluster: the node serving
    each hash slot (from ``CLUSTER SLOTS``, read again after a ``MOVED`` or a lost node) and
    one connection per node, each a copy of the client (same credentials, TLS and
    timeouts). A pipeline is split by node, written to each, and its replies put back in
    order. ``MOVED`` sends the command again to the node named (and marks the map stale);
    ``ASK`` sends it there once, after ``ASKING``."""

    def __init__(self, seed: RespClient) -> None:
        self.seed = seed
        self.slots: list[Addr] = [None] * SLOTS
        self.nodes: dict[Addr, RespClient] = {}
        self.stale = True  # read the map before the next write
        self._plan: list[tuple[RespClient, list[int]]] = []
        self._sent: list[list[Any]] = []

    # ----------------------------------------------------------------- nodes
    def node(self, addr: Addr) -> RespClient:
        """The client of node ``addr``, connected on first use."""
        client = self.nodes.get(addr)
        if client is None:
            client = self.nodes[addr] = _copy(self.seed, addr)
        return client

    def close(self) -> None:
        """Close every node's connection."""
        self._plan = []
        for client in self.nodes.values():
            client.close()

    def refresh(self) -> None:
        """Read the slot map from the first node that answers: those connected first, then
        the others known, the URL's last. A node that cannot tell (down, still loading) is
        skipped."""
        errors = []
        known = dict.fromkeys([*self.nodes, *self.slots, None])
        for addr in sorted(known, key=lambda a: a not in self.nodes or not self.nodes[a]._sock):
            client = self.node(addr)
            try:
                client._put([["CLUSTER", "SLOTS"]])
                (rows,) = client._get(1)
            except StoreError as exc:
                errors.append(str(exc))
                continue
            if not isinstance(rows, list) or not rows:
                errors.append(f"CLUSTER SLOTS answered {rows!r}")
                continue
            host = addr[0] if addr else _host_of(client)
            slots: list[Addr] = [None] * SLOTS
            for first, last, primary, *_ in rows:
                where = primary[0].decode() if isinstance(primary[0], bytes) else ""
                node: Addr = (where if where not in ("", "?") else host, int(primary[1]))
                slots[int(first) : int(last) + 1] = [node] * (int(last) - int(first) + 1)
            self.slots = slots
            self.stale = False
            return
        raise StoreError(
            f"no node of the Redis Cluster at {mask_url(self.seed.url)} told its slots: "
            + "; ".join(errors[-3:])
        )

    def addr_of(self, cmd: Sequence[Any]) -> Addr:
        """The node serving the key of ``cmd`` (``None``: a command with no key, sent to any
        node)."""
        key = key_of(cmd)
        if key is None:
            return None
        return self.slots[hash_slot(key)]

    # -------------------------------------------------------------- commands
    def send(self, commands: list[list[Any]]) -> None:
        """Send ``commands`` in one round, each to the node serving its key, reading the slot map
        first when it is stale (once more if a node is gone)."""
        for tries_left in (1, 0):
            if self.stale:
                self.refresh()
            groups: dict[Addr, list[int]] = {}
            for i, cmd in enumerate(commands):
                groups.setdefault(self.addr_of(cmd), []).append(i)
            plan = [(self.node(addr), idx) for addr, idx in groups.items()]
            try:
                for client, _ in plan:  # connected before anything is written: safe to retry
                    _reach(client)
                break
            except StoreError:
                self.stale = True  # a node gone (a failover?): read the map, try once more
                if not tries_left:
                    raise
        self._plan, self._sent = plan, commands
        try:
            for client, idx in plan:
                client._put([commands[i] for i in idx])
        except StoreError:
            self._lost(plan)
            raise

    def receive(self, n: int, block: float = 0.0) -> list[Any]:
        """Read the replies of the ``n`` commands sent, in their order, following a ``MOVED`` or
        ``ASK`` where a node answers one (``block``: see ``RespClient.pipeline``)."""
        plan, sent = self._plan, self._sent
        self._plan, self._sent = [], []
        replies: list[Any] = [None] * len(sent)
        try:
            for client, idx in plan:
                for i, reply in zip(idx, client._get(len(idx), block), strict=True):
                    replies[i] = reply
            return self.redo(sent, replies)
        except StoreError:
            self._lost(plan)
            raise

    def redo(self, sent: Sequence[list[Any]], replies: list[Any]) -> list[Any]:
        """``replies`` with each redirect replaced by the reply of the node it names."""
        for i, reply in enumerate(replies):
            for _ in range(MAX_REDIRECTS):
                if reply.__class__ is not Redirect:
                    break
                kind, slot, where = str(reply).split(" ", 2)
                host, _, port = where.rpartition(":")
                addr: Addr = (host.strip("[]") or _host_of(self.seed), int(port))
                client = self.node(addr)
                if kind == "MOVED":
                    self.slots[int(slot)] = addr
                    self.stale = True  # the slots moved: read the whole map before next time
                    client._put([sent[i]])
                    (reply,) = client._get(1)
                else:  # ASK: the slot is moving; this command only goes there
                    client._put([["ASKING"], sent[i]])
                    _, reply = client._get(2)
            replies[i] = reply
        return replies

    def _lost(self, plan: list[tuple[RespClient, list[int]]]) -> None:
        """A node failed mid-pipeline: drop the connections left with replies unread, and
        read the map again before the next write (a failover may have moved its slots)."""
        for client, _ in plan:
            client.close()
        self.stale = True


def _reach(client: RespClient) -> None:
    """Connect ``client`` unless it holds a connection the server has not closed."""
    sock = client._sock
    if sock is not None and client._idle_check.poll(0) and client._stale(sock):
        client.close()  # closed by the server (a restart, a node killed): start afresh
    if client._sock is None:
        client._connect()


def _host_of(client: RespClient) -> str:
    return client._host if client._scheme != "unix" else "127.0.0.1"


def _copy(seed: RespClient, addr: Addr) -> RespClient:
    """A connection to the node at ``addr`` with ``seed``'s settings (the seed itself, not
    connected, when ``addr`` is None)."""
    client = object.__new__(type(seed))
    client.__dict__.update(seed.__dict__)
    client._sock, client._buf, client._routes, client._sent = None, b"", None, ()
    # No polling for replies (resp.RespClient.spin): a cluster's nodes are other machines
    # as a rule, and where they are not, their wake-ups would be paid for in polling.
    client._wait_avg, client.spin = 0.0, 0.0
    if addr is not None:
        client._host, client._port = addr
        if client._scheme == "unix":
            client._scheme = "redis"
        client.url = f"{client._scheme}://{addr[0]}:{addr[1]}"
    return client


# ------------------------------------------------------------------- redis-py
def is_cluster(client: Any) -> bool:
    """Whether redis-py's ``client`` is connected to a cluster node (``INFO cluster``). A
    server that refuses ``INFO`` (an ACL, a proxy) is taken for a single server."""
    import redis

    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError:
        return False


def _options(
    url: str, connect_timeout: float, timeout: float, asyncio: bool = False
) -> dict[str, Any]:
    """redis-py's connection options: the timeouts, TCP keepalive over TCP (as the RESP
    client sets it), and retries on a lost connection only: a reply that timed out is not waited for
    again (nor a script run twice)."""
    import socket

    if asyncio:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry  # type: ignore[assignment]
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.exceptions import ConnectionError

    from .redisurl import KEEPALIVE

    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "retry": Retry(ExponentialWithJitterBackoff(), 3, supported_errors=(ConnectionError,)),
    }
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = {
            getattr(socket, k): v for k, v in KEEPALIVE.items() if hasattr(socket, k)
        }
    return options


def redis_client(url: str, connect_timeout: float, timeout: float) -> Any:
    """redis-py's client for ``url``: :class:`redis.cluster.RedisCluster` when the server is
    a cluster node (asked once, here), else :class:`redis.Redis`. Connection errors are
    redis-py's, as a first command's would be. A reply may take ``timeout`` seconds."""
    import redis

    client = redis.Redis.from_url(url, **_options(url, connect_timeout, timeout))
    if not is_cluster(client):
        return client
    client.close()
    _check_cluster_url(url)
    from redis.cluster import RedisCluster

    options = _options(url, connect_timeout, timeout)
    del options["retry"]  # the cluster client's own retries, which follow a failover
    return RedisCluster.from_url(url, **options)


def async_redis_client(
    url: str,
    connect_timeout: float,
    timeout: float,
    cluster: bool,
    max_connections: int | None = None,
) -> Any:
    """The asyncio counterpart of :func:`redis_client`, ``cluster`` as it found, opening at
    most ``max_connections`` (None: redis-py's default; a cluster's: per node)."""
    options = _options(url, connect_timeout, timeout, asyncio=True)
    if max_connections is not None:
        options["max_connections"] = max_connections
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        del options["retry"]
        return RedisCluster.from_url(url, **options)
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, **options)


def _check_cluster_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            f"{mask_url(url)} is a Redis Cluster node: reach a cluster by the redis:// or "
            "rediss:// URL of any of its nodes"
        )
