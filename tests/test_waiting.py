"""The test suite's one waiting helper: it returns what the check found, or names what it
waited for."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import wait_for, wait_for_async


def test_wait_for_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "done", "three calls", interval=0) == "done"


def test_wait_for_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the flag \(last: \[\]\)"):
        wait_for(lambda: [], "the flag", timeout=0)


def test_wait_for_names_the_check_by_its_source_when_not_told() -> None:
    with pytest.raises(AssertionError, match="lambda: 1 == 2"):
        wait_for(lambda: 1 == 2, timeout=0)


def test_ignored_errors_count_as_not_yet_and_are_reported() -> None:
    calls = itertools.count()

    def up() -> bool:
        if next(calls) < 2:
            raise ConnectionError("refused")
        return True

    assert wait_for(up, "the server", ignoring=(ConnectionError,), interval=0)
    with pytest.raises(AssertionError, match="last error: ConnectionError"):
        wait_for(_refuse, "the server", timeout=0, ignoring=(ConnectionError,))
    with pytest.raises(ConnectionError):
        wait_for(_refuse, "the server", timeout=0)


def _refuse() -> bool:
    raise ConnectionError("refused")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_wait_for_async_awaits_async_checks_and_takes_sync_ones() -> None:
    counter = itertools.count()

    async def check() -> int:
        return next(counter) >= 2 and 7

    assert await wait_for_async(check, "two calls", interval=0) == 7
    assert await wait_for_async(lambda: "now", "a sync check") == "now"
    with pytest.raises(AssertionError, match="waiting for never"):
        await wait_for_async(check_never, "never", timeout=0)


async def check_never() -> bool:
    return False
