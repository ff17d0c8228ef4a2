"""The Lua scripts behind every multi-key state change, loaded from the ``.lua`` files here.

``prelude.lua`` holds what the scripts share (the clock, the key names, the slot table, the
attempt log, the end of an attempt); each other file is one script, named for what it does,
with its ``KEYS``, ``ARGV`` and replies in its header. ``lua.SUBMIT`` is the text of
``submit.lua`` as Redis runs it: the prelude's lines and functions that the script uses, then
the script. A script's text is made when it is first used (a machine reads the six it needs,
not all of them); :func:`sha` gives its ``EVALSHA`` digest, the one cache of digests.

Made at load time, never written by hand twice:

* the key names: ``QUEUE`` is ``KEYS[1]``, ... in :data:`balloons.store.keys.POOL_SCRIPT_KEYS`
  order, and ``jk(u)``, ``ak(u)``, ... make the keys of a job the script finds in its pool from
  the pool's tag (``ARGV[1]``) with the forms of :class:`balloons.store.keys.PoolKeys`;
* the defaults: ``@NAME@`` in a file is the Python value of :func:`constants` (a pool's
  defaults, the record TTL), so no Python default is typed again in Lua;
* the prelude functions a script defines: those it calls, and those they call, in the
  prelude's order (a script defines only what it uses, since every definition runs on every
  call). A line ``--@define NAME ...`` defines the functions named there (and those they call
  that the rest does not) at that place instead: inside a function of the script, so that they
  are made only on the paths that call it. A line ``--@include NAME`` stands for the body of
  script ``NAME`` (``SUBMIT_MANY`` runs ``SUBMIT``'s, once per job).

A file's leading comment lines are its documentation and are not sent to Redis, except a first
line ``--!df flags=allow-undeclared-keys``: a script that makes the keys of jobs it finds in
its pool says so for servers that refuse keys not declared (Dragonfly; a Lua comment
elsewhere).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..keys import (
    HOOK_SCRIPT_KEY,
    IDEM_SCRIPT_KEY,
    JOB_SCRIPT_KEYS,
    OUTBOX_SCRIPT_KEY,
    POOL_SCRIPT_KEYS,
    SPEND_HOURS,
    STAT_BUCKETS,
    WAKE_SCRIPT_KEY,
    PoolKeys,
)

#: Seconds past a record's TTL (counted from its creation, or from when its retry was granted)
#: that a worker still runs it, for clocks that disagree; older, it is refused as a replay. A
#: job's runs key is kept twice this long past its TTL.
FRESH_SLACK = 600
#: The cap a script assumes for a pool whose settings are missing in Redis (none written since
#: Redis lost them): one machine, until the pool's next submit writes them again.
MISSING_CAP = 1
#: Seconds a compatibility tag's wake list outlives its last token (a version's machines are
#: gone by then).
WAKE_TTL = 24 * 3600

#: Every script, by the name it has here; its file is the name in lower case, ``.lua``.
NAMES = (
    "SUBMIT", "CLAIM", "TAKE", "HEARTBEAT", "FINISH", "LOST", "CANCEL", "SCALE_UP", "REQUEUE",
    "CONFIRM_LAUNCH", "PICK_MACHINE", "START_FAILED", "TRIM_STANDBY", "NOTE_ATTEMPT",
    "APPEND_LOGS", "MACHINE_WANTED", "LAUNCHED", "CLOCK", "READ_STATS", "STRANDED", "SUBMIT_MANY",
    "HOOK_REGISTER", "HOOK_CLAIM", "HOOK_RECORD",
)  # fmt: skip

# The scripts, made on first use by __getattr__ (see each file for what it does).
SUBMIT: str
CLAIM: str
TAKE: str
HEARTBEAT: str
FINISH: str
LOST: str
CANCEL: str
SCALE_UP: str
REQUEUE: str
CONFIRM_LAUNCH: str
PICK_MACHINE: str
START_FAILED: str
TRIM_STANDBY: str
NOTE_ATTEMPT: str
APPEND_LOGS: str
MACHINE_WANTED: str
LAUNCHED: str
CLOCK: str
READ_STATS: str
STRANDED: str
SUBMIT_MANY: str
HOOK_REGISTER: str
HOOK_CLAIM: str
HOOK_RECORD: str

_DIR = os.path.dirname(__file__)
#: The first line of a script that makes the keys of jobs it finds in its pool.
FINDS_JOBS = "--!df flags=allow-undeclared-keys\n"
_DEFINE = "--@define "
_INCLUDE = "--@include "
_SHAS: dict[str, str] = {}
#: Every ASCII character that is not part of a Lua identifier made a space (the files are
#: ASCII).
_SEPARATORS = b"!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~\t\n\r\f\v"
_SPACES = bytes.maketrans(_SEPARATORS, b" " * len(_SEPARATORS))


def sha(script: str) -> str:
    """The SHA1 digest of ``script`` for ``EVALSHA``: the one cache of digests, used by the
    client (redis-py and the RESP client) and the machine."""
    digest = _SHAS.get(script)
    if digest is None:
        import hashlib

        digest = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324
    return digest


def evalsha(script: str, keys: list[str], args: list[object]) -> list[object]:
    """An ``EVALSHA`` command to send in a pipeline (a server that lost the script answers
    NOSCRIPT in its place, and the caller falls back to a plain ``EVAL``)."""
    return ["EVALSHA", sha(script), len(keys), *keys, *args]


if not TYPE_CHECKING:  # mypy sees the names declared above, and only those

    def __getattr__(name: str) -> str:
        """A script, made from its file when first asked for and kept as a module attribute."""
        if name not in NAMES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        text = globals()[name] = link(read(name))
        return text


def read(name: str) -> str:
    """The file of script (or ``PRELUDE``) ``name``, as written."""
    with open(os.path.join(_DIR, name.lower() + ".lua"), encoding="utf-8") as fh:
        return fh.read()


def constants() -> dict[str, str]:
    """What ``@NAME@`` stands for in the files: Python's defaults, as Lua numbers."""
    from ...config import DEFAULT_RECORD_TTL
    from ...pools import (
        DEFAULT_BOOT_TIMEOUT,
        DEFAULT_CPUS,
        DEFAULT_HEARTBEAT,
        DEFAULT_IDLE_TIMEOUT,
        DEFAULT_MEMORY_MB,
        DEFAULT_MIN_MACHINES,
        DEFAULT_STANDBY,
    )

    values: dict[str, float] = {
        "TTL": DEFAULT_RECORD_TTL,  # a job record's, when it names none
        "CPUS": DEFAULT_CPUS,
        "MEM": DEFAULT_MEMORY_MB,
        "BOOT": DEFAULT_BOOT_TIMEOUT,
        "HEARTBEAT": DEFAULT_HEARTBEAT,
        "IDLE": DEFAULT_IDLE_TIMEOUT,
        "MIN": DEFAULT_MIN_MACHINES,
        "STANDBY": DEFAULT_STANDBY,
        "CAP": MISSING_CAP,
        "KEEP": 2 * FRESH_SLACK,  # how long a runs key outlives its job's TTL
        "WAKE_TTL": WAKE_TTL,
        "SPEND_HOURS": SPEND_HOURS,
    }
    out = {
        f"@{k}@": str(int(v)) if float(v).is_integer() else repr(float(v))
        for k, v in values.items()
    }
    out["@STAT_BUCKETS@"] = ", ".join(repr(b) for b in STAT_BUCKETS)
    return out


def key_names() -> str:
    """The prelude's key names, from :mod:`balloons.store.keys`: one line per key of the pool
    (``local QUEUE = KEYS[1]``, ...) and a function per kind of job key, which makes the key
    of any job of the pool from its id (``jk(u)``: the job's record, ...)."""
    lines = [f"local {name.upper()} = KEYS[{i}]\n" for i, name in enumerate(POOL_SCRIPT_KEYS, 1)]
    sample = PoolKeys("NS", "POOL")
    var, prop = OUTBOX_SCRIPT_KEY  # a key of the pool no script is given: made from its tag
    lines.append(f"local {var} = T..'{getattr(sample, prop).removeprefix(sample.tag)}'\n")
    for fn, method in (*JOB_SCRIPT_KEYS, IDEM_SCRIPT_KEY, WAKE_SCRIPT_KEY, HOOK_SCRIPT_KEY):
        # Each is the pool's tag, a suffix, then the id.
        suffix = getattr(sample, method)("\0").removeprefix(sample.tag).removesuffix("\0")
        lines.append(f"local function {fn}(u) return T..'{suffix}'..u end\n")
    return "".join(lines)


def _body(text: str, values: dict[str, str]) -> tuple[str, str]:
    """A file's text as its first line when that is a server directive (``--!``), and the
    rest without its leading comment lines (its documentation), with ``@NAME@`` filled in."""
    first = ""
    if text.startswith("--!"):
        first, _, text = text.partition("\n")
        first += "\n"
    at = 0
    while text.startswith(("--", "\n"), at):
        at = text.find("\n", at) + 1 or len(text)
    body = text[at:]
    if "@" in body:
        for token, value in values.items():
            body = body.replace(token, value)
    return first, body


def _code(text: str) -> str:
    """Lua ``text`` without its comments (``--`` to the end of the line; no string in the files
    holds ``--``, a test checks): what refers to a prelude function or a key name."""
    return re.sub("--.*", "", text)


def mentioned(code: str, vocabulary: frozenset[str]) -> frozenset[str]:
    """The names of ``vocabulary`` that Lua ``code`` mentions (in a string too, harmlessly).
    Plain string work: every machine links the scripts it runs."""
    return vocabulary.intersection(code.encode().translate(_SPACES).decode().split())


class _Prelude:
    """The prelude, taken apart once: its header lines (``T``, ``NOW``, the pool's keys), each
    defining one name, and its functions (name -> code with the comments above it, in order),
    with the prelude functions each one calls."""

    def __init__(self) -> None:
        self.constants = constants()
        _, text = _body(read("PRELUDE"), self.constants)
        lines = text.replace("--@keys\n", key_names(), 1).splitlines(keepends=True)
        starts = [i for i, line in enumerate(lines) if line.startswith("local function ")]
        firsts = []
        for i in starts:
            while i > 0 and lines[i - 1].startswith("--"):
                i -= 1
            firsts.append(i)
        self.functions: dict[str, str] = {}
        for start, first, end in zip(starts, firsts, [*firsts[1:], len(lines)], strict=True):
            line = lines[start]
            self.functions[line[len("local function ") : line.index("(")]] = "".join(
                lines[first:end]
            )
        self.header = [(line.split()[1], line) for line in lines[: firsts[0]] if line.strip()]
        header = frozenset(name for name, _ in self.header)
        #: The names a script may use from the prelude.
        self.vocabulary = header | self.functions.keys()
        mentions = {
            name: mentioned(_code(code), self.vocabulary) for name, code in self.functions.items()
        }
        #: The prelude functions each function calls, and the header's names it uses.
        self.calls = {name: ids - header - {name} for name, ids in mentions.items()}
        self.keys = {name: ids & header for name, ids in mentions.items()}

    def closure(self, names: Iterable[str]) -> set[str]:
        """``names`` and every prelude function they call, directly or not."""
        out, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in out:
                out.add(name)
                todo += self.calls[name]
        return out

    def define(self, names: Iterable[str]) -> str:
        """The code of the prelude functions ``names``, in the prelude's order."""
        names = set(names)
        return "".join(code for name, code in self.functions.items() if name in names)


_PARTS: list[_Prelude] = []


def _parts() -> _Prelude:
    if not _PARTS:
        _PARTS.append(_Prelude())
    return _PARTS[0]


def link(text: str) -> str:
    """The script Redis runs for the file ``text``: its server directive, the prelude's header
    lines it uses, the prelude functions it calls, then its body (see the module's doc)."""
    prelude = _parts()
    first, body = _body(text, prelude.constants)
    at = body.find(_INCLUDE)
    if at >= 0:  # another script's body, in its place (SUBMIT_MANY runs SUBMIT's per job)
        end = body.index("\n", at) + 1
        body = body[:at] + _body(read(body[at + len(_INCLUDE) : end].strip()), {})[1] + body[end:]
        _, body = _body(body, prelude.constants)
    at = body.find(_DEFINE)
    later: set[str] = set()
    if at >= 0:
        start = body.rfind("\n", 0, at) + 1
        end = body.index("\n", at) + 1
        later = set(body[at + len(_DEFINE) : end].split())
    ids = mentioned(_code(body), prelude.vocabulary)  # not the --@define line: a comment
    top = prelude.closure((ids & prelude.functions.keys()) - later)
    inner = prelude.closure(later) - top
    if at >= 0:
        body = body[:start] + prelude.define(inner) + body[end:]
    used = ids.union(*(prelude.keys[f] for f in top | inner))
    header = [line for name, line in prelude.header if name == "T" or name in used]
    return first + "".join(header) + prelude.define(top) + body
