"""Standby machines on the Fly emulator served over real HTTP, with real worker processes.

A pool with ``standby=N`` creates its machines with ``auto_destroy: false``; a machine whose
worker idles out stops and is kept in the pool's standby set, and the next launch starts it
(``POST .../start``) instead of creating one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import balloons
from balloons.cli import main as cli
from balloons.fly.emulator import Faults
from balloons.fly.ratelimit import Limit, RateLimiter
from balloons.ids import ulid
from balloons.store import lua
from balloons.store.keys import PoolKeys
from balloons.task import TaskOptions
from tests import tasks
from tests.waiting import wait_for

from .conformance import ConformantTransport
from .conftest import JOBS_APP, JOBS_IMAGE, SAFETY_TIMEOUT, TOKEN, FlyRig

CREATE = "POST /v1/apps/{app_name}/machines"
START = "POST /v1/apps/{app_name}/machines/{machine_id}/start"
POOL = "sb"


def open_limiter() -> RateLimiter:
    """A client limiter that never waits: these tests count calls, not pace them."""
    return RateLimiter(limits={}, default=Limit(rate=1000.0, burst=1000.0))


_HTTP: list[httpx.Client] = []


def standby_app(rig: FlyRig, standby: int = 4, cap: int = 4, **pool: Any) -> balloons.App:
    http = httpx.Client(
        transport=ConformantTransport(httpx.HTTPTransport(), rig.conformance), timeout=60
    )
    _HTTP.append(http)
    app = rig.app(backend=rig.backend(limiter=open_limiter(), http=http))
    app.pool(POOL, max_machines=cap, idle_timeout=0, standby=standby, **pool)
    return app


def on(app: balloons.App, task: balloons.Task[Any, Any]) -> balloons.Task[Any, Any]:
    return balloons.Task(app, task.fn, task.name, TaskOptions(pool=POOL, timeout=30))


def pk(app: balloons.App) -> PoolKeys:
    return PoolKeys(app.settings.namespace, POOL)


def calls(rig: FlyRig) -> dict[str, int]:
    """The API calls that change something (the tests' own listings are GETs)."""
    return {k: v for k, v in rig.stats()["calls"].items() if not k.startswith("GET ")}


def live(rig: FlyRig) -> dict[str, str]:
    """The app's machines that are not destroyed: id -> state."""
    return {m["id"]: m["state"] for m in rig.machines()}


def park(rig: FlyRig, app: balloons.App, n: int) -> set[str]:
    """Run ``n`` overlapping jobs (a machine each, as the launcher is never held), then wait
    until every machine stopped on standby (one that booted late and found no job too)."""
    jobs = [on(app, tasks.sleep).submit(1.0) for _ in range(n)]
    for job in jobs:
        job.result(timeout=SAFETY_TIMEOUT)
    wait_for(lambda: set(live(rig).values()) == {"stopped"}, "stopped machines")
    machines = set(live(rig))
    assert len(machines) == n
    wait_for(lambda: set(app.store.standby(pk(app))) == machines, "machines on standby")
    return machines


def starts(rig: FlyRig, machine: str) -> int:
    """How many times the machine's process was started (its first boot included)."""
    return sum(1 for e in rig.emulator.machines[machine].events if e.type == "start")


@pytest.fixture
def cleanup() -> Iterator[list[tuple[FlyRig, balloons.App]]]:
    """Apps whose standby machines the test leaves behind: emptied and destroyed after it."""
    made: list[tuple[FlyRig, balloons.App]] = []
    yield made
    for rig, app in made:
        # A machine that has just finished its job may go back on standby after a pass: pass
        # again until none is left.
        def collected(app: balloons.App = app, rig: FlyRig = rig) -> bool:
            app.supervisor(orphan_min_age=0).collect_orphans(standby=True, wait=SAFETY_TIMEOUT)
            return not rig.machines()

        wait_for(collected, "the orphan sweep to destroy every machine", interval=0.2)
        rig.wait_all_destroyed()
        app.close()
    while _HTTP:
        _HTTP.pop().close()


def test_an_idle_machine_stops_on_standby_and_the_next_job_starts_it(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    app = standby_app(rig)
    cleanup.append((rig, app))
    first = on(app, tasks.add).submit(2, 3)
    assert first.result(timeout=SAFETY_TIMEOUT) == 5
    machine = first.info().machine_id or ""
    config = rig.emulator.machines[machine].config
    assert config["auto_destroy"] is False and config["restart"] == {"policy": "no"}
    handoff = config["env"]["BALLOONS_JOB"]
    assert handoff.startswith(f"{POOL}.") and handoff.endswith("/0")  # the machine's own slot
    assert config["env"]["BALLOONS_STANDBY"] == "1"
    # Its worker idles out (idle_timeout=0), exits 0, and the machine stops on standby.
    wait_for(lambda: live(rig) == {machine: "stopped"}, "the machine to stop")
    assert list(app.store.standby(pk(app))) == [machine]
    events = rig.emulator.machines[machine].events
    assert [e.request["exit_event"]["exit_code"] for e in events if e.type == "exit"] == [0]
    assert calls(rig) == {CREATE: 1}

    rig.reset_stats()
    second = on(app, tasks.add).submit(4, 5)
    assert second.result(timeout=SAFETY_TIMEOUT) == 9
    assert second.info().machine_id == machine
    assert calls(rig) == {START: 1}  # no create
    wait_for(lambda: live(rig) == {machine: "stopped"}, "the machine to stop again")
    assert list(app.store.standby(pk(app))) == [machine]
    assert app.store.pool_stats(POOL)["standby"] == 1


def test_concurrent_launches_never_start_one_machine_twice_and_the_cap_holds(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    app = standby_app(rig, standby=4, cap=4)
    cleanup.append((rig, app))
    parked = park(rig, app, 4)
    rig.reset_stats()
    # Eight launchers (apps of their own, each with its connections) submit at once.
    apps = [standby_app(rig, standby=4, cap=4) for _ in range(8)]
    gate = threading.Barrier(len(apps))
    jobs: list[balloons.Job[Any]] = []
    lock = threading.Lock()
    most = [0]
    stop = threading.Event()

    def submit(a: balloons.App) -> None:
        gate.wait(SAFETY_TIMEOUT)
        job = on(a, tasks.sleep).submit(0.5)
        with lock:
            jobs.append(job)

    def watch() -> None:
        while not stop.is_set():
            most[0] = max(most[0], int(app.store.redis.zcard(pk(app).slots)))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=submit, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAFETY_TIMEOUT)
    for job in jobs:
        job.result(timeout=SAFETY_TIMEOUT)
    stop.set()
    watcher.join()
    assert len(jobs) == 8
    assert most[0] <= 4
    made = calls(rig)
    ran_on = {job.info().machine_id for job in jobs}
    started = {m for m in parked if starts(rig, m) > 1}
    assert ran_on <= started  # every job ran on a machine started from standby
    assert CREATE not in made
    assert made[START] == len(started)  # one start per machine, never a second
    for machine in parked:
        assert starts(rig, machine) <= 2, f"machine {machine} was started twice"
    for a in apps:
        a.close()
    wait_for(lambda: set(app.store.standby(pk(app))) == parked, "machines back on standby")


def test_a_machine_destroyed_behind_balloons_back_falls_back_to_a_create(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    app = standby_app(rig)
    cleanup.append((rig, app))
    (gone,) = park(rig, app, 1)
    deleted = rig.served.client.delete(f"/v1/apps/{JOBS_APP}/machines/{gone}")
    assert deleted.status_code == 200, deleted.text
    rig.reset_stats()
    job = on(app, tasks.add).submit(1, 1)
    assert job.result(timeout=SAFETY_TIMEOUT) == 2
    assert job.info().machine_id != gone
    # The start is refused (the machine is destroyed), then the create.
    assert calls(rig) == {START: 1, CREATE: 1}
    new = job.info().machine_id or ""
    wait_for(lambda: list(app.store.standby(pk(app))) == [new], "the new machine on standby")


def test_a_start_that_keeps_failing_drops_the_machine_and_creates_one(
    make_rig: Any, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    rig = make_rig(faults=Faults(seed=3))
    app = standby_app(rig)
    cleanup.append((rig, app))
    (refused,) = park(rig, app, 1)
    rig.emulator.faults.faults = Faults(seed=3, error_rates={"start": 1.0})
    rig.reset_stats()
    job = on(app, tasks.add).submit(1, 2)
    assert job.result(timeout=SAFETY_TIMEOUT) == 3
    made = calls(rig)
    assert made[CREATE] == 1 and made[START] >= 1
    # The machine that would not start is destroyed, not left to cost rootfs.
    wait_for(lambda: refused not in live(rig), "the refused machine to be destroyed")
    assert refused not in app.store.standby(pk(app))


def test_a_started_standby_machine_that_never_boots_is_reclaimed_by_the_boot_probe(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    app = standby_app(rig)
    cleanup.append((rig, app))
    (machine,) = park(rig, app, 1)
    # A warm-floor slot taken by a launcher that gave the machine its slot, then died before
    # its start call: the slot waits for a machine that stays stopped.
    app.store.redis.hset(pk(app).cfg, "min", 1)
    floor = ulid()
    flat = app.store.eval(lua.SCALE_UP, pk(app), floor)
    assert flat[0] == f"{floor}-0".encode()
    got = app.store.pick_machine(pk(app), f"{floor}-0", ulid())
    assert got is not None and got.start and got.machine == machine
    app.store.redis.hset(pk(app).cfg, "min", 0)
    report = app.supervisor(boot_probe=0.0).step(gc=False)
    assert [slot for slot, _ in report.reclaimed] == [f"{got.own}-0"]
    wait_for(lambda: machine not in live(rig), "the machine to be destroyed")
    assert app.store.pool_stats(POOL)["machines"] == 0


def test_gc_destroys_stopped_machines_beyond_the_standby_set_and_empties_it_on_request(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    app = standby_app(rig, standby=1, cap=3)
    cleanup.append((rig, app))
    jobs = [on(app, tasks.sleep).submit(1.0) for _ in range(3)]
    for job in jobs:
        job.result(timeout=SAFETY_TIMEOUT)
    wait_for(lambda: set(live(rig).values()) == {"stopped"}, "stopped machines")
    machines = set(live(rig))
    assert len(machines) == 3
    wait_for(lambda: len(app.store.standby(pk(app))) == 1, "one machine on standby")
    kept = set(app.store.standby(pk(app)))
    assert len(kept) == 1 and kept < machines  # one kept, the others stopped for good
    sup = app.supervisor(orphan_min_age=0)
    would = {m.id for m in sup.collect_orphans(dry_run=True)}
    assert would == machines - kept
    assert set(live(rig)) == machines  # a dry run destroys nothing
    assert {m.id for m in sup.collect_orphans(wait=SAFETY_TIMEOUT)} == machines - kept
    wait_for(lambda: set(live(rig)) == kept, "the machines beyond the standby set destroyed")
    # A pool set to no standby gives its stopped machines up at the next sweep.
    app.pool(POOL, max_machines=3, idle_timeout=0, standby=0)
    on(app, tasks.add).submit(0, 0).result(timeout=SAFETY_TIMEOUT)  # stores the setting
    wait_for(lambda: set(live(rig).values()) <= {"stopped"}, "stopped machines")
    sup.collect_orphans(wait=SAFETY_TIMEOUT)
    wait_for(lambda: not live(rig), "every machine destroyed")
    assert app.store.standby(pk(app)) == {}


def test_gc_standby_empties_the_set(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    app = standby_app(rig)
    cleanup.append((rig, app))
    parked = park(rig, app, 2)
    sup = app.supervisor(orphan_min_age=0)
    assert sup.collect_orphans(wait=SAFETY_TIMEOUT) == []  # kept on standby: nothing to destroy
    env = {
        "BALLOONS_BACKEND": "fly", "FLY_API_TOKEN": TOKEN, "BALLOONS_FLY_APP": JOBS_APP,
        "BALLOONS_FLY_API_URL": rig.served.base_url, "BALLOONS_FLY_IMAGE": JOBS_IMAGE,
    }  # fmt: skip
    pools = CliRunner().invoke(cli, ["pools", "--json"], env=env)
    assert pools.exit_code == 0, pools.output
    (row,) = json.loads(pools.output)
    assert (row["standby"], row["standby_max"]) == (len(parked), 4)
    dry = CliRunner().invoke(cli, ["gc", "--standby", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    assert {m["id"] for m in json.loads(dry.output)} == parked
    assert set(app.store.standby(pk(app))) == parked  # a dry run changes nothing
    out = CliRunner().invoke(cli, ["gc", "--standby"], env=env)
    assert out.exit_code == 0, out.output
    assert f"{len(parked)} machine(s) destroyed" in out.output
    wait_for(lambda: not live(rig), "every machine destroyed")
    assert app.store.standby(pk(app)) == {}


def test_start_waits_for_a_machine_still_on_its_way_down(rig: FlyRig) -> None:
    """A machine is put on standby by its worker just before it exits: a launch may take it
    while it still runs. The start is refused (412), waits for the machine to stop (``/wait``
    on its version), then starts it."""
    backend = rig.backend()
    app = rig.app(backend=backend)  # binds the backend
    assert app.backend is backend
    marker = "import os, time; open('runs.txt', 'a').write('run' + chr(10)); time.sleep(1)"
    config = {
        "image": "emu/python", "init": {"exec": ["python", "-c", marker]},
        "auto_destroy": False, "restart": {"policy": "no"},
    }  # fmt: skip
    created = rig.served.client.post(f"/v1/apps/{JOBS_APP}/machines", json={"config": config})
    assert created.status_code == 200, created.text
    machine = created.json()["id"]
    wait_for(lambda: live(rig) == {machine: "started"}, "the machine to run")
    rig.reset_stats()
    backend.start(machine)  # while it still runs
    made = calls(rig)
    assert made[START] == 2  # refused while running, then accepted once stopped
    root = rig.emulator.machine_dir(machine) / "root"
    wait_for(lambda: (root / "runs.txt").read_text().count("run") == 2, "a second run")
    wait_for(lambda: live(rig) == {machine: "stopped"}, "the machine to stop")
    backend.destroy(machine)
    rig.wait_all_destroyed()
    app.close()


def test_standby_machines_are_started_several_at_once(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    """Starts are limited per machine, not per app: the launcher makes several at once (here
    three, held together at a gate), while creates stay one at a time."""
    gate = threading.Event()
    lock = threading.Lock()
    inside, most = 0, 0

    class GatedStarts(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner = inner

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal inside, most
            if request.method != "POST" or not request.url.path.endswith("/start"):
                return self.inner.handle_request(request)
            with lock:
                inside += 1
                most = max(most, inside)
            gate.wait(SAFETY_TIMEOUT)
            try:
                return self.inner.handle_request(request)
            finally:
                with lock:
                    inside -= 1

    http = httpx.Client(
        transport=GatedStarts(ConformantTransport(httpx.HTTPTransport(), rig.conformance)),
        timeout=60,
    )
    _HTTP.append(http)
    app = rig.app(backend=rig.backend(limiter=open_limiter(), http=http))
    app.pool(POOL, max_machines=3, idle_timeout=0, standby=3)
    cleanup.append((rig, app))
    machines = park(rig, app, 3)
    rig.reset_stats()
    jobs = [on(app, tasks.sleep).submit(0.5) for _ in range(3)]
    wait_for(lambda: most == 3, "three starts in flight at once")
    gate.set()
    assert [j.result(timeout=SAFETY_TIMEOUT) for j in jobs] == [0.5] * 3
    assert {j.info().machine_id for j in jobs} <= machines
    assert calls(rig) == {START: 3}  # started, none created


def test_a_standby_record_written_into_redis_sizes_no_machine(
    rig: FlyRig, cleanup: list[tuple[FlyRig, balloons.App]]
) -> None:
    """A launch picks the standby record that fits the slot; when its machine cannot be
    started (here: none exists), the machine created in its place is the launch's size, not
    the size the record names."""
    app = standby_app(rig, standby=1, cap=2)
    cleanup.append((rig, app))
    rec = {"slot": "01jd3x9k2m8vq4t7w0c5r6y1zh", "cpus": 8, "mem": 16384, "since": 0}
    app.store.redis.hset(pk(app).standby, "d8e7f6a5b4c3d2", json.dumps(rec))
    rig.reset_stats()
    job = on(app, tasks.add).submit(1, 2)
    assert job.result(timeout=SAFETY_TIMEOUT) == 3
    assert calls(rig).get(CREATE) == 1
    (made,) = rig.machines()
    assert made["config"]["guest"]["cpus"] == 1 and made["config"]["guest"]["memory_mb"] == 256
    # Its slot said so too: the machine is kept on standby as the size it has.
    wait_for(lambda: made["id"] in app.store.standby(pk(app)), "the new machine on standby")
    kept = app.store.standby(pk(app))[made["id"]]
    assert (kept.get("cpus"), kept.get("mem")) == (1, 256), kept
