"""An app declaring one schedule, for the CLI test of ``balloons schedules``."""

from __future__ import annotations

import balloons
from tests import schedule_tasks

app = balloons.App()
app.schedule(schedule_tasks.report, cron="0 * * * *", args=("hourly",), name="hourly")
