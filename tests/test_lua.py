"""The scripts' text: each defines exactly the prelude functions it calls (a call of one it
does not define would fail in Redis only when that path runs)."""

from __future__ import annotations

import re

import pytest

from balloons import lua

SCRIPTS = {
    name: value
    for name, value in vars(lua).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}


def test_every_script_is_found() -> None:
    assert {"SUBMIT", "CLAIM", "TAKE", "HEARTBEAT", "FINISH", "LOST", "CANCEL"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_script_defines_the_prelude_functions_it_calls_and_no_others(name: str) -> None:
    script = SCRIPTS[name]
    prelude = set(lua._FUNCTIONS)
    assert script.startswith(lua._HEADER)
    defined = set(re.findall(r"local function (\w+)\(", script)) & prelude
    called = set(re.findall(r"(?<![\w.])(?<!function )(\w+)\(", script)) & prelude
    assert called == defined, (sorted(called - defined), sorted(defined - called))


def test_the_prelude_splits_into_its_header_and_functions() -> None:
    assert lua._HEADER + "".join(lua._FUNCTIONS.values()) == lua._PRELUDE
    assert "local function" not in lua._HEADER
    assert all(code.count("local function ") == 1 for code in lua._FUNCTIONS.values())
