"""The balloons app, made from Django's settings, and the example's task.

Job machines import this module to find the task: it reads ``settings.BALLOONS`` (which
needs ``DJANGO_SETTINGS_MODULE``, passed on to machines by the settings' ``env_allowlist``)
but never sets Django up: no app registry, no database, no middleware on a machine.
"""

from __future__ import annotations

import os

from django.conf import settings

import balloons

app = balloons.App(**settings.BALLOONS)


@app.task(timeout=60, retries=1, retry_backoff=0)
def fibonacci(n: int) -> dict[str, int]:
    """The ``n``-th Fibonacci number, computed on a machine of its own."""
    if n < 0:
        raise ValueError(f"n must be 0 or more, got {n}")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return {"n": n, "value": a, "machine_pid": os.getpid()}
