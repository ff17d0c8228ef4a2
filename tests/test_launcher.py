"""The launcher thread: launches in order, off the caller's thread, drained on demand."""

from __future__ import annotations

import os
import threading

from balloons.launcher import Launch, Launcher
from tests.waiting import wait_for


def _launch(n: int) -> Launch:
    return ("default", f"u{n}", 1, 1, 256, 60.0, False)


def test_launches_run_in_order_on_another_thread_and_drain_waits_for_them() -> None:
    gate = threading.Event()
    seen: list[tuple[str, str]] = []

    def launch(item: Launch) -> None:
        gate.wait(10)
        seen.append((item[1], threading.current_thread().name))

    launcher = Launcher(launch)
    assert not launcher.busy()
    for n in range(5):
        launcher.put(_launch(n))
    assert launcher.busy()
    assert not launcher.drain(timeout=0.05)  # held at the gate: nothing made yet
    gate.set()
    assert launcher.drain(timeout=10)
    assert [u for u, _ in seen] == ["u0", "u1", "u2", "u3", "u4"]
    assert {name for _, name in seen} == {"balloons-launcher"}
    assert not launcher.busy()


def test_with_several_workers_up_to_that_many_launches_are_made_at_once() -> None:
    gate = threading.Event()
    lock = threading.Lock()
    inside, most, seen = 0, 0, []

    def launch(item: Launch) -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        gate.wait(10)
        with lock:
            inside -= 1
            seen.append(item[1])

    launcher = Launcher(launch, workers=3)
    for n in range(7):
        launcher.put(_launch(n))
    wait_for(lambda: most >= 3, "three launches at the gate", interval=0.01)
    assert most == 3 and launcher.busy()  # three held at the gate at once, no more
    gate.set()
    assert launcher.drain(timeout=10)
    assert sorted(seen) == [f"u{n}" for n in range(7)] and most == 3
    assert not launcher.busy()


def test_a_failing_launch_does_not_stop_the_next_ones() -> None:
    seen: list[str] = []

    def launch(item: Launch) -> None:
        if item[1] == "u1":
            raise RuntimeError("API unreachable")
        seen.append(item[1])

    launcher = Launcher(launch)
    for n in range(3):
        launcher.put(_launch(n))
    assert launcher.drain(timeout=10)
    assert seen == ["u0", "u2"]
    launcher.put(_launch(3))  # a new thread starts for later launches
    assert launcher.drain(timeout=10)
    assert seen == ["u0", "u2", "u3"]


def test_a_forked_child_leaves_pending_launches_to_its_parent() -> None:
    gate = threading.Event()
    seen: list[str] = []

    def launch(item: Launch) -> None:
        gate.wait(10)
        seen.append(item[1])

    launcher = Launcher(launch)
    launcher.put(_launch(0))
    pid = os.fork()
    if pid == 0:  # the child: nothing pending here, and exiting must not wait on the parent's
        os._exit(0 if launcher.drain(timeout=5) and not launcher.busy() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert launcher.busy()
    gate.set()
    assert launcher.drain(timeout=10)
    assert seen == ["u0"]
