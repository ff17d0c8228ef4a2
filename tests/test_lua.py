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
    defined = set(re.findall(r"local function (\w+)\(", script)) & prelude
    called = set(re.findall(r"(?<![\w.])(?<!function )(\w+)\(", script)) & prelude
    assert called == defined, (sorted(called - defined), sorted(defined - called))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_script_starts_with_the_header_lines_of_the_key_names_it_uses(name: str) -> None:
    script = SCRIPTS[name]
    header = {
        line.split()[1]: line for line in lua._HEADER.splitlines(keepends=True) if line.strip()
    }
    used = set(re.findall(r"(?<![\w.'])([A-Z]+)(?![\w'])", script)) & set(header)
    start = "".join(line for var, line in header.items() if var in used | {"T"})
    assert script.startswith(start)
    # and no other: every definition runs on every call
    rest = script[len(start) :]
    assert not any(line in rest for line in header.values())


def test_a_deferred_function_is_defined_only_where_the_body_asks() -> None:
    script = lua._script("jk", "local function later()\n--@later\nend\n", later="need_of")
    assert script.index("local function need_of(") > script.index("local function later(")
    assert "--@later" not in script
    assert "local function cfg(" not in script


def test_the_prelude_splits_into_its_header_and_functions() -> None:
    assert lua._HEADER + "".join(lua._FUNCTIONS.values()) == lua._PRELUDE
    assert "local function" not in lua._HEADER
    assert all(code.count("local function ") == 1 for code in lua._FUNCTIONS.values())
