"""Wake-ups for ``/wait`` requests when any machine changes.

Machines change on the supervisor thread as well as in request handlers, and the handlers may
run on any event loop (uvicorn's, or a test's through ``httpx.ASGITransport``). A waiter
therefore registers an :class:`asyncio.Event` together with its loop, and :meth:`notify` sets
it through ``call_soon_threadsafe``. Waiters re-check their condition after every wake-up, so a
spurious one costs a lookup, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import threading


class ChangeNotifier:
    """A set of (loop, event) pairs woken on every machine change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        """Register a fresh event on the running loop; pass it to :meth:`unsubscribe` later."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        return entry

    def unsubscribe(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        """Stop waking the waiter ``entry`` that :meth:`subscribe` returned."""
        with self._lock:
            self._waiters.discard(entry)

    def notify(self) -> None:
        """Wake every waiter; safe to call from any thread."""
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed; its waiter is gone with it
                self.unsubscribe((loop, event))
