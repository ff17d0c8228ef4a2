"""/metrics reads each slot entry as hostile: JSON nested deeper than the parser's recursion
limit is an unreadable entry, never an exception (which would make the scrape a 500)."""

from __future__ import annotations

from balloons.dashboard.metrics import _slot_state


def test_a_slot_entry_nested_too_deep_is_unreadable() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _slot_state(deep) is None
    assert _slot_state(b'{"state": ' + deep + b"}") is None
    assert _slot_state(b'{"state": "running"}') == "running"
