"""The scripts' loader: every ``.lua`` file loads, each script defines exactly the prelude
functions and key names it uses (a call of one it does not define would fail in Redis only when
that path runs), the key names are keys.py's, the defaults Python's, and every reply code is
documented in the script's header."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import redis

from balloons import config, pools
from balloons.store import keys, lua

LUA_DIR = os.path.dirname(lua.__file__)
SCRIPTS = {name: getattr(lua, name) for name in lua.NAMES}
PRELUDE = lua._parts()


def test_every_file_is_a_script_and_every_script_a_file() -> None:
    files = {f.removesuffix(".lua") for f in os.listdir(LUA_DIR) if f.endswith(".lua")}
    assert files == {name.lower() for name in lua.NAMES} | {"prelude"}
    assert {"SUBMIT", "CLAIM", "TAKE", "HEARTBEAT", "FINISH", "LOST", "CANCEL"} <= set(SCRIPTS)


def test_an_unknown_script_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NO_SUCH_SCRIPT"):
        lua.NO_SUCH_SCRIPT  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("name", lua.NAMES)
def test_every_script_compiles_in_valkey(r: redis.Redis, name: str) -> None:
    digest = r.script_load(SCRIPTS[name])
    assert digest == lua.sha(SCRIPTS[name]) == hashlib.sha1(SCRIPTS[name].encode()).hexdigest()


@pytest.mark.parametrize("name", lua.NAMES)
def test_a_script_defines_the_prelude_functions_it_calls_and_no_others(name: str) -> None:
    script = SCRIPTS[name]
    prelude = set(PRELUDE.functions)
    defined = set(re.findall(r"local function (\w+)\(", script)) & prelude
    called = set(re.findall(r"(?<![\w.])(?<!function )(\w+)\(", script)) & prelude
    assert called == defined, (sorted(called - defined), sorted(defined - called))
    assert all(script.count(f"local function {f}(") == 1 for f in defined)


@pytest.mark.parametrize("name", lua.NAMES)
def test_a_script_starts_with_the_header_lines_of_the_key_names_it_uses(name: str) -> None:
    script = SCRIPTS[name].removeprefix(lua.FINDS_JOBS)
    header = dict(PRELUDE.header)
    used = set(re.findall(r"(?<![\w.'])([A-Z]+)(?![\w'])", lua._code(script))) & set(header)
    start = "".join(line for var, line in header.items() if var in used | {"T"})
    assert script.startswith(start)
    # and no other: every definition runs on every call
    rest = script[len(start) :]
    assert not any(line in rest for line in header.values())


@pytest.mark.parametrize("name", lua.NAMES)
def test_a_script_is_sent_without_its_documentation_or_the_loaders_marks(name: str) -> None:
    script = SCRIPTS[name]
    first = script.partition("\n")[0]
    assert first.startswith("local ") or first + "\n" == lua.FINDS_JOBS
    assert "--@" not in script and "@" not in script.replace("'@'", "")
    assert f"-- {name}:" not in script


def test_the_finds_jobs_line_is_kept_first() -> None:
    finders = {name for name, text in SCRIPTS.items() if text.startswith(lua.FINDS_JOBS)}
    # and those that end a job (a job's callback record and its pool's outbox: hook_end), or
    # deliver its callback
    enders = {"CLAIM", "FINISH", "LOST", "CANCEL"}
    hooks = {"HOOK_REGISTER", "HOOK_CLAIM", "HOOK_RECORD"}
    submitters = {"SUBMIT", "SUBMIT_MANY"}
    assert finders == {*submitters, "TAKE", "SCALE_UP", "PICK_MACHINE", "STRANDED", *enders, *hooks}


def test_a_define_line_puts_the_functions_it_names_there_and_no_sooner() -> None:
    text = (
        "-- doc\n\nlocal u = jk('x')\nlocal function later()\n  --@define need_of\n"
        "  return need_of\nend\n"
    )
    script = lua.link(text)
    assert script.index("local function need_of(") > script.index("local function later(")
    assert script.index("local function jk(") < script.index("local function later(")
    assert script.count("local function jk(") == 1  # need_of calls it: defined once, on top
    assert "--@define" not in script and "-- doc" not in script
    assert "local function cfg(" not in script


def test_a_function_named_only_in_a_comment_is_not_defined() -> None:
    script = lua.link("local x = 1  -- not take_slot(x)\n-- nor cfg(x)\nreturn x\n")
    assert "local function" not in script


def test_submit_defines_its_slow_path_functions_only_inside_slow() -> None:
    top, _, _ = SCRIPTS["SUBMIT"].partition("local function slow()")
    # The hot path's own: the job's key, the idempotency key, and the wake-up of the idle
    # machines of the job's compatibility tag.
    assert re.findall(r"local function (\w+)\(", top) == ["jk", "idem", "wk", "wake"]


def test_the_prelude_splits_into_its_header_and_functions() -> None:
    assert [name for name, _ in PRELUDE.header][:2] == ["T", "NOW"]
    assert all(code.count("local function ") == 1 for code in PRELUDE.functions.values())
    for name, code in PRELUDE.functions.items():
        assert f"local function {name}(" in code


def test_the_scripts_key_names_are_the_ones_keys_py_gives_them_in_that_order() -> None:
    pk = keys.PoolKeys("ns", "pool")
    given = keys.script_keys(pk, "u1", "u1", "", "u2", idem="d")
    pool_part = [getattr(pk, name) for name in keys.POOL_SCRIPT_KEYS]
    jobs_part = [getattr(pk, method)(u) for u in ("u1", "u2") for _, method in keys.JOB_SCRIPT_KEYS]
    assert given == [*pool_part, *jobs_part, pk.idem("d")]
    header = [line for _, line in PRELUDE.header if "KEYS[" in line]
    assert header == [
        f"local {name.upper()} = KEYS[{i}]\n" for i, name in enumerate(keys.POOL_SCRIPT_KEYS, 1)
    ]


def test_the_generated_job_key_functions_make_keys_py_names() -> None:
    pk = keys.PoolKeys("NS", "POOL")
    for fn, method in (*keys.JOB_SCRIPT_KEYS, keys.IDEM_SCRIPT_KEY):
        line = PRELUDE.functions[fn]
        suffix = re.search(r"T\.\.'([^']*)'\.\.u end", line)
        assert suffix, line
        assert pk.tag + suffix.group(1) + "U" == getattr(pk, method)("U")


def test_no_file_spells_a_key_name_of_its_own() -> None:
    """Key names come from KEYS, or from the prelude's functions generated from keys.py's
    forms, the only code that joins the pool's tag to anything: no file holds a layout."""
    pk = keys.PoolKeys("", "")
    suffixes = {getattr(pk, m)("").removeprefix(pk.tag) for _, m in keys.JOB_SCRIPT_KEYS}
    suffixes |= {getattr(pk, name).removeprefix(pk.tag) for name in keys.POOL_SCRIPT_KEYS}
    suffixes |= {pk.hook("").removeprefix(pk.tag), pk.outbox.removeprefix(pk.tag)}
    for f in os.listdir(LUA_DIR):
        if not f.endswith(".lua"):
            continue
        with open(os.path.join(LUA_DIR, f)) as fh:
            code = lua._code(fh.read())
        assert "KEYS[" not in code and "T.." not in code, f
        assert not [s for s in suffixes if f"'{s}" in code or f'"{s}' in code], f
    makers = {f"local function {fn}(u) return T..'" for fn, _ in keys.JOB_SCRIPT_KEYS}
    makers.add(f"local function {keys.IDEM_SCRIPT_KEY[0]}(u) return T..'")
    makers.add(f"local function {keys.WAKE_SCRIPT_KEY[0]}(u) return T..'")
    makers.add(f"local function {keys.HOOK_SCRIPT_KEY[0]}(u) return T..'")
    makers.add(f"local {keys.OUTBOX_SCRIPT_KEY[0]} = T..'")
    for name, script in SCRIPTS.items():
        for line in script.splitlines():
            if "T.." in line:
                assert any(line.startswith(m) for m in makers), (name, line)


def test_the_defaults_are_pythons() -> None:
    values = lua.constants()
    assert values["@TTL@"] == str(config.DEFAULT_RECORD_TTL)
    assert values["@MEM@"] == str(pools.DEFAULT_MEMORY_MB)
    assert values["@CPUS@"] == str(pools.DEFAULT_CPUS)
    assert float(values["@BOOT@"]) == pools.DEFAULT_BOOT_TIMEOUT
    assert float(values["@HEARTBEAT@"]) == pools.DEFAULT_HEARTBEAT
    assert float(values["@IDLE@"]) == pools.DEFAULT_IDLE_TIMEOUT
    assert values["@KEEP@"] == str(2 * lua.FRESH_SLACK)
    assert "cfg('boot', 60)" in SCRIPTS["SCALE_UP"] and "or 86400" in SCRIPTS["CANCEL"]


def test_no_file_types_a_default_of_its_own() -> None:
    """A pool setting read with cfg(name, default) and a job's need or TTL read with a
    fallback take their fallback from Python (@NAME@), never a number typed in Lua."""
    for f in os.listdir(LUA_DIR):
        if not f.endswith(".lua"):
            continue
        with open(os.path.join(LUA_DIR, f)) as fh:
            code = lua._code(fh.read())
        assert not re.findall(r"cfg\('\w+', (?!@\w+@\))", code), f
        for number in (str(config.DEFAULT_RECORD_TTL), str(pools.DEFAULT_MEMORY_MB)):
            assert number not in code, (f, number)
        assert not re.findall(r"(?:cpus|mem)\) or [1-9]", code), f
        assert not re.findall(r"(?:cpus|mem)=\d", code), f


@pytest.mark.parametrize("name", lua.NAMES)
def test_every_reply_code_is_documented_in_the_scripts_header(name: str) -> None:
    text = lua.read(name)
    doc = "".join(line for line in text.splitlines(True) if line.startswith("--"))
    body = lua._code(SCRIPTS[name])
    codes = set(re.findall(r"return \{?(-\d+)", body))
    if "end_attempt(" in body and "return end_attempt" in body:
        codes |= {"-1", "-2", "-3", "-4"}
    for code in codes:
        assert re.search(rf"(?<![\d-]){code}\b", doc), (name, code)


def test_the_prelude_documents_every_guard_code_any_script_returns() -> None:
    doc = lua.read("PRELUDE")
    codes = {c for text in SCRIPTS.values() for c in re.findall(r"(-\d+)[,}]", lua._code(text))}
    codes = {c for c in codes if c.startswith("-") and c != "-1e"}
    assert codes >= {"-1", "-2", "-3", "-4", "-5", "-6"}
    for code in codes - {"-0"}:
        assert re.search(rf"^--\s+{code}\s", doc, re.M), code


def test_one_sha_cache_for_every_client() -> None:
    """The digests of EVALSHA are computed in one place: lua.sha."""
    src = os.path.dirname(LUA_DIR)
    holders = []
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(root, f)) as fh:
                    if "sha1(" in fh.read():
                        holders.append(os.path.relpath(os.path.join(root, f), src))
    assert holders == [os.path.join("lua", "__init__.py")]
    assert lua.sha(lua.CLOCK) is lua.sha(lua.CLOCK)


@pytest.mark.slow
def test_a_machine_links_only_the_scripts_it_uses() -> None:
    """Importing the worker reads no script file; a script is made on first use."""
    code = (
        "import json, balloons.machine.worker; from balloons.store import lua; "
        "before = [n for n in lua.NAMES if n in vars(lua)]; lua.CLAIM; "
        "print(json.dumps([before, [n for n in lua.NAMES if n in vars(lua)]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert json.loads(out.stdout) == [[], ["CLAIM"]]


def test_the_files_are_plain_ascii() -> None:
    """The loader reads identifiers byte-wise: a file holds printable ASCII and newlines."""
    for f in os.listdir(LUA_DIR):
        if f.endswith(".lua"):
            with open(os.path.join(LUA_DIR, f), "rb") as fh:
                data = fh.read()
            assert all(32 <= b < 127 or b == 10 for b in data), f


def test_no_string_in_the_files_holds_a_comment_mark() -> None:
    """The loader reads ``--`` as the start of a comment wherever it stands."""
    for f in os.listdir(LUA_DIR):
        if f.endswith(".lua"):
            with open(os.path.join(LUA_DIR, f)) as fh:
                for line in fh:
                    code = line.split("--", 1)[0]
                    assert code.count("'") % 2 == 0 and code.count('"') % 2 == 0, (f, line)


def test_the_store_sends_a_script_by_digest_and_again_whole_when_the_server_lost_it(
    app: Any, r: redis.Redis
) -> None:
    pk = keys.PoolKeys(app.store.namespace, "default")
    r.script_flush()
    r.config_resetstat()
    first = app.store.eval(lua.CLOCK, pk)  # NOSCRIPT, then the script itself
    second = app.store.eval(lua.CLOCK, pk)  # by digest
    assert int(first[0]) > 0 and int(second[0]) >= int(first[0])
    stats = r.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 2
    assert stats["cmdstat_eval"]["calls"] == 1
    assert r.script_exists(lua.sha(lua.CLOCK)) == [True]
