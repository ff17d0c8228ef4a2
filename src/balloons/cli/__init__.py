"""The ``balloons`` command line (and ``python -m balloons``): one module per group of commands.

Each module registers its commands on the group, :data:`balloons.cli.common.main`.
"""

from __future__ import annotations

# Imported for their commands, which they register on the group.
from . import jobs, machines, operations, schedules, service  # noqa: F401
from .common import main

__all__ = ["main"]
