"""The ``balloons`` command line (also ``python -m balloons``): one module per group of
commands, each registering its commands on :data:`~balloons.cli.common.main`."""

from __future__ import annotations

# Imported for their commands, which they register on the group.
from . import jobs, machines, operations  # noqa: F401
from .common import main

__all__ = ["main"]
