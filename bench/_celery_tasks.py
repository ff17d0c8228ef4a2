"""The Celery task of the benchmarks. The worker's broker and result backend are the same
Valkey, named by ``BENCH_CELERY_URL``; a benchmark makes a client app of its own per run with
:func:`make_app` and sends the task by name."""

from __future__ import annotations

import os

from celery import Celery

NOOP = "_celery_tasks.noop"


def make_app(url: str) -> Celery:
    return Celery(
        "bench_celery",
        broker=url,
        backend=url,
        set_as_current=False,
        config_source={
            "broker_connection_retry_on_startup": True,
            "worker_hijack_root_logger": False,
            "worker_redirect_stdouts": False,
        },
    )


app = make_app(os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/0"))


@app.task(name=NOOP)
def noop() -> None:
    return None


ECHO = "_celery_tasks.echo"


@app.task(name=ECHO)
def echo(x: object) -> object:
    return x
