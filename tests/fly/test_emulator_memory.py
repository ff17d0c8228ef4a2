"""``guest.memory_mb``: RLIMIT_DATA makes allocations fail; the RSS watchdog OOM-kills."""

from __future__ import annotations

import httpx
import pytest

from .helpers import exit_events, launch, new_app, output, py, wait_state

pytestmark = pytest.mark.anyio

# Shared anonymous memory is not counted by RLIMIT_DATA but is resident once touched, so
# only the watchdog can catch this program.
GROW_RSS = """
import mmap, time
size = 512 * 1024 * 1024
block = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
for offset in range(0, size, 4096):
    block[offset] = 1
print('survived', flush=True)
time.sleep(600)
"""

ALLOCATE = """
try:
    hog = bytearray(512 * 1024 * 1024)
except MemoryError:
    print('MemoryError', flush=True)
    raise SystemExit(3)
print('allocated', flush=True)
"""


async def test_watchdog_kills_a_machine_over_its_memory(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = py(GROW_RSS, guest={"memory_mb": 64}, restart={"policy": "no"})
    machine = await launch(client, app, config)
    await wait_state(client, app, machine["id"], "stopped")
    [exit_event] = await exit_events(client, app, machine["id"])
    assert exit_event["oom_killed"] is True
    assert exit_event["signal"] == 9
    assert exit_event["exit_code"] == 137
    assert "survived" not in await output(client, machine["id"])


async def test_rlimit_makes_allocation_fail_inside_the_program(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = py(ALLOCATE, guest={"memory_mb": 64}, restart={"policy": "no"})
    machine = await launch(client, app, config)
    await wait_state(client, app, machine["id"], "stopped")
    [exit_event] = await exit_events(client, app, machine["id"])
    assert "MemoryError" in await output(client, machine["id"])
    # The program handled it and exited by itself: not an OOM kill (see procs.py).
    assert exit_event["exit_code"] == 3
    assert exit_event["oom_killed"] is False


async def test_within_its_memory_a_machine_runs(client: httpx.AsyncClient) -> None:
    app = await new_app(client)
    config = py(ALLOCATE, guest={"memory_mb": 1024}, restart={"policy": "no"})
    machine = await launch(client, app, config)
    await wait_state(client, app, machine["id"], "stopped")
    assert "allocated" in await output(client, machine["id"])
