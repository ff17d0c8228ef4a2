"""Waiting in tests: poll a condition until it holds, or fail naming what was awaited.

``wait_for(check, "what")`` calls ``check()`` until it returns something truthy and returns
that value; after ``timeout`` seconds it fails the test naming ``what`` (by default the source
line of ``check``) and the last value (or exception) it saw. Exceptions of the types in ``ignoring`` count as "not yet" (a server still
starting). ``wait_for_async`` is the same for ``async`` tests, with ``check`` sync or async.
The timeout is a safety limit for a hung test, never a performance threshold.

Machines import this module too (``tests.dashboard.tasks``): it imports only the standard
library.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Default safety limit for anything a test waits for.
TIMEOUT = 30.0


class _Poll:
    """The deadline and the last thing seen, shared by the sync and async loops."""

    def __init__(self, check: object, what: str | None, timeout: float) -> None:
        self.check = check
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last: object = None
        self.error: BaseException | None = None

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def fail(self) -> AssertionError:
        what = self.what or _source(self.check)
        seen = f"last error: {self.error!r}" if self.error is not None else f"last: {self.last!r}"
        return AssertionError(f"timed out after {self.timeout:g}s waiting for {what} ({seen})")


def _source(check: object) -> str:
    """The source line a check was written on (a lambda's), else its repr."""
    try:
        return " ".join(inspect.getsource(check).split())  # type: ignore[arg-type]
    except (OSError, TypeError):
        return repr(check)


def wait_for(
    check: Callable[[], T],
    what: str | None = None,
    timeout: float = TIMEOUT,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``check`` every ``interval`` seconds until its result is truthy; return it."""
    poll = _Poll(check, what, timeout)
    while True:
        try:
            value = check()
        except ignoring as exc:
            poll.error = exc
        else:
            if value:
                return value
            poll.last, poll.error = value, None
        if poll.expired():
            raise poll.fail()
        time.sleep(interval)


async def wait_for_async(
    check: Callable[[], Awaitable[T]] | Callable[[], T],
    what: str | None = None,
    timeout: float = TIMEOUT,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``wait_for`` for async tests: ``check`` may return an awaitable; sleeps with anyio."""
    import anyio

    poll = _Poll(check, what, timeout)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            poll.error = exc
        else:
            if value:
                return value  # type: ignore[return-value]
            poll.last, poll.error = value, None
        if poll.expired():
            raise poll.fail()
        await anyio.sleep(interval)
