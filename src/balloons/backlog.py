"""The launches made off the caller's thread: :class:`Launcher`, its threads and their drain.

A launcher takes launches in order on daemon threads that live only while some are pending;
every launcher is drained before the interpreter exits, and a forked child forgets its
parent's.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from .launcher import Launch


class Launcher:
    """Runs ``launch`` for each queued launch, taken in order, on up to ``workers`` daemon
    threads that exist only while launches are pending (with one worker, launches are also
    made in order; with more, up to that many at once: what must not overlap, such as creates
    waiting on one rate limit, the caller serializes itself)."""

    def __init__(self, launch: Callable[[Launch], None], workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._launch = launch
        self._workers = workers
        self._pending: deque[Launch] = deque()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._threads = 0  # alive
        self._running = 0  # of those, inside a launch

    def busy(self) -> bool:
        """Whether launches are pending or being made (a new one must queue behind them)."""
        with self._lock:
            return self._threads > 0

    def put(self, launch: Launch) -> None:
        with self._lock:
            self._pending.append(launch)
            free = self._threads - self._running  # threads about to take a pending launch
            if self._threads < self._workers and len(self._pending) > free:
                self._threads += 1
                threading.Thread(target=self._run, name="balloons-launcher", daemon=True).start()
                _LIVE.add(self)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every pending launch was made; False if ``timeout`` ran out first."""
        with self._lock:
            return self._done.wait_for(lambda: self._threads == 0, timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._threads -= 1
                    if self._threads == 0:
                        self._done.notify_all()
                    return
                launch = self._pending.popleft()
                self._running += 1
            try:
                self._launch(launch)
            except Exception as exc:  # a failed launch is recorded by the app; never stop here
                import logging

                logging.getLogger("balloons").error("launch of %s.%s failed: %s", *launch[:2], exc)
            finally:
                with self._lock:
                    self._running -= 1


_LIVE: weakref.WeakSet[Launcher] = weakref.WeakSet()


@atexit.register
def _drain_all() -> None:
    for launcher in list(_LIVE):
        launcher.drain()


def _forget_in_child() -> None:
    """A forked child has no launcher thread: the parent's pending launches are the parent's,
    and its locks may have been held at the fork."""
    for launcher in list(_LIVE):
        launcher._lock = threading.Lock()
        launcher._done = threading.Condition(launcher._lock)
        launcher._pending.clear()
        launcher._threads = launcher._running = 0
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_in_child)
