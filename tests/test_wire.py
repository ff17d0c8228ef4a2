"""The SUBMIT command's bytes, made from the pool's part encoded once (``store/wire.py``), are
those the RESP client makes of the same command, whatever the job, its options and its pool."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balloons.ids import ulid
from balloons.store.keys import PoolKeys, script_keys
from balloons.store.resp import _encode
from balloons.store.wire import submit_wire

SHA = "0123456789abcdef0123456789abcdef01234567"


def _command(pool: PoolKeys, u: str, idem: str, **over: Any) -> tuple[list[str], list[Any]]:
    argv: list[Any] = [
        pool.tag, repr(1765000000.123456), u, b'{"v":1,"id":"x"}', b'{"args":[],"kwargs":{}}',
        "ab" * 32, 86400, "cap 4 boot 60 idle 30", "", 0, 1, 256, idem, "0123456789ab.cdef01234567",
    ]  # fmt: skip
    for i, value in over.items():
        argv[int(i[1:])] = value
    return script_keys(pool, u, idem=idem), argv


@settings(max_examples=200, deadline=None)
@given(
    ns=st.sampled_from(["balloons", "n%s%d", "é:{x}", "a" * 60]),
    pool=st.sampled_from(["default", "a-b_c", "p" * 40]),
    idem=st.sampled_from(["", "f" * 32]),
    due=st.sampled_from(["", "+30.0", "1765000999.5"]),
    priority=st.integers(-1000, 1000),
    payload=st.binary(max_size=300),
    config=st.text(max_size=200),
    ttl=st.integers(1, 10**9),
)
def test_the_submit_command_encodes_as_any_command(
    ns: str, pool: str, idem: str, due: str, priority: int, payload: bytes, config: str, ttl: int
) -> None:
    pk = PoolKeys(ns, pool)
    for _ in range(2):  # the pool's part made, then reused
        keys, argv = _command(pk, ulid(), idem, a3=payload, a6=ttl, a7=config, a8=due, a9=priority)
        expected = _encode([["EVALSHA", SHA, len(keys), *keys, *argv]], memo=False)
        assert submit_wire(SHA, keys, argv) == expected


@pytest.mark.parametrize(
    "change",
    [
        lambda k, a: (k, a[:-1]),  # another script's arguments
        lambda k, a: (k[:-2], a),  # another number of keys
        lambda k, a: (k, [*a[:2], "short", *a[3:]]),  # an id that is no ULID
        lambda k, a: (k, [*a[:2], b"01jd3x9k2m8vq4t7w0c5r6y1zh", *a[3:]]),
    ],
)
def test_another_shape_is_left_to_the_general_encoder(change: Any) -> None:
    keys, argv = change(*_command(PoolKeys("balloons", "default"), ulid(), ""))
    assert submit_wire(SHA, keys, argv) is None


def test_a_batch_s_pipeline_encodes_as_any_commands() -> None:
    from balloons.store import batch
    from balloons.store.keys import JobKeys
    from balloons.store.writes import SubmitRequest

    def item(pool: str, conf: str = "cap 4", key: str = "", due: str = "") -> Any:
        u = ulid()
        req = SubmitRequest(
            payload=b'{"id":"%s"}' % u.encode(), args=b"[]", sig="ab" * 32, created=1.5, ttl=600,
            pool_config=conf, due=due, priority=-3, cpus=2, memory_mb=512, key_digest=key,
            compat="0123456789ab.cdef01234567",
        )  # fmt: skip
        return JobKeys.fresh("balloons", pool, u), req

    items = [item("a") for _ in range(batch.RUN + 3)]
    items += [item("b", key="f" * 32), item("b", due="+5.0"), item("a", conf="cap 5"), item("a")]
    runs = batch._runs(items)
    assert [len(r) for r in runs] == [batch.RUN, 3, 2, 1, 1]  # pool, settings, RUN apart
    assert [r[0][0].pool.pool for r in runs] == ["a", "a", "b", "a", "a"]
    before = [["SADD", "balloons:pools", "a"]]
    evals = [batch._command(SHA, run) for run in runs]
    expected = _encode([*before, *(cmd for cmd, _ in evals)], memo=False)
    assert batch._wire(before, evals) == expected
    assert batch._wire([], evals[1:]) == _encode([cmd for cmd, _ in evals[1:]], memo=False)
