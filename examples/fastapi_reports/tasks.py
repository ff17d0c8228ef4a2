"""The balloons app and the tasks of the FastAPI example.

Every job machine imports this module to find its task, so it imports balloons and the
standard library only: never FastAPI. With no ``BALLOONS_*`` variable set, ``App()`` runs an
embedded Valkey and local machines.
"""

from __future__ import annotations

import asyncio
import os
import re

import balloons

app = balloons.App()

WORD = re.compile(r"[A-Za-z']+")


@app.task(timeout=60)
async def word_count(text: str) -> dict[str, object]:
    """Count the words of ``text``, in an event loop of the job's own on its machine."""
    words = WORD.findall(text.lower())
    counts: dict[str, int] = {}
    for i, word in enumerate(words):
        counts[word] = counts.get(word, 0) + 1
        if i % 1000 == 999:
            balloons.progress(i / len(words), "counting")
            await asyncio.sleep(0)  # a long coroutine gives its loop a turn (cancel, timeout)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return {"words": len(words), "top": [w for w, _ in top], "machine_pid": os.getpid()}


@app.task(timeout=60)
def shout(text: str) -> str:
    """A plain (sync) task: both kinds mix in one app."""
    if not text:
        raise ValueError("nothing to shout")
    return text.upper() + "!"
