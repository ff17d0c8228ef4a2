"""The service's JSON answers: whatever a string read from Redis holds, an answer renders.

A JSON string may spell a lone UTF-16 surrogate (``"\\ud800"``): Python reads it into a ``str``
that has no UTF-8 form, so a label, a result or an error message altered in Redis (or sent by
a machine) would make ``.encode()`` raise, and every read of that job, or of a listing that
holds it, a 500. Here such a character becomes ``?``; every other answer is byte for byte
Starlette's.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSON


def dumps(doc: Any) -> bytes:
    """``doc`` as compact UTF-8 JSON, a lone surrogate written as ``?``."""
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8", "replace")


class JSONResponse(_StarletteJSON):
    """Starlette's ``JSONResponse`` that renders a lone surrogate as ``?`` rather than fail."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:  # only a lone surrogate has no UTF-8 form
            return dumps(content)
