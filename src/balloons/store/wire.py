"""The ``SUBMIT`` command as RESP bytes, made in a few joins per job.

Every submit sends one ``EVALSHA SUBMIT`` of some 30 arguments. Most are the same for every
job of a pool (the script's digest, the pool's twelve keys, its tag), and the job's own keys
differ only by its id; so the pool's part is encoded once, the job's keys from a template, and
the rest in one formatting operation, rather than argument by argument. The bytes are those
:func:`balloons.store.resp._encode` makes of the same command (``tests/test_wire.py``).
"""

from __future__ import annotations

from typing import Any

from .keys import JOB_SCRIPT_KEYS, POOL_SCRIPT_KEYS
from .resp import _encode

#: SUBMIT's ARGV length (:meth:`balloons.store.writes.Store._submit_cmd`).
SUBMIT_ARGS = 14
_POOL_KEYS = len(POOL_SCRIPT_KEYS)
_JOB_KEYS = len(JOB_SCRIPT_KEYS)
_ULID_CHARS = 26
#: (script digest, the pool's first key, number of keys) -> (the command's head: its length,
#: EVALSHA, digest, key count and the pool's keys; the job keys' template; the tag, encoded).
_HEADS: dict[tuple[str, str, int], tuple[bytes, bytes, bytes]] = {}
_TEXTS: dict[str, bytes] = {}  # short strings sent again and again, encoded (config, tag...)
_ARGS = b"$%d\r\n%b\r\n" * 5 + b"%b" * 8


def submit_wire(sha: str, keys: list[str], argv: list[Any]) -> bytes | None:
    """``EVALSHA sha len(keys) *keys *argv`` encoded, for SUBMIT's keys (the pool's, one
    job's, maybe an idempotency key) and ARGV; None when they are not of that shape (the
    caller encodes them as any command)."""
    n = len(keys)
    if len(argv) != SUBMIT_ARGS or n - _POOL_KEYS - _JOB_KEYS not in (0, 1):
        return None
    ub = argv[2].encode() if argv[2].__class__ is str else b""
    if len(ub) != _ULID_CHARS:
        return None
    heads = _HEADS.get((sha, keys[0], n))
    if heads is None:
        heads = _heads(sha, keys, argv)
    head, job_keys, tag = heads
    created = argv[1].encode()
    payload, data, sig = argv[3], argv[4], argv[5].encode()
    idem = _arg(keys[-1]) if n > _POOL_KEYS + _JOB_KEYS else b""
    rest = _ARGS % (
        len(created), created, _ULID_CHARS, ub, len(payload), payload, len(data), data,
        len(sig), sig,
        _arg(argv[6]), _arg(argv[7]), _arg(argv[8]), _arg(argv[9]), _arg(argv[10]),
        _arg(argv[11]), _arg(argv[12]), _arg(argv[13]),
    )  # fmt: skip
    return b"".join((head, job_keys % (ub, ub, ub, ub, ub), idem, tag, rest))


def _arg(value: Any) -> bytes:
    """One argument as a RESP bulk string (as :func:`~balloons.store.resp._encode` writes it)."""
    if value.__class__ is str:
        got = _TEXTS.get(value)
        if got is None:
            raw = value.encode()
            got = b"$%d\r\n%b\r\n" % (len(raw), raw)
            if len(value) <= 128:
                if len(_TEXTS) >= 1024:
                    _TEXTS.clear()
                _TEXTS[value] = got
        return got
    raw = value if value.__class__ is bytes else str(value).encode()
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


def _heads(sha: str, keys: list[str], argv: list[Any]) -> tuple[bytes, bytes, bytes]:
    n = len(keys)
    total = 3 + n + len(argv)
    pool = _encode([["EVALSHA", sha, n, *keys[:_POOL_KEYS]]], memo=False)
    head = b"*%d\r\n" % total + pool[pool.index(b"\r\n") + 2 :]
    # The job's keys end with its id: each one's text before it, '%' escaped for formatting.
    u = argv[2]
    forms = []
    for key in keys[_POOL_KEYS : _POOL_KEYS + _JOB_KEYS]:
        prefix = key.removesuffix(u).encode().replace(b"%", b"%%")
        forms.append(b"$%d\r\n%b%%b\r\n" % (len(key.encode()), prefix))
    got = (head, b"".join(forms), _arg(argv[0]))
    if len(_HEADS) >= 1024:
        _HEADS.clear()
    _HEADS[(sha, keys[0], n)] = got
    return got
