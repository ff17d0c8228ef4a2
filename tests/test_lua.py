"""The scripts' text: each defines exactly the prelude functions it calls (a call of one it
does not define would fail in Redis only when that path runs)."""

from __future__ import annotations

import re

import pytest

from balloons import keys, lua

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
    script = SCRIPTS[name].removeprefix(lua._FINDS_JOBS)
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


def test_the_scripts_key_names_are_the_ones_keys_py_gives_them_in_that_order() -> None:
    pk = keys.PoolKeys("ns", "pool")
    given = keys.script_keys(pk, "u1", "u1", "", "u2", idem="d")
    pool_part = [getattr(pk, name) for name in keys.POOL_SCRIPT_KEYS]
    jobs_part = [getattr(pk, method)(u) for u in ("u1", "u2") for _, method in keys.JOB_SCRIPT_KEYS]
    assert given == [*pool_part, *jobs_part, pk.idem("d")]
    header = [line for line in lua._HEADER.splitlines() if "KEYS[" in line]
    assert header == [
        f"local {name.upper()} = KEYS[{i}]" for i, name in enumerate(keys.POOL_SCRIPT_KEYS, 1)
    ]


def test_no_script_spells_a_key_name_of_its_own() -> None:
    """Key names come from KEYS, or from the prelude's functions made from keys.py's forms,
    the only code that joins the pool's tag to anything."""
    makers = {f"local function {fn}(u) return T..'" for fn, _ in keys.JOB_SCRIPT_KEYS}
    makers.add(f"local function {keys.IDEM_SCRIPT_KEY[0]}(u) return T..'")
    for name, script in SCRIPTS.items():
        for line in script.splitlines():
            if "T.." in line:
                assert any(line.startswith(m) for m in makers), (name, line)
    pk = keys.PoolKeys("NS", "POOL")
    for fn, method in (*keys.JOB_SCRIPT_KEYS, keys.IDEM_SCRIPT_KEY):
        line = lua._FUNCTIONS[fn]
        suffix = re.search(r"T\.\.'([^']*)'\.\.u end", line)
        assert suffix, line
        assert pk.tag + suffix.group(1) + "U" == getattr(pk, method)("U")
