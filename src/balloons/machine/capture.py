"""What a task prints and logs, and how far it got, sent to Redis while it runs.

The worker wraps each task run in :meth:`LogCapture.begin` / :meth:`LogCapture.end`:
``sys.stdout`` and ``sys.stderr`` are replaced by tees (the text still reaches the machine's
own output), and, when the task's process already uses :mod:`logging`, a handler on the root
logger records its log records (this module never imports :mod:`logging` itself: the hook is
installed when ``logging`` is in ``sys.modules``, at the start of the task or at the next flush
once the task imports it). Lines are kept in memory and sent in batches, one ``APPEND_LOGS``
script per batch (a list append per line on the task's side), by a flusher thread every
:data:`FLUSH_INTERVAL` seconds or as soon as :data:`BATCH_LINES` wait, by the writer itself
only when the flusher falls :data:`MAX_WAITING` lines behind, and in full by
:meth:`LogCapture.end`, before the worker records the
outcome. An attempt keeps at most :data:`MAX_LOG_BYTES` of text (then one line saying so);
the job's stream keeps its last :data:`MAX_LOG_LINES` lines across attempts.

:func:`progress` records how far the task got; it is sent with the next batch, so calling it
often costs no more than one write per flush interval.
"""

from __future__ import annotations

import sys
import threading
import time

from ..signing import sign_outcome
from ..store import lua
from ..store.keys import script_keys
from ..store.resp import RespClient

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from typing import Any, TextIO

    from ..store.keys import PoolKeys

#: Lines a job's log stream keeps (across its attempts); older ones are trimmed.
MAX_LOG_LINES = 10_000
#: Bytes of text one attempt may log; later lines are dropped, with one line saying so.
MAX_LOG_BYTES = 1 << 20
#: Characters of one line kept; the rest is cut.
MAX_LINE_CHARS = 8192
#: Seconds between the flusher's sends while a task writes.
FLUSH_INTERVAL = 0.25
#: Lines that wake the flusher before its interval.
BATCH_LINES = 500
#: Lines waiting to be sent that make the writer send them itself (the flusher is behind).
MAX_WAITING = 20 * BATCH_LINES

_CURRENT: list[LogCapture] = []  # the capture of the task running in this process


def progress(fraction: float, note: str = "") -> None:
    """Record how far the running task got: ``balloons.progress(0.4, "compiling")``.

    ``fraction`` is a number from 0 to 1; ``note`` a short text. Outside a job (a task called
    directly, a test) it does nothing. The value is sent with the next batch of log lines, at
    most once per :data:`FLUSH_INTERVAL`.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress must be from 0 to 1, got {fraction!r}")
    if _CURRENT:
        # Stored as UTF-8 and tagged as such: no lone surrogate may reach the encoder.
        text = str(note)[:200].encode("utf-8", "replace").decode("utf-8")
        _CURRENT[0].set_progress(float(fraction), text)


class _Tee:
    """A text stream that writes through to the original and records whole lines."""

    def __init__(self, capture: LogCapture, source: str, original: TextIO) -> None:
        self._capture = capture
        self._source = source
        self._original = original
        self._partial = ""

    def write(self, text: str) -> int:
        try:
            n = self._original.write(text)
        except (OSError, ValueError):
            n = len(text)
        cap = self._capture
        if cap._emit_code is not None:
            # A record a root StreamHandler writes here (``logging.basicConfig()`` inside the
            # task) is already kept, as a log line, by the root hook: not twice.
            caller = sys._getframe(1)
            if (
                caller.f_code is cap._emit_code
                and caller.f_locals.get("self") in cap._root_handlers
            ):
                return n
        if "\n" not in text:
            self._partial += text
            if len(self._partial) > MAX_LINE_CHARS:
                self._capture.add(self._source, self._partial)
                self._partial = ""
            return n
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._capture.add(self._source, line)
        return n

    def flush(self) -> None:
        try:
            self._original.flush()
        except (OSError, ValueError):
            pass

    def finish(self) -> None:
        if self._partial:
            self._capture.add(self._source, self._partial)
            self._partial = ""

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class LogCapture:
    """One worker's capture: a job at a time (warm reuse runs several in a row)."""

    def __init__(self, redis_url: str, pk: PoolKeys, secret: bytes = b"") -> None:
        self.redis_url = redis_url
        self.pk = pk
        self._secret = secret  # tags the progress (see balloons.signing)
        self._client: RespClient | None = None
        self._lock = threading.Lock()  # the buffer and the current job
        self._send_lock = threading.Lock()  # one batch at a time, in order
        self._wake = threading.Event()  # a batch is ready (or close()): send without waiting
        self._active = threading.Event()  # set while a job is captured
        self._hook_lock = threading.Lock()  # the root hook: begin/end and the flusher
        self._buf: list[str] = []  # one "TIME SOURCE TEXT" string a line
        self._job: tuple[str, int] | None = None
        self._bytes = 0
        self._capped = False
        self._warned = False  # one warning per job when Redis refuses its lines
        self._progress: tuple[float, str] | None = None
        self._thread: threading.Thread | None = None
        self._tees: tuple[_Tee, _Tee] | None = None
        self._saved: tuple[Any, Any] | None = None
        self._handler: Any = None  # the root hook while it is installed
        self._made_handler: Any = None
        self._root_level: int | None = None
        self._emit_code: Any = None  # logging.StreamHandler.emit's code, once hooked
        self._root_handlers: list[Any] = []
        self.stop = False

    # ------------------------------------------------------------ per job
    def begin(self, ulid: str, attempt: int) -> None:
        """Start capturing the lines of attempt ``attempt`` of job ``ulid``."""
        with self._lock:
            self._job = (ulid, attempt)
            self._buf = []
            self._bytes = 0
            self._capped = False
            self._progress = None
            self._warned = False
        out, err = _Tee(self, "out", sys.stdout), _Tee(self, "err", sys.stderr)
        self._saved = (sys.stdout, sys.stderr)
        self._tees = (out, err)
        sys.stdout, sys.stderr = out, err
        with self._hook_lock:
            self._hook_logging()
        _CURRENT[:] = [self]
        self._active.set()

    def end(self) -> None:
        """Stop capturing and send what is left (before the outcome is recorded)."""
        if self._saved is None:
            return
        _CURRENT[:] = []
        self._active.clear()
        if self._tees is not None:
            for tee in self._tees:
                tee.finish()
        sys.stdout, sys.stderr = self._saved
        with self._hook_lock:
            self._saved = self._tees = None
            self._unhook_logging()
        self.flush()
        with self._lock:
            self._job = None

    # ------------------------------------------------------------- writes
    def add(self, source: str, text: str) -> None:
        """Keep one line of ``source`` (``out``, ``err``, ``log``) for the current job, cut past
        :data:`MAX_LINE_CHARS`; past :data:`MAX_LOG_BYTES` an attempt's lines are dropped, saying
        so once."""
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line cut]"
        with self._lock:
            if self._job is None or self._capped:
                return
            self._bytes += len(text) + 1
            if self._bytes > MAX_LOG_BYTES:
                self._capped = True
                source = "log"
                text = f"[balloons: log capped at {MAX_LOG_BYTES:,} bytes; later lines dropped]"
            self._buf.append(f"{time.time():.6f} {source} {text}")
            waiting = len(self._buf)
        if self._thread is None:
            self._start()
        if waiting >= MAX_WAITING:
            self.flush()  # the flusher is behind: the writer waits for Redis too
        elif waiting >= BATCH_LINES:
            self._wake.set()

    def set_progress(self, fraction: float, note: str) -> None:
        """Keep the job's latest progress, sent with the next batch."""
        with self._lock:
            if self._job is None:
                return
            self._progress = (fraction, note)
        if self._thread is None:
            self._start()

    # ------------------------------------------------------------ sending
    def flush(self) -> None:
        """Send the lines and progress buffered so far, in one script."""
        with self._send_lock:
            with self._lock:
                job, buf, prog = self._job, self._buf, self._progress
                self._buf, self._progress = [], None
            if job is None or (not buf and prog is None):
                return
            fraction, note, tag = "", "", ""
            if prog is not None:
                fraction, note = f"{prog[0]:.4f}", prog[1]
                data = f"{fraction}\n{note}".encode()
                tag = sign_outcome(
                    self._secret, "progress", f"{self.pk.pool}.{job[0]}", job[1], data
                )
            if self._client is None:
                self._client = RespClient(self.redis_url)
            try:
                self._client.eval(
                    lua.APPEND_LOGS,
                    script_keys(self.pk, job[0]),
                    [
                        self.pk.tag,
                        time.time(),
                        job[0],
                        job[1],
                        MAX_LOG_LINES,
                        fraction,
                        note,
                        tag,
                        *buf,
                    ],
                )
            except BaseException as exc:
                self._client.close()  # a reply may be left unread: start afresh next time
                if not isinstance(exc, Exception):
                    raise
                if not self._warned:
                    self._warned = True
                    _warn(
                        f"could not send log lines (later failures of this job unreported): {exc}"
                    )

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="balloons-logs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1, signal.SIGTERM})
        while not self.stop:
            if not self._active.is_set():
                self._active.wait(5.0)  # between jobs: nothing to send, no need to wake
                continue
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            if self._handler is None and "logging" in sys.modules:
                with self._hook_lock:
                    if self._saved is not None:
                        self._hook_logging()  # the task imported logging after it started
            try:
                self.flush()
            except Exception as exc:  # never let the flusher die
                _warn(f"log flusher: {exc}")

    def close(self) -> None:
        """Stop the flusher thread."""
        self.stop = True
        self._wake.set()
        self._active.set()
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------ logging
    def _hook_logging(self) -> None:
        logging = sys.modules.get("logging")
        if logging is None or self._handler is not None:
            return
        handler = self._made_handler
        if handler is None:
            capture = self

            class _Handler(logging.Handler):  # type: ignore[name-defined,misc]
                def emit(self, record: Any) -> None:
                    try:
                        capture.add("log", self.format(record))
                    except Exception:
                        self.handleError(record)

            # Made once per worker: a class and a formatter per job would cost more than
            # the rest of the hook.
            handler = self._made_handler = _Handler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        # An unconfigured root (no handlers, level WARNING) would drop the task's INFO records.
        if not root.handlers and root.level == logging.WARNING:
            self._root_level = root.level
            root.setLevel(logging.INFO)
        root.addHandler(handler)
        self._root_handlers = root.handlers
        self._emit_code = logging.StreamHandler.emit.__code__
        self._handler = handler

    def _unhook_logging(self) -> None:
        handler, self._handler = self._handler, None
        self._emit_code, self._root_handlers = None, []
        if handler is None:
            return
        root = sys.modules["logging"].getLogger()
        root.removeHandler(handler)
        if self._root_level is not None:
            root.setLevel(self._root_level)
            self._root_level = None


def _warn(msg: str) -> None:
    err = sys.__stderr__
    if err is not None:
        print(f"balloons worker: {msg}", file=err, flush=True)
