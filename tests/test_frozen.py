"""Frozen records of the worker's import path (keys): compare, hash, print and refuse
assignment like frozen dataclasses."""

from __future__ import annotations

import pytest

from balloons.store.keys import JobKeys, PoolKeys

JOB_ID = "builds.01jd3x9k2m8vq4t7w0c5r6y1zh"


def test_records_compare_and_hash_by_value() -> None:
    a, b = JobKeys.of("ns", JOB_ID), JobKeys.of("ns", JOB_ID)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != JobKeys.of("other", JOB_ID)
    assert PoolKeys("ns", "builds") != ("ns", "builds")


def test_records_refuse_assignment() -> None:
    jk = JobKeys.of("ns", JOB_ID)
    with pytest.raises(AttributeError, match="cannot assign to field 'ulid'"):
        jk.ulid = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot delete field 'ulid'"):
        del jk.ulid
    with pytest.raises(AttributeError):
        jk.extra = 1  # type: ignore[attr-defined]


def test_records_print_and_replace_like_dataclasses() -> None:
    pk = PoolKeys("ns", "builds")
    assert repr(pk) == "PoolKeys(ns='ns', pool='builds')"
    assert pk.replace(pool="other") == PoolKeys("ns", "other")
    with pytest.raises(TypeError, match="no field"):
        pk.replace(nope=1)


def test_fresh_keys_match_parsed_keys() -> None:
    assert JobKeys.fresh("ns", "builds", JOB_ID.split(".")[1]) == JobKeys.of("ns", JOB_ID)


def test_records_pickle_and_copy() -> None:
    import copy
    import pickle
    from pathlib import Path

    from balloons.config import Settings
    from balloons.machine.worker import Handoff
    from balloons.task import TaskOptions

    records = [
        JobKeys.of("ns", JOB_ID),
        TaskOptions(memory_mb=512, pool="builds"),
        Settings.resolve({"BALLOONS_HOME": "/x/y"}, secret="k" * 32),
        Handoff("default.01jd3x9k2m8vq4t7w0c5r6y1zh", 2, "redis://h", b"k", "ns", "m"),
    ]
    for rec in records:
        assert pickle.loads(pickle.dumps(rec)) == rec
        assert copy.copy(rec) == rec and copy.deepcopy(rec) == rec
    assert pickle.loads(pickle.dumps(records[2])).state_dir == Path("/x/y")
