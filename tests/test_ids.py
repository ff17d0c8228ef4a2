"""Job ids: ULIDs whose first ten digits are the time in ms, the rest random, drawn from the
system in bulk; a forked child never makes the ids its parent makes."""

from __future__ import annotations

import os

from balloons.ids import _ALPHABET, ulid
from balloons.store.keys import ULID_RE


def _decode(digits: str) -> int:
    value = 0
    for d in digits:
        value = value * 32 + _ALPHABET.index(d)
    return value


def test_an_id_is_its_time_then_80_random_bits() -> None:
    for now in (0.0, 1.0, 1765000000.123, 2**47 / 1000):
        got = ulid(now)
        assert ULID_RE.match(got), got
        assert _decode(got[:10]) == int(now * 1000)
    ids = [ulid(1765000000.5) for _ in range(5000)]  # one millisecond, many draws
    assert len(set(ids)) == len(ids)
    assert {i[:10] for i in ids} == {ulid(1765000000.5)[:10]}
    assert len({i[10:] for i in ids}) == len(ids)


def test_a_forked_child_draws_its_own_random_bits() -> None:
    ulid()  # values drawn by the parent, not all taken yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write, " ".join(ulid(1.0)[10:] for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = set(f.read().split())
    os.waitpid(pid, 0)
    parent = {ulid(1.0)[10:] for _ in range(100)}
    assert len(child) == 100
    assert not child & parent
