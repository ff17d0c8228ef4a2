"""A task module that uses :mod:`logging` from its import: the worker hooks the root logger."""

from __future__ import annotations

import logging

from tests.tasks import app

log = logging.getLogger("tests.log_tasks")


@app.task(timeout=30)
def logs_a_record(text: str) -> str:
    log.info("info: %s", text)
    try:
        raise KeyError(text)
    except KeyError:
        log.exception("with a traceback")
    return text


@app.task(timeout=30)
def configures_logging(text: str) -> str:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("configured: %s", text)
    root = logging.getLogger()
    for h in root.handlers[:]:
        if type(h) is logging.StreamHandler:
            root.removeHandler(h)  # this process runs more jobs: leave it as it was
    return text
