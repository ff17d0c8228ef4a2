"""What log capture costs a task: per printed line, per ``logging`` record, and per job.

    .venv/bin/python bench/log_capture.py [--lines 20000] [--jobs 300]

A private Valkey holds one job record; a :class:`balloons.machine.capture.LogCapture` captures the
job as a worker does (``begin``, the task's writes, ``end`` with its final flush). Baselines
are measured in the same run: the same prints to ``/dev/null`` without capture, and an empty
task with no capture. stdout is ``/dev/null`` in both, so the figures are capture's own cost
(buffering, the flusher thread's batched ``APPEND_LOGS`` scripts, the final flush).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

from _common import header, table, valkey_server

from balloons.ids import ulid
from balloons.machine.capture import LogCapture
from balloons.store.keys import PoolKeys
from balloons.store.resp import RespClient


def prints(n: int) -> None:
    for i in range(n):
        print("a line of output", i)


def records(n: int, log: logging.Logger) -> None:
    for i in range(n):
        log.info("a log record %d", i)


def timed(fn: object, *args: object) -> float:
    t = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    # at most MAX_LOG_LINES (10,000), so that every line is kept and can be counted
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=9)
    opts = ap.parse_args()
    real_stdout = sys.stdout
    devnull = open(os.devnull, "w")  # noqa: SIM115
    log = logging.getLogger("bench")
    log.addHandler(logging.NullHandler())
    log.propagate = True
    with valkey_server() as url:
        pk = PoolKeys("bench", "default")
        r = RespClient(url)

        def fresh_job() -> str:
            u = ulid()
            r.execute("HSET", pk.job(u), "attempt", 1, "ttl", 600, "status", "RUNNING")
            return u

        cap = LogCapture(url, pk)
        per_line: dict[str, list[float]] = {"print": [], "print captured": []}
        task_side: list[float] = []  # begin -> last print: what the task's thread pays
        drain: list[float] = []  # end(): sending what is still buffered
        per_rec: dict[str, list[float]] = {"logging": [], "logging captured": []}
        for _ in range(opts.rounds):
            sys.stdout = devnull
            logging.getLogger().setLevel(logging.INFO)
            per_line["print"].append(timed(prints, opts.lines) / opts.lines)
            per_rec["logging"].append(timed(records, opts.lines, log) / opts.lines)
            u = fresh_job()
            t = time.perf_counter()
            cap.begin(u, 1)
            prints(opts.lines)
            t_task = time.perf_counter()
            cap.end()
            t_end = time.perf_counter()
            per_line["print captured"].append((t_end - t) / opts.lines)
            task_side.append((t_task - t) / opts.lines)
            drain.append(t_end - t_task)
            sys.stdout = real_stdout
            stored = int(r.execute("XLEN", pk.logs(u)))
            assert stored == opts.lines, (stored, opts.lines)
            u = fresh_job()
            sys.stdout = devnull
            t = time.perf_counter()
            cap.begin(u, 1)
            records(opts.lines, log)
            cap.end()
            per_rec["logging captured"].append((time.perf_counter() - t) / opts.lines)
            sys.stdout = real_stdout
            assert int(r.execute("XLEN", pk.logs(u))) == opts.lines

        per_job: dict[str, list[float]] = {
            "no capture": [],
            "capture, 0 lines": [],
            "capture, 10 lines": [],
        }
        ids = [fresh_job() for _ in range(opts.jobs * 2)]
        sys.stdout = devnull
        for i in range(opts.jobs):
            per_job["no capture"].append(timed(lambda: None))
            t = time.perf_counter()
            cap.begin(ids[2 * i], 1)
            cap.end()
            per_job["capture, 0 lines"].append(time.perf_counter() - t)
            t = time.perf_counter()
            cap.begin(ids[2 * i + 1], 1)
            prints(10)
            cap.end()
            per_job["capture, 10 lines"].append(time.perf_counter() - t)
        sys.stdout = real_stdout
        cap.close()
        r.close()

    print(header("Log capture: cost per line and per job"))
    base = statistics.median(per_line["print"])
    rows = [
        [k, f"{statistics.median(v) * 1e6:.2f}", f"{statistics.median(v) / base:.2f}x"]
        for k, v in per_line.items()
    ]
    base_r = statistics.median(per_rec["logging"])
    rows += [
        [k, f"{statistics.median(v) * 1e6:.2f}", f"{statistics.median(v) / base_r:.2f}x"]
        for k, v in per_rec.items()
    ]
    print(f"\nper line, {opts.lines} lines x {opts.rounds} rounds (stdout = /dev/null)")
    print(table(["what", "µs per line (median)", "vs uncaptured"], rows))
    print(
        f"of which the task's own thread, until its last print: "
        f"{statistics.median(task_side) * 1e6:.2f} µs per line; end() then waited "
        f"{statistics.median(drain) * 1e3:.1f} ms for the rest to be stored"
    )
    print(
        f"\nevery line stored: XLEN == lines in each round (checked); {opts.lines} records stored"
    )
    rows = [
        [k, f"{statistics.median(v) * 1e6:.1f}", f"{statistics.mean(v) * 1e6:.1f}"]
        for k, v in per_job.items()
    ]
    print(f"\nper job: begin + task + end (with its final flush), n={opts.jobs}")
    print(table(["what", "µs per job (median)", "mean"], rows))


if __name__ == "__main__":
    main()
