"""A machine id read from Redis cannot aim FlyBackend at another path: a forged slot entry
naming ``../../other-app/machines/ID`` stops nothing of the other app."""

from __future__ import annotations

import json
import time

import pytest

from balloons import BackendError
from balloons.store.keys import PoolKeys, pools_key

from .conftest import SAFETY_TIMEOUT, FlyRig
from .helpers import py

VICTIM = "not-balloons"


def _victim_machine(rig: FlyRig) -> str:
    client = rig.served.client
    created = client.post("/v1/apps", json={"name": VICTIM, "org_slug": "personal"})
    assert created.status_code == 201, created.text
    config = py("import time; time.sleep(600)")
    made = client.post(f"/v1/apps/{VICTIM}/machines", json={"config": config})
    assert made.status_code == 200, made.text
    machine: str = made.json()["id"]
    waited = client.get(
        f"/v1/apps/{VICTIM}/machines/{machine}/wait",
        params={"state": "started", "timeout": int(SAFETY_TIMEOUT)},
    )
    assert waited.status_code == 200, waited.text
    return machine


def test_a_forged_slot_cannot_stop_another_apps_machine(rig: FlyRig) -> None:
    victim = _victim_machine(rig)
    rig.reset_stats()
    app = rig.app()
    hostile = f"../../{VICTIM}/machines/{victim}"
    pk = PoolKeys(app.settings.namespace, "default")
    slot = f"default.{'0' * 26}-1"
    r = app.store.redis
    r.sadd(pools_key(app.settings.namespace), "default")
    r.zadd(pk.slots, {slot: time.time() + 60})
    entry = {"job": "0" * 26, "machine": hostile, "state": "running", "cancel": time.time() - 60}
    r.hset(pk.slot, slot, json.dumps(entry))
    report = app.supervisor(cancel_grace=0.0).step(gc=False)
    assert report.stopped == []
    for call in (app.backend.stop, app.backend.destroy, app.backend.inspect, app.backend.start):
        with pytest.raises(BackendError, match="a machine id is letters and digits"):
            call(hostile)
    assert rig.emulator.machines[victim].state == "started"
    assert rig.stats()["calls"] == {}  # no request left for the API
