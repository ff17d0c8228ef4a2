"""A passive command job (``sh -c true``) through the job service, from submit to result,
against the same job submitted by the library, same run.

* service: ``POST /v1/jobs`` with ``{"command": {"cmd": ["sh", "-c", "true"]}}``, then
  ``GET /v1/jobs/{id}?wait=30`` until it answers ``succeeded`` (one keep-alive connection);
* library: ``app.submit_command(["sh", "-c", "true"]).result()`` in this process.

Both on ``LocalBackend`` (a machine is a local process forked by the fork server, the command
a child process of it in a fresh temporary directory), on the same Valkey and state directory,
taking turns job by job (which goes first swaps every pair). Neither side runs a supervisor:
each submit launches its job's machine, as the library's does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time

import _common
from _common import SECRET, temp_state_dir, valkey_server
from service import HEADERS, free_port, service_env, start_service

import balloons

COMMAND = ["sh", "-c", "true"]
BODY = json.dumps({"command": {"cmd": COMMAND}, "pool": "cmd"}).encode()


def through_service(conn: http.client.HTTPConnection) -> float:
    """Seconds from the POST to the long-poll's ``succeeded``."""
    t0 = time.perf_counter()
    conn.request("POST", "/v1/jobs", body=BODY, headers=HEADERS)
    resp = conn.getresponse()
    job = json.loads(resp.read())
    assert resp.status == 201, (resp.status, job)
    while True:
        conn.request("GET", f"/v1/jobs/{job['id']}?wait=30", headers=HEADERS)
        resp = conn.getresponse()
        job = json.loads(resp.read())
        assert resp.status == 200, (resp.status, job)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
    assert job["state"] == "succeeded", job
    return time.perf_counter() - t0


def through_library(app: balloons.App) -> float:
    t0 = time.perf_counter()
    job = app.submit_command(COMMAND, pool="cmd")
    job.result(timeout=60)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="jobs per side")
    ap.add_argument("--warmup", type=int, default=3, help="jobs per side not counted")
    args = ap.parse_args()
    print(_common.header("a passive command job: the service against the library"))
    with valkey_server() as url, temp_state_dir() as state:
        env = service_env(url, state)
        port = free_port()
        proc, _, _, _ = start_service(env, port)
        app = balloons.App(redis_url=url, secret=SECRET, state_dir=state)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            svc, lib = [], []
            for i in range(args.warmup + args.n):
                pair = [through_service(conn), through_library(app)]
                if i % 2:  # the other order
                    pair = [through_library(app), through_service(conn)][::-1]
                if i >= args.warmup:
                    svc.append(pair[0])
                    lib.append(pair[1])
            conn.close()
        finally:
            _common.stop_process_group(proc)
            app.close()
    rows = [
        [name, _common.ms(statistics.median(xs)), _common.ms(_common.p95(xs))]
        for name, xs in (("service: POST + GET ?wait=", svc), ("library: submit_command", lib))
    ]
    print(_common.table(["sh -c true, submit to result", "median", "p95"], rows))
    ratio = statistics.median(svc) / statistics.median(lib)
    print(f"service / library: {ratio:.2f}x (n={args.n}); load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
