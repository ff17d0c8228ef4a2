"""``python -m django balloons_supervise``: run balloons' supervisor for this project's app.

For the jobs nobody waits on (a supervisor launches machines for delayed jobs and retries,
keeps warm floors and reclaims machines that died). Run one (or several: they never do double
work) beside the web server, from the same code: it launches machines for its own version's
jobs only.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import tasks


class Command(BaseCommand):
    help = "Run balloons' supervisor: reclaim dead machines, launch for queued work."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds per step.")
        parser.add_argument("--once", action="store_true", help="Run one step and exit.")

    def handle(self, *args: Any, interval: float, once: bool, **options: Any) -> None:
        supervisor = tasks.app.supervisor(interval=interval)
        if once:
            report = supervisor.step(gc=True)
            self.stdout.write(
                json.dumps({"reclaimed": report.reclaimed, "launched": report.launched})
            )
            return
        self.stdout.write(f"supervising every {interval:g}s; Ctrl-C to stop")
        try:
            supervisor.run_forever()
        except KeyboardInterrupt:
            supervisor.stop()
