"""The app ``bench/service.py`` serves (``balloons serve -A _service_app``): its settings come
from the environment the benchmark gives the service process."""

from __future__ import annotations

import time

import balloons

app = balloons.App()
app.pool("svc", max_machines=2, idle_timeout=30)


@app.task(pool="svc", timeout=60)
def noop() -> None:
    return None


@app.task(pool="svc", timeout=60)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
