"""A fresh process per job on a warm machine: a pool's ``isolation="process"`` (the default).

The worker's own process stays clean: it claims and takes jobs, holds the slot's lease (its
heartbeat thread), imports the modules of the tasks it is handed (so that no child imports
them again), records outcomes, and never runs a task. Each job runs in a child forked from it,
which runs the task under its deadline, hands its outcome to the parent and exits: nothing a task
leaves in the interpreter (module globals, ``os.environ``, threads, open files) is seen by the
next job.

Who does what:

* **the parent** takes the job (``CLAIM``, ``TAKE``), verifies its record and decodes its
  payload (importing the task's module the first time), and hands it to a child over a pipe;
  it records the outcome the child hands back (``FINISH``, with the machine's next ``TAKE`` in
  the same write while jobs were queued, so a busy machine pays one round trip per job). Its
  heartbeat thread renews the lease, and on a cancel signals the child (``SIGUSR1``, the same
  interrupt as in one process; ``SIGKILL`` a heartbeat later if the child has not ended); past
  the job's deadline and its grace it kills the child. When the child ends without handing
  over an outcome (a crash, ``os._exit``, a signal, the kernel's OOM killer, a kill for the
  deadline), the parent records the attempt's failure itself, at once, with the reason
  (``killed``, ``exit_code=N``, ``timeout``, ``cost_cap``) and a retry as the job's policy
  allows; the machine then goes on taking jobs.
* **the child** tells the parent its deadline, runs the job as a one-process worker does
  (arguments, task, result or failure, retry decision, their tags) and hands the parent
  ``FINISH``'s arguments instead of sending them. It sends nothing to Redis but its log lines
  (a connection opened by the first one), and its copies of the parent's Redis sockets point
  at ``/dev/null``.

What a child costs is mostly the pages it writes: a forked process shares its parent's memory
until either writes a page, and each first write then costs a page fault and a copy (a few µs
here). So the child does as little as it can (no connection, no signature check, no payload
parsing), the parent freezes its objects for the collector as it forks (``gc.freeze``: the
child's collections never visit them), and the parent links the scripts once before its first
child. A busy machine forks each child as its job comes; one going idle forks a spare, which
waits on its pipe with the pages of a job's path already its own, so a warm job pays no fork:
only a write to a pipe. A child is a copy of the parent as it is then, so it holds no more than
the parent does.

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
from ..signing import sign_outcome, verify
from ..states import Reason, exit_reason
from ..store.replies import Work
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
    if not _PARENTS:  # the first child of this process: what every child would make, made once
        from .worker import prepare

        prepare()
        _OOM[0] = oom_kills()
    _parents_sockets(w)
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
    """Wait for a job on ``jobs``, run it, hand its outcome to the parent on ``events``; the
    exit code. The child sends nothing to Redis but its log lines (a connection opened by the
    first one): its parent records the outcome."""
    _leave_parents_connections()
    if w.capture._client is not None or w.capture._thread is not None:
        w.capture = LogCapture(w.handoff.redis_url, w.pk, w.handoff.secret)  # one that is used
    w.events = events
    w.child, w.in_task, w.current, w.spare, w.outcome = 0, False, None, None, None
    if not _ready(jobs):  # a spare waiting for work (else its job is there: run it now)
        _prefault(w)
    body = _read(jobs)
    if body is None:
        return 0  # a spare let go: the machine exits
    fields = marshal.loads(body[1])  # noqa: S302 - from its parent
    ulid, attempt, payload, args, sig, grant, isolation, w.job_start, w.more, w.opened = fields
    os.close(jobs)
    code = w.run_here(Work(ulid, attempt, payload, args, sig, grant, isolation))
    outcome = w.outcome
    if outcome is not None:  # plain values for marshal (a reason is a str enum)
        outcome = (outcome[0], tuple(str(a) if isinstance(a, str) else a for a in outcome[1]))
    _write(events, _ENDED, marshal.dumps((code, outcome)))
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
    a dry pass over the worker's own steps (a job's message read, its arguments decoded, a
    result encoded and tagged, an outcome's message, a log line formatted). Nothing of a job
    runs."""
    job = ("", 0, b"", b"", b"", b"", "", 0.0, True, {"id": "", "task": "", "attempt": 1})
    marshal.loads(marshal.dumps(job))  # noqa: S302
    json.loads(b'{"args": [], "kwargs": {}}')
    sign_outcome(w.handoff.secret, "result/json", w.pool, 1, json.dumps(None).encode())
    marshal.dumps((0, ("", (("",) * 11))))
    _ = f"{w.pool}.{time.time():.3f} {sys.stderr!r}"


def _leave_parents_connections() -> None:
    """Make this process's copies of the parent's Redis sockets (the parent's stay open) point
    at ``/dev/null``, so that nothing in the child can read or write on them: a write goes
    nowhere, a read finds the end. Descriptors, not the socket objects: the child leaves
    those untouched (each first write to a page of the parent's costs the child a copy)."""
    for fd in _PARENTS[1:]:
        try:
            os.dup2(_PARENTS[0], fd)
        except OSError:
            pass


#: ``/dev/null`` (opened once, by the parent), then the descriptors of the parent's Redis
#: sockets as it forks.
_PARENTS: list[int] = []


def _parents_sockets(w: Worker) -> None:
    """Note the descriptors of the parent's Redis connections, for a child to leave them."""
    if not _PARENTS:
        _PARENTS.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    del _PARENTS[1:]
    for client in (w.client, w.beat_client, w.capture._client):
        sock = getattr(client, "_sock", None) if client is not None else None
        fd = sock.fileno() if sock is not None else -1
        if fd >= 0:
            _PARENTS.append(fd)


def began(w: Worker, deadline: float | None) -> None:
    """Tell the parent the job's deadline (``time.time()``) and whether it is its max_cost."""
    _write(w.events, _BEGAN, marshal.dumps((deadline, w.capped)))


# ----------------------------------------------------------------- the parent
def run(w: Worker, work: Work) -> int:
    """Run ``work`` in a child of the worker's process and record its outcome; the exit code.
    Forks a spare as the machine goes idle, so a warm machine waits for work with a child
    ready; a busy one forks each child as its job comes."""
    spec = preload(w, work)
    _reap_exited()
    child, w.spare = w.spare, None
    if child is None:
        child = fork(w)
    job = marshal.dumps((*work, w.job_start, w.more, spec))
    try:
        _write(child.jobs, b"J", job)
    except OSError:  # the spare is gone (killed behind the worker's back): a new one
        child.close()
        _reap(child.pid)
        child = fork(w)
        _write(child.jobs, b"J", job)
    w.result_until = 0.0
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
        if status is None:  # it handed its outcome over and is exiting: reaped later
            _EXITING.append(child.pid)
    if ended is not None:
        code, outcome = ended
        if w.interrupted:
            log(f"job {w.pool}.{work.ulid} attempt {work.attempt} stopped: {w.interrupted}")
        elif outcome is not None:
            _record(w, work, outcome)
        code = int(code)
    else:
        code = _crashed(w, work, status or 0)
    if not w.stop and w.next_take is None:  # going idle: the next job's child, ready for it
        w.spare = fork(w)
        _OOM[0] = oom_kills()  # off the busy path: what a child's SIGKILL is compared with
    return code


def _record(w: Worker, work: Work, outcome: Any) -> None:
    """Send the outcome the child handed over (``FINISH``'s arguments) for its job."""
    ulid, args = outcome
    if (ulid, args[0], args[1]) != (work.ulid, work.ulid, work.attempt):
        log(f"job {w.pool}.{work.ulid}: its process handed over another job's outcome; ignored")
        return
    if w.record(ulid, args) < 0:
        log(f"job {w.pool}.{ulid}: outcome not recorded, the job moved on")


#: The types of ``FINISH``'s arguments, as :meth:`Worker.finish` makes them.
_FINISH_ARGS = (str, int, str, str, bytes, str, str, str, str, str, str)


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
        if kind == _ENDED and _is(said, int, _outcome):
            return said
        if kind == _BEGAN and _is(said, (float, type(None)), bool):
            deadline = said[0]
            w.result_until = time.monotonic() + deadline - time.time() if deadline else 0.0
            with w.lock:
                if w.child == child.pid:
                    w.current, w.capped = (work.ulid, work.attempt, deadline), said[1]


def _is(said: Any, *kinds: Any) -> bool:
    """Whether a child's message is a tuple of values of these types (a check: passing it)."""
    return (
        isinstance(said, tuple)
        and len(said) == len(kinds)
        and all(
            isinstance(v, k) if isinstance(k, (type, tuple)) else k(v)
            for v, k in zip(said, kinds, strict=True)
        )
    )


def _outcome(said: Any) -> bool:
    """Whether a child's outcome is none, or a job's ULID and ``FINISH``'s arguments."""
    return said is None or (_is(said, str, tuple) and _is(said[1], *_FINISH_ARGS))


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
    elif code == -signal.SIGKILL and _oom_killed():
        reason = Reason.OOM
        message = "the job's process was killed by the kernel: the machine ran out of memory"
    elif code < 0:
        reason = Reason.KILLED
        message = f"the job's process was killed by signal {_signal_name(-code)}"
        if -code == signal.SIGKILL:
            message += " (by a kill: the kernel counted no out-of-memory kill meanwhile)"
    else:
        reason = exit_reason(code)
        message = f"the job's process exited with code {code} before recording an outcome"
    log(f"job {job_id} attempt {work.attempt}: {message}")
    w.spec = _spec(w, work)
    return w.fail(work, reason, message)


#: The kernel's count of out-of-memory kills when last read (None: not read, or unreadable).
_OOM: list[int | None] = [None]


def _oom_killed() -> bool:
    """Whether the kernel counted an out-of-memory kill since the count was last read (the
    machine's first job, or as it went idle): a child that died of ``SIGKILL`` meanwhile was
    that kill, unless the parent sent it."""
    before, _OOM[0] = _OOM[0], oom_kills()
    return before is not None and _OOM[0] is not None and _OOM[0] > before


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup
    (a container's limit; cgroup v2 counts those below it too), else on the whole machine
    (``/proc/vmstat``: a VM such as a Fly Machine). None where none of these can be read."""
    try:
        with open("/proc/self/cgroup", "rb") as fh:
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        controllers, path = parts[1], parts[2].rstrip("/")
        if controllers == "":  # cgroup v2: memory.events, where this cgroup has a limit
            found = _counter(f"/sys/fs/cgroup{path}/memory.events", "oom_kill")
        elif "memory" in controllers.split(","):  # cgroup v1
            found = _counter(f"/sys/fs/cgroup/memory{path}/memory.oom_control", "oom_kill")
        else:
            continue
        if found is not None:
            return found
    return _counter("/proc/vmstat", "oom_kill")


def _counter(path: str, name: str) -> int | None:
    """The value of ``name`` in a kernel file of ``name value`` lines, None if there is none."""
    try:
        with open(path, "rb") as fh:
            for line in fh.read().decode(errors="replace").splitlines():
                key, _, value = line.partition(" ")
                if key == name and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return None


def _spec(w: Worker, work: Work) -> dict[str, Any] | None:
    """The job's payload when its record verifies (its retry policy), else None."""
    if not verify(w.handoff.secret, work.payload, work.args, work.sig):
        return None
    try:
        spec = json.loads(work.payload)
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


def preload(w: Worker, work: Work) -> dict[str, Any] | None:
    """The job's payload, decoded, when its record verifies (else None, and the child
    refuses it); the task's module imported in the parent (once per module), so that the
    children forked from it have it already. A module that fails to import is left for the
    child to report."""
    spec = _spec(w, work)
    name = spec.get("task") if spec is not None else None
    if spec is None or not isinstance(name, str) or name in registry.TASKS:
        return spec
    main = spec.get("main")
    try:
        registry.load(name, main if isinstance(main, str) else None)
    except Exception as exc:  # the child reports it, as the job's failure
        log(f"task {name!r} not imported ahead of its job: {exc}")
    return spec


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
