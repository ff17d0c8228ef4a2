"""The balloons task of the benchmarks, in a module of its own so that a machine imports
nothing else. The app here only registers the name: a worker needs the function and the
serializer; the benchmark binds the same function to its own configured app."""

from __future__ import annotations

import balloons

app = balloons.App()


@app.task
def noop() -> None:
    return None


@app.task
def sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


@app.task
def echo(x: object = None) -> object:
    return x
