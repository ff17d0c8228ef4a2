"""The tasks of the example job service (``python -m balloons.service -A
examples.service.tasks``). Any language submits them over HTTP::

    curl -X POST https://balloons-service.fly.dev/v1/jobs \\
      -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \\
      -d '{"task": "examples.service.tasks:word_count", "args": ["to be or not to be"]}'

Each runs on a Fly Machine of its own in the jobs app, with the service's image.
"""

from __future__ import annotations

from collections import Counter

import balloons

app = balloons.App()


@app.task(timeout=60, retries=2)
def word_count(text: str) -> dict[str, int]:
    """How often each word of ``text`` occurs."""
    return dict(Counter(text.lower().split()))
