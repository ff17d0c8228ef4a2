"""Tasks the schedule tests declare schedules of (each test in an App of its own, so that a
supervisor submits only that test's schedules)."""

from __future__ import annotations

import balloons

app = balloons.App()
app.pool("sched", max_machines=4, idle_timeout=0.5)


@app.task(pool="sched", timeout=30)
def report(kind: str) -> str:
    return kind
