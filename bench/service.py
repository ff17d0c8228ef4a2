"""The job service (``balloons serve``, one uvicorn process) against the library, same run.

* submit throughput: ``POST /v1/jobs`` over keep-alive connections (a few client threads)
  against ``task.submit()`` in this process; both store a delayed job (no machine launched);
* long-poll wake latency: ``GET /v1/jobs/{id}?wait=30`` and ``job.result()`` waiting on the
  same job at once, each measured from the job's end as recorded (same host, same clock);
* cold start: ``balloons serve`` started to its first ``200`` (``/v1/health``), and to the
  first authenticated ``200`` (``/v1/tasks``); idle RSS after the runs.

Beside each wall-clock figure, the service process's own CPU time (from ``/proc``): per HTTP
submit, and spent up to the first ``200``. On a machine shared with other work these vary far
less than the wall-clock figures, which wait for a CPU.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common
from _common import SECRET, temp_state_dir, valkey_server

import balloons

TOKEN = "bench-service-token-" + "x" * 20
BODY = json.dumps({"task": "_service_app:noop", "delay": 3600}).encode()
HEADERS = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_env(url: str, state: Path) -> dict[str, str]:
    """The service process's environment: this Valkey, the state directory, the bench's
    signing key and admin token."""
    return {
        **os.environ,
        "BALLOONS_REDIS_URL": url,
        "BALLOONS_SECRET": SECRET,
        "BALLOONS_HOME": str(state),
        "BALLOONS_SERVICE_TOKEN": TOKEN,
    }


def start_service(
    env: dict[str, str], port: int
) -> tuple[subprocess.Popen[bytes], float, float, float]:
    """The service process, seconds from its start to the first 200 of /v1/health and of an
    authenticated /v1/tasks, and the CPU seconds it used up to the first."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "balloons.service",
            "-A",
            "_service_app",
            "--port",
            str(port),
            "--no-supervise",
        ],
        cwd=_common.BENCH_DIR,
        env=env,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first = None
    while first is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v1/health")
            if conn.getresponse().status == 200:
                first = time.perf_counter() - t0
                cpu = cpu_s(proc.pid)
            conn.close()
        except OSError:
            time.sleep(0.002)
        if proc.poll() is not None:
            raise SystemExit("the service exited at start")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/v1/tasks", headers=HEADERS)
    assert conn.getresponse().status == 200
    return proc, first, time.perf_counter() - t0, cpu


def http_submits(port: int, n: int, clients: int) -> float:
    """Jobs/s of n POSTs over ``clients`` keep-alive connections."""
    per = n // clients
    barrier = threading.Barrier(clients + 1)
    errors: list[int] = []

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v1/health")
        conn.getresponse().read()
        barrier.wait()
        for _ in range(per):
            conn.request("POST", "/v1/jobs", body=BODY, headers=HEADERS)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 201:
                errors.append(resp.status)
        conn.close()

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    assert not errors, errors[:5]
    return per * clients / took


def library_submits(app: balloons.App, n: int) -> float:
    from _service_app import noop

    task = app.task(pool="svc", timeout=60, name="noop")(noop.fn).options(delay=3600)
    task.submit()
    t0 = time.perf_counter()
    for _ in range(n):
        task.submit()
    return n / (time.perf_counter() - t0)


def wake_latency(app: balloons.App, port: int, n: int) -> tuple[list[float], list[float]]:
    """Per job: seconds from its recorded end to the long-poll's answer, and to
    ``job.result()``'s return, both waiting at once."""
    from _service_app import nap

    task = app.task(pool="svc", timeout=60, name="nap")(nap.fn)
    http_lat, lib_lat = [], []
    for _ in range(n):
        job = task.submit(0.3)
        got: dict[str, float] = {}

        t = threading.Thread(target=_poll, args=(port, job.id, got))
        t.start()
        job.result(timeout=60)
        got["lib"] = time.time()
        t.join()
        ended = job.info().finished_at or 0.0
        http_lat.append(got["http"] - ended)
        lib_lat.append(got["lib"] - ended)
    return http_lat, lib_lat


def _poll(port: int, job_id: str, got: dict[str, float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/v1/jobs/{job_id}?wait=30", headers=HEADERS)
    body = json.loads(conn.getresponse().read())
    got["http"] = time.time()
    assert body["state"] == "succeeded", body


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="submits per system")
    ap.add_argument("--clients", type=int, default=4, help="HTTP keep-alive connections")
    ap.add_argument("--polls", type=int, default=20, help="jobs for the wake latency")
    ap.add_argument("--starts", type=int, default=5, help="cold starts measured")
    args = ap.parse_args()
    print(_common.header("balloons serve against the library"))
    with valkey_server() as url, temp_state_dir() as state:
        env = service_env(url, state)
        starts, firsts, start_cpu = [], [], []
        for _ in range(args.starts):
            port = free_port()
            proc, first, authed, cpu = start_service(env, port)
            starts.append(first)
            firsts.append(authed)
            start_cpu.append(cpu)
            _common.stop_process_group(proc)
        port = free_port()
        proc, _, _, _ = start_service(env, port)
        try:
            app = balloons.App(redis_url=url, secret=SECRET, state_dir=state)
            app.pool("svc", max_machines=2, idle_timeout=30)
            rounds = []
            for _ in range(3):
                before = cpu_s(proc.pid)
                h = http_submits(port, args.n, args.clients)
                per_submit = (cpu_s(proc.pid) - before) / args.n
                lib = library_submits(app, args.n)
                rounds.append((h, lib, per_submit))
            http_lat, lib_lat = wake_latency(app, port, args.polls)
            rss = rss_kb(proc.pid)
        finally:
            _common.stop_process_group(proc)
            app.close()
    rows = [
        [f"round {i + 1}", f"{h:,.0f}", f"{lib:,.0f}", f"{h / lib:.2f}", f"{cpu * 1e6:,.0f}"]
        for i, (h, lib, cpu) in enumerate(rounds)
    ]
    heads = ["submit", "HTTP jobs/s", "library jobs/s", "HTTP/library", "service CPU µs/submit"]
    print(_common.table(heads, rows))
    med_h, med_l = statistics.median(http_lat), statistics.median(lib_lat)
    print(
        _common.table(
            ["wake after the job's end", "median", "p95"],
            [
                ["GET ?wait=", _common.ms(med_h), _common.ms(_common.p95(http_lat))],
                ["job.result()", _common.ms(med_l), _common.ms(_common.p95(lib_lat))],
                ["difference", _common.ms(med_h - med_l), ""],
            ],
        )
    )
    print(
        _common.table(
            ["cold start", "median", "max"],
            [
                [
                    "to the first 200 (/v1/health)",
                    _common.ms(statistics.median(starts)),
                    _common.ms(max(starts)),
                ],
                [
                    "to the first authenticated 200",
                    _common.ms(statistics.median(firsts)),
                    _common.ms(max(firsts)),
                ],
                [
                    "service CPU to the first 200",
                    _common.ms(statistics.median(start_cpu)),
                    _common.ms(max(start_cpu)),
                ],
            ],
        )
    )
    print(f"idle RSS after the runs: {rss / 1024:.1f} MiB; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
