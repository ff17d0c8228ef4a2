"""Redis over TLS: what a ``rediss://`` URL costs a submit and a cold job, against plain TCP.

One private Valkey on TCP. In front of it, on loopback, a TLS terminator (``tests/tlsterm.py``:
Python's ``ssl``, a throwaway CA; TLS 1.3, and TLS 1.2 for the round trips) and, as a control,
the same forwarder without TLS, so that what the forwarding costs (two Python threads' wake-ups
per round trip, which a real TLS endpoint does not pay) is told apart from what TLS costs.

1. Loopback, the same run, alternating: submit throughput (a backend that launches nothing,
   jobs queued: the submit path alone); the first submit of a fresh app (connect, the TLS
   handshake, the submit); a cold job (submit -> result of a no-op on a fresh local machine,
   whose worker connects over the same URL). Connections are counted at Valkey (``INFO stats``
   ``total_connections_received``): a submit must reuse its connection over TLS as over TCP.
2. Round trips: a forwarder that delays every chunk by ``--delay`` ms each way (a round trip
   of twice that) in front of each endpoint. A fresh client's connect and first command, and
   then a command on its open connection, in round trips (elapsed / round trip, rounded):
   TLS 1.3 may add one per connection (its handshake), TLS 1.2 two, and none per command.

    .venv/bin/python bench/tls.py [--n 3000] [--fresh 60] [--cold 20] [--delay 10]
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _balloons_tasks
from _common import (
    REPO_ROOT,
    SECRET,
    ManualBackend,
    header,
    ms,
    p90,
    shutdown_local,
    table,
    temp_state_dir,
    valkey_server,
)
from cold_job import balloons_runner

import balloons
from balloons.store.resp import RespClient

sys.path.insert(0, str(REPO_ROOT))
import trustme
from tests.tlsterm import Terminator


class DelayLink:
    """A TCP forwarder that hands each chunk on ``delay`` seconds after it came, each way: a
    link with a round trip of ``2 * delay`` (chunks keep their order; a flight costs one
    delay however many chunks it spans)."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [down, up]
            for a, b in ((down, up), (up, down)):
                chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(a, chunks), daemon=True).start()
                threading.Thread(target=self._write, args=(b, chunks), daemon=True).start()

    def _read(self, sock: socket.socket, chunks: queue.Queue[tuple[float, bytes]]) -> None:
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                chunks.put((time.perf_counter() + self.delay, data))
        chunks.put((0.0, b""))

    def _write(self, sock: socket.socket, chunks: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            due, data = chunks.get()
            if not data:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                return
            time.sleep(max(0.0, due - time.perf_counter()))
            try:
                sock.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def endpoints(valkey: str, ca_dir: Path) -> Iterator[dict[str, tuple[str, int, str]]]:
    """label -> (host, port, URL): Valkey itself, the plain forwarder, TLS 1.3 and TLS 1.2."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = ca_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = int(valkey.rsplit(":", 1)[1])
    upstream = ("127.0.0.1", port)
    terms = {
        "forwarder, no TLS": Terminator(upstream, None),
        "TLS 1.3": Terminator(upstream, cert, ssl.TLSVersion.TLSv1_3),
        "TLS 1.2": Terminator(upstream, cert, ssl.TLSVersion.TLSv1_2),
    }
    out = {"TCP": ("127.0.0.1", port, f"redis://127.0.0.1:{port}/0")}
    for label, term in terms.items():
        if label.startswith("TLS"):
            url = f"rediss://localhost:{term.port}/0?ssl_ca_certs={ca_file}"
        else:
            url = f"redis://127.0.0.1:{term.port}/0"
        out[label] = ("127.0.0.1", term.port, url)
    try:
        yield out
    finally:
        for term in terms.values():
            term.close()


def connections(valkey: str) -> Callable[[], int]:
    """Connections Valkey has accepted so far (less the one asking)."""
    from redis import Redis

    r = Redis.from_url(valkey)
    return lambda: int(r.info("stats")["total_connections_received"])


def submit_batch(url: str, state: Path, label: str) -> Callable[[int], float]:
    pool = "tls-bench-" + "".join(c for c in label.lower() if c.isalnum())
    app = balloons.App(
        redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state
    )
    app.pool(pool, max_machines=1)
    task = app.task(timeout=60, pool=pool)(_balloons_tasks.noop.fn)
    task.submit()  # takes the pool's one slot: every later job is queued, nothing launched

    def batch(k: int) -> float:
        submit = task.submit
        t0 = time.perf_counter()
        for _ in range(k):
            submit()
        return time.perf_counter() - t0

    return batch


def first_submit(url: str, state: Path, label: str) -> float:
    """A fresh app's first submit: its connection made (TLS handshake included), then the
    submit's round trip."""
    pool = "tls-first-" + "".join(c for c in label.lower() if c.isalnum())
    app = balloons.App(
        redis_url=url, secret=SECRET, backend=ManualBackend(keep_specs=False), state_dir=state
    )
    app.pool(pool, max_machines=1)
    task = app.task(timeout=60, pool=pool)(_balloons_tasks.noop.fn)
    t0 = time.perf_counter()
    task.submit()
    dt = time.perf_counter() - t0
    app.close()
    return dt


def loopback(
    args: argparse.Namespace, valkey: str, state: Path, eps: dict[str, tuple[str, int, str]]
) -> None:
    labels = ["TCP", "forwarder, no TLS", "TLS 1.3"]
    count = connections(valkey)
    batches = {label: submit_batch(eps[label][2], state, label) for label in labels}
    for batch in batches.values():
        batch(args.warmup)
    per_job: dict[str, list[float]] = {label: [] for label in labels}
    conns: dict[str, int] = dict.fromkeys(labels, 0)
    done = 0
    while done < args.n:
        k = min(args.batch, args.n - done)
        for label, batch in batches.items():
            before = count()
            per_job[label].append(batch(k) / k)
            conns[label] += count() - before
        done += k
    fresh: dict[str, list[float]] = {label: [] for label in labels}
    fresh_conns: dict[str, int] = dict.fromkeys(labels, 0)
    for _ in range(args.fresh):
        for label in labels:
            before = count()
            fresh[label].append(first_submit(eps[label][2], state, label))
            fresh_conns[label] += count() - before
    cold: dict[str, list[float]] = {label: [] for label in labels}
    cold_conns: dict[str, int] = dict.fromkeys(labels, 0)
    backends = []
    try:
        runners = {}
        for i, label in enumerate(labels):
            backend = balloons.LocalBackend(start="fork")
            backends.append(backend)
            app = balloons.App(
                redis_url=eps[label][2],
                secret=SECRET,
                backend=backend,
                state_dir=state / f"cold{i}",
                namespace=f"cold{i}",
            )
            runners[label] = balloons_runner(app)
            runners[label]()  # starts the fork server
        for _ in range(3):
            for run in runners.values():
                run()
        for _ in range(args.cold):
            for label, run in runners.items():
                before = count()
                cold[label].append(run())
                cold_conns[label] += count() - before
    finally:
        for backend in backends:
            shutdown_local(backend)

    base = {label: statistics.median(xs) for label, xs in per_job.items()}
    rows = []
    for label in labels:
        rows.append(
            [
                label,
                f"{1 / base[label]:,.0f}",
                f"{base[label] * 1e6:.1f}",
                f"{(base[label] - base['TCP']) * 1e6:+.1f}",
                f"{conns[label]}",
                ms(statistics.median(fresh[label])),
                ms(p90(fresh[label])),
                f"{fresh_conns[label] / args.fresh:.1f}",
                ms(statistics.median(cold[label])),
                ms(p90(cold[label])),
                f"{cold_conns[label] / args.cold:.1f}",
            ]
        )
    print(
        f"\n## Loopback: {args.n} submits per endpoint (median batch of {args.batch}), "
        f"{args.fresh} fresh apps' first submits, {args.cold} cold jobs\n"
    )
    print(
        table(
            [
                "endpoint",
                "submits/s",
                "us/submit",
                "vs TCP us",
                f"conns in {args.n} submits",
                "first submit ms",
                "p90",
                "conns/fresh app",
                "cold job ms",
                "p90",
                "conns/cold job",
            ],
            rows,
        )
    )


def round_trips(args: argparse.Namespace, eps: dict[str, tuple[str, int, str]]) -> None:
    rtt = 2 * args.delay / 1000
    rows = []
    links = []
    try:
        for label in ["TCP", "TLS 1.3", "TLS 1.2"]:
            host, port, url = eps[label]
            link = DelayLink((host, port), args.delay / 1000)
            links.append(link)
            delayed = url.replace(f":{port}/", f":{link.port}/")
            firsts, agains = [], []
            for _ in range(args.rt_n):
                client = RespClient(delayed)
                t0 = time.perf_counter()
                client.execute("PING")
                t1 = time.perf_counter()
                client.execute("PING")
                t2 = time.perf_counter()
                client.close()
                firsts.append(t1 - t0)
                agains.append(t2 - t1)
            first, again = statistics.median(firsts), statistics.median(agains)
            rows.append([label, ms(first), f"{first / rtt:.2f}", ms(again), f"{again / rtt:.2f}"])
    finally:
        for link in links:
            link.close()
    print(
        f"\n## Round trips: a link with a {rtt * 1000:.0f} ms round trip, "
        f"median of {args.rt_n} fresh clients (balloons' RESP client: submit path and worker)\n"
    )
    print(
        table(
            ["endpoint", "connect + first PING ms", "round trips", "next PING ms", "round trips"],
            rows,
        )
    )


def contexts(ca_file: Path, n: int = 5) -> None:
    """What building a client's TLS context costs (once per process and set of options): with
    the system's CAs (no ``ssl_ca_certs``: Upstash and most managed Redis) and with one CA."""
    rows = []
    for label, cafile in (("system CAs", None), ("ssl_ca_certs (one CA)", str(ca_file))):
        xs = []
        for _ in range(n):
            t0 = time.perf_counter()
            ssl.create_default_context(cafile=cafile)
            xs.append(time.perf_counter() - t0)
        rows.append([label, ms(statistics.median(xs))])
    print(f"\n## A client's TLS context, built once per process (median of {n})\n")
    print(table(["trust", "build ms"], rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="measured submits per endpoint")
    ap.add_argument("--batch", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--fresh", type=int, default=60, help="fresh apps' first submits")
    ap.add_argument("--cold", type=int, default=20, help="cold jobs per endpoint")
    ap.add_argument("--delay", type=float, default=10.0, help="ms each way on the delayed link")
    ap.add_argument("--rt-n", type=int, default=15, help="fresh clients on the delayed link")
    args = ap.parse_args()
    print(header("Redis over TLS: submits, fresh connections and cold jobs vs plain TCP"))
    print(f"{ssl.OPENSSL_VERSION}; terminator: Python ssl on loopback")
    with (
        valkey_server() as valkey,
        temp_state_dir() as state,
        tempfile.TemporaryDirectory() as d,
        endpoints(valkey, Path(d)) as eps,
    ):
        loopback(args, valkey, state, eps)
        round_trips(args, eps)
        contexts(Path(d) / "ca.pem")
    return 0


if __name__ == "__main__":
    sys.exit(main())
