"""A fresh process per job on a warm machine: a pool's ``isolation="process"`` (the default).

The worker's own process stays clean: it claims and takes jobs, holds the slot's lease (its
heartbeat thread), imports the modules of the tasks it is handed (so that no child imports
them again), and never runs a task. Each job runs in a child forked from it, which verifies
the record, runs the task under its deadline, records the outcome and exits: nothing a task
leaves in the interpreter (module globals, ``os.environ``, threads, open files) is seen by the
next job.

Who does what:

* **the parent** takes the job (``CLAIM``, ``TAKE``) and hands it to a child over a pipe; its
  heartbeat thread renews the lease, and on a cancel signals the child (``SIGUSR1``, the same
  interrupt as in one process; ``SIGKILL`` a heartbeat later if the child has not ended); past
  the job's deadline and its grace it kills the child. When the child ends without saying it
  recorded an outcome (a crash, ``os._exit``, a signal, the kernel's OOM killer, a kill for
  the deadline), the parent records the attempt's failure itself, at once, with the reason
  (``killed``, ``exit_code=N``, ``timeout``, ``cost_cap``) and a retry as the job's policy
  allows; the machine then goes on taking jobs.
* **the child** opens its own Redis connection (never the parent's sockets), tells the parent
  its deadline, runs the job as a one-process worker does, sends ``FINISH`` (with the machine's
  next ``TAKE`` in the same write while jobs were queued) and hands that ``TAKE``'s reply to
  the parent before it exits, so a busy machine still pays one round trip per job.

The next child is forked while a job runs (a spare, connected to Redis and waiting on its
pipe), so a warm job pays no fork and no connection: only a write to a pipe. A spare is a copy
of the parent as it is then, so it holds no more than the parent does.

Standard library and balloons' lean modules only: every machine imports this module.
"""

from __future__ import annotations

import gc
import json
import marshal
import os
import select
import signal
import sys
import time

from .. import registry
from ..errors import StoreError
from ..signing import verify
from ..states import Reason, exit_reason
from ..store.replies import Work
from ..store.resp import RespClient
from .attempt import log
from .capture import LogCapture
from .watchdog import unwatch

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from typing import Any

    from .worker import Worker

#: The exit code of a child whose own code failed (not the task's): no outcome recorded.
EXIT_CHILD_BROKE = 70
_BEGAN, _ENDED = b"B", b"E"
_HEADER = 5  # a message: its kind (one byte) and the length of its body (4 bytes)


class Child:
    """A process forked from the worker's, to run one job."""

    __slots__ = ("events", "jobs", "pid")

    def __init__(self, pid: int, jobs: int, events: int) -> None:
        self.pid, self.jobs, self.events = pid, jobs, events

    def close(self) -> None:
        """Let it go: a spare that was handed nothing reads the end of its pipe and exits."""
        for fd in (self.jobs, self.events):
            try:
                os.close(fd)
            except OSError:
                pass


def fork(w: Worker) -> Child:
    """A child of the worker's process, waiting for a job on its pipe."""
    jobs_r, jobs_w = os.pipe()
    events_r, events_w = os.pipe()
    unwatch()  # the watchdog's thread does not survive a fork: nothing is left armed
    # The parent's objects go to the collector's permanent generation for the fork: the child's
    # collections never write to them (each such write would copy a page into the child).
    gc.freeze()
    with w.lock:  # the heartbeat thread holds no lock of the worker's as the process is copied
        pid = os.fork()
    if pid:
        gc.unfreeze()
    if pid == 0:  # the child: never returns
        code = EXIT_CHILD_BROKE
        try:
            os.close(jobs_w)
            os.close(events_r)
            code = _child(w, jobs_r, events_w)
        except BaseException as exc:  # the child's last word, whatever it is
            log(f"job process: {type(exc).__name__}: {exc}")
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # exiting anyway
                    pass
            os._exit(code)
    os.close(jobs_r)
    os.close(events_w)
    return Child(pid, jobs_w, events_r)


# ------------------------------------------------------------------ the child
def _child(w: Worker, jobs: int, events: int) -> int:
    """Wait for a job on ``jobs``, run it, say so on ``events``; the exit code."""
    _leave_parents_connections(w)
    w.client = RespClient(w.handoff.redis_url)
    w.capture = LogCapture(w.handoff.redis_url, w.pk, w.handoff.secret)
    w.events = events
    w.child, w.in_task, w.current, w.spare = 0, False, None, None
    if not _ready(jobs):  # a spare waiting for work (else its job is there: run it now)
        try:  # connected while it waits: the job's path opens no connection
            w.client.execute("PING")
        except StoreError:
            pass  # connected again at its first command
        _prefault(w)
    body = _read(jobs)
    if body is None:
        return 0  # a spare let go: the machine exits
    fields = marshal.loads(body[1])  # noqa: S302 - from its parent
    ulid, attempt, payload, args, sig, grant, isolation, w.job_start, w.more = fields
    os.close(jobs)
    code = w.run_here(Work(ulid, attempt, payload, args, sig, grant, isolation))
    _write(events, _ENDED, marshal.dumps((code, w.next_take)))
    return code


def _ready(fd: int) -> bool:
    """Whether a job (or the end of the pipe) is waiting to be read."""
    poll = select.poll()
    poll.register(fd, select.POLLIN | select.POLLHUP)
    return bool(poll.poll(0))


def _prefault(w: Worker) -> None:
    """Make the memory the job's path writes this process's own while it waits, not on the
    job's time: a forked process shares its parent's pages until it writes one, and each first
    write costs a page fault and a copy (hundreds of them on a job's path, about a millisecond):
    a dry pass over the worker's own steps (a signature check, a payload read, a log line
    formatted). Nothing of a job runs."""
    verify(w.handoff.secret, b"{}", b"[]", b"0" * 64)
    json.loads(b'{"id": "", "task": "", "attempt": 1}')
    marshal.loads(marshal.dumps(("", 0, b"", b"", b"", b"", "", 0.0)))  # noqa: S302
    _ = f"{w.pool}.{time.time():.3f} {sys.stderr!r}"


def _leave_parents_connections(w: Worker) -> None:
    """Close this process's copies of the parent's Redis sockets (the parent's stay open), so
    that nothing in the child can read or write on them."""
    for client in (w.client, w.beat_client, w.capture._client):
        sock = getattr(client, "_sock", None) if client is not None else None
        if sock is not None:
            try:
                sock.close()  # closes this process's descriptor: no shutdown, nothing sent
            except OSError:
                pass


def began(w: Worker, deadline: float | None) -> None:
    """Tell the parent the job's deadline (``time.time()``) and whether it is its max_cost."""
    _write(w.events, _BEGAN, marshal.dumps((deadline, w.capped)))


# ----------------------------------------------------------------- the parent
def run(w: Worker, work: Work) -> int:
    """Run ``work`` in a child of the worker's process; the exit code. Forks the next spare
    as the job ends, so a warm machine waits for work with one ready."""
    preload(w, work)
    _reap_exited()
    child, w.spare = w.spare, None
    if child is None:
        child = fork(w)
    try:
        _write(child.jobs, b"J", marshal.dumps((*work, w.job_start, w.more)))
    except OSError:  # the spare is gone (killed behind the worker's back): a new one
        child.close()
        _reap(child.pid)
        child = fork(w)
        _write(child.jobs, b"J", marshal.dumps((*work, w.job_start, w.more)))
    with w.lock:
        w.child, w.killed_for, w.interrupted = child.pid, "", ""
        w.current, w.capped, w.in_task = (work.ulid, work.attempt, None), False, True
    ended: Any = None
    status: int | None = None
    try:
        ended = _wait(w, child, work)
        if ended is None:  # its pid stays its own until it is reaped: the heartbeat may kill it
            status = _reap(child.pid)
    finally:
        with w.lock:
            w.child, w.in_task, w.current = 0, False, None
        child.close()
        if status is None:  # it recorded the outcome and is exiting: reaped later
            _EXITING.append(child.pid)
    if not w.stop:  # the next job's child, ready before the next job comes
        w.spare = fork(w)
    if ended is not None:
        code, w.next_take = ended
        if w.interrupted:
            log(f"job {w.pool}.{work.ulid} attempt {work.attempt} stopped: {w.interrupted}")
        return int(code)
    return _crashed(w, work, status or 0)


def _wait(w: Worker, child: Child, work: Work) -> Any:
    """Read the child's messages until it exits; what it said at its end, None without it."""
    while True:
        msg = _read(child.events)
        if msg is None:
            return None
        kind, body = msg
        try:  # its own child's words, checked all the same: a task may write on any descriptor
            said = marshal.loads(body)  # noqa: S302
        except (ValueError, EOFError, TypeError):
            continue
        if kind == _ENDED and _is(said, int, object):
            return said
        if kind == _BEGAN and _is(said, (float, type(None)), bool):
            with w.lock:
                if w.child == child.pid:
                    w.current, w.capped = (work.ulid, work.attempt, said[0]), said[1]


def _is(said: Any, *kinds: Any) -> bool:
    """Whether a child's message is a tuple of values of these types."""
    return (
        isinstance(said, tuple)
        and len(said) == len(kinds)
        and all(isinstance(v, k) for v, k in zip(said, kinds, strict=True))
    )


def _crashed(w: Worker, work: Work, status: int) -> int:
    """The child ended without recording an outcome: record the attempt's failure, with a
    retry as the job's policy allows, unless the job moved on (cancelled, reassigned)."""
    from .execute import EXIT_SKIPPED

    code = os.waitstatus_to_exitcode(status)
    job_id = f"{w.pool}.{work.ulid}"
    if w.interrupted:
        log(f"job {job_id} attempt {work.attempt} stopped: {w.interrupted}")
        return EXIT_SKIPPED
    if w.killed_for:
        reason = w.killed_for
        what = "its max_cost" if reason == Reason.COST_CAP else "its run timeout"
        message = f"the task ignored {what}, so its process was killed"
    elif code < 0:
        reason = Reason.KILLED
        message = f"the job's process was killed by signal {_signal_name(-code)}"
        if -code == signal.SIGKILL:
            message += " (by the kernel when the machine ran out of memory, or by a kill)"
    else:
        reason = exit_reason(code)
        message = f"the job's process exited with code {code} before recording an outcome"
    log(f"job {job_id} attempt {work.attempt}: {message}")
    w.spec = _spec(w, work)
    return w.fail(work, reason, message)


def _spec(w: Worker, work: Work) -> dict[str, Any] | None:
    """The job's payload when its record verifies (its retry policy), else None."""
    if not verify(w.handoff.secret, work.payload, work.args, work.sig):
        return None
    try:
        spec = json.loads(work.payload)
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


def preload(w: Worker, work: Work) -> None:
    """Import the task's module in the parent (once per module) when the record verifies, so
    that the children forked from it have it already. A module that fails to import is left
    for the child to report."""
    spec = _spec(w, work)
    name = spec.get("task") if spec is not None else None
    if not isinstance(name, str) or name in registry.TASKS:
        return
    main = spec.get("main") if spec is not None else None
    try:
        registry.load(name, main if isinstance(main, str) else None)
    except Exception as exc:  # the child reports it, as the job's failure
        log(f"task {name!r} not imported ahead of its job: {exc}")


def close(w: Worker) -> None:
    """Let the spare go (it exits), and wait for every child, as the machine ends."""
    child, w.spare = w.spare, None
    if child is not None:
        child.close()
        _reap(child.pid)
    while _EXITING:
        _reap(_EXITING.pop())


#: Children that recorded their job's outcome and exit: reaped at the next job, or the end.
_EXITING: list[int] = []


def _reap_exited() -> None:
    for pid in list(_EXITING):
        try:
            done = os.waitpid(pid, os.WNOHANG)[0]
        except ChildProcessError:
            done = pid
        if done:
            _EXITING.remove(pid)


def kill(w: Worker, sig: int) -> None:
    """Signal the child running a job (the caller holds ``w.lock``)."""
    if w.child:
        try:
            os.kill(w.child, sig)
        except OSError:
            pass


# -------------------------------------------------------------- the pipes
def _write(fd: int, kind: bytes, body: bytes) -> None:
    data = memoryview(kind + len(body).to_bytes(4, "big") + body)
    while data:
        data = data[os.write(fd, data) :]


def _read(fd: int) -> tuple[bytes, bytes] | None:
    """One message (its kind and body), None at the end of the pipe."""
    head = _exactly(fd, _HEADER)
    if head is None:
        return None
    body = _exactly(fd, int.from_bytes(head[1:], "big"))
    return None if body is None else (head[:1], body)


def _exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except InterruptedError:  # pragma: no cover - retried by Python itself
            continue
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _reap(pid: int) -> int:
    """Wait for the child to exit; its wait status."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:  # pragma: no cover
            continue


def _signal_name(sig: int) -> str:
    try:
        return f"{sig} ({signal.Signals(sig).name})"
    except ValueError:
        return str(sig)
