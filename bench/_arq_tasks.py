"""The arq task of the benchmarks and its worker settings: the queue polled every 10 ms
(``poll_delay=0.01``, arq's default is 0.5 s), Redis named by ``BENCH_ARQ_URL``."""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings

POLL_DELAY = 0.01


async def noop(ctx: dict[str, Any]) -> None:
    return None


class WorkerSettings:
    functions = [noop]  # noqa: RUF012
    poll_delay = POLL_DELAY
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("BENCH_ARQ_URL", "redis://127.0.0.1:6379/0")
    )
