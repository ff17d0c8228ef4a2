"""Quickstart: several jobs, each on a fresh local machine, with live status.

Run it with ``scripts/quickstart`` (or ``.venv/bin/python examples/quickstart.py``). It uses
the embedded default: a private Valkey server under ~/.local/state/balloons and one local
process per job. Nothing else to install or configure.
"""

from __future__ import annotations

import hashlib
import os
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

import balloons

app = balloons.App()


@app.task(cpus=1, memory_mb=256, timeout=60)
def fingerprint(text: str, rounds: int) -> dict[str, object]:
    """A little CPU work, reporting which machine (process) did it."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return {"text": text, "sha256": digest.hex()[:16], "machine_pid": os.getpid()}


@app.task(timeout=60)
def divide(a: float, b: float) -> float:
    return a / b


def table(jobs: list[tuple[str, balloons.Job[object]]], results: dict[str, str]) -> Table:
    t = Table(title="balloons quickstart: one fresh machine per job")
    for col in ("job", "status", "machine", "result"):
        t.add_column(col, no_wrap=col != "result")
    for label, job in jobs:
        info = job.info()
        t.add_row(label, info.status.value, info.machine_id or "-", results.get(job.id, ""))
    return t


def main() -> None:
    console = Console()
    start = time.perf_counter()
    jobs: list[tuple[str, balloons.Job[object]]] = [
        (f"fingerprint({word!r})", fingerprint.submit(word, 100_000 * (i + 1)))
        for i, word in enumerate(["balloons", "fly", "redis", "valkey"])
    ]
    jobs.append(("divide(1, 0)", divide.submit(1, 0)))
    results: dict[str, str] = {}
    with Live(table(jobs, results), console=console, refresh_per_second=10) as live:
        while len(results) < len(jobs):
            for _, job in jobs:
                if job.id in results or not job.status().terminal:
                    continue
                try:
                    value = job.result(timeout=1)
                    results[job.id] = (
                        f"{value['sha256']} (pid {value['machine_pid']})"
                        if isinstance(value, dict)
                        else str(value)
                    )
                except balloons.JobFailed as exc:
                    results[job.id] = f"{exc.error_type}: {exc.error_message}"
            live.update(table(jobs, results))
            time.sleep(0.05)  # display refresh only; results themselves arrive by wake-up
    if not console.is_terminal:
        console.print()  # Live leaves its last frame without a newline off a terminal
    console.print(
        f"{len(jobs)} jobs on {len(jobs)} fresh machines in {time.perf_counter() - start:.2f}s"
    )
    console.print("Try: .venv/bin/balloons jobs    .venv/bin/balloons dev status")


if __name__ == "__main__":
    main()
