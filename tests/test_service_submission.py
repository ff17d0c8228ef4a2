"""The service's submit body, checked before anything is stored (pure logic): each field a
client can get wrong is refused with a problem naming the value and what was expected; the
values a result holds are written as JSON."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from balloons.service.problems import Problem
from balloons.service.submission import MAX_DEPTH, CommandJob, TaskJob, encode_value, parse

TASK = {"task": "tests.tasks:add"}
CMD = {"command": {"cmd": ["true"]}}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"task": "no-colon"}, "task must be 'module:function', got 'no-colon'"),
        ({**TASK, "args": {"a": 1}}, "args must be a JSON array, got an object"),
        ({**TASK, "kwargs": [1]}, "kwargs must be a JSON object, got an array"),
        ({**TASK, "pool": "Bad Pool"}, "pool must be a pool name"),
        ({**TASK, "timeout": 0}, "timeout must be a number of seconds over 0"),
        ({**TASK, "delay": -1}, "delay must be a number of seconds from 0"),
        ({**TASK, "timeout": True}, "got True"),
        ({**TASK, "retries": 1.5}, "retries must be a whole number from 0 to"),
        ({**TASK, "at": 5}, "at must be an RFC 3339 time string, got 5"),
        ({**TASK, "at": "2030-01-01T12:00:00"}, "with a time zone"),
        ({**TASK, "at": "soon"}, "got 'soon'"),
        ({**TASK, "at": "2030-01-01T12:00:00Z", "delay": 1}, "give 'at' or 'delay', not both"),
        ({**TASK, "machine": 2}, "machine must be a JSON object, got a number"),
        ({**TASK, "machine": {"gpus": 1}}, "unknown machine field(s) ['gpus']"),
        ({**TASK, "machine": {"cpus": 0}}, "machine.cpus must be a whole number from 1"),
        ({**TASK, "machine": {"memory_mb": "1g"}}, "got '1g'"),
        ({**TASK, "labels": ["a"]}, "labels must be a JSON object of strings, got an array"),
        ({**TASK, "labels": {"bad key!": "v"}}, "label name 'bad key!' is not valid"),
        ({**TASK, "labels": {"team": 7}}, "label 'team' must be a string"),
        ({**TASK, "labels": {f"k{i}": "v" for i in range(200)}}, "labels holds 200 entries"),
        ({**TASK, "args": [{"$bytes": 5}]}, "args: $bytes must be a base64 string"),
        ({**TASK, "kwargs": {"b": {"$bytes": "!!"}}}, "kwargs: $bytes is not valid base64"),
        ({**TASK, "input": _nested(MAX_DEPTH + 2)}, "input is nested more than"),
        ({"command": "ls"}, "command must be a JSON object, got a string"),
        ({"command": {"cmd": ["ls"], "user": "root"}}, "unknown command field(s) ['user']"),
        ({"command": {"cmd": ["ls"], "image": ""}}, "command.image must be an image reference"),
        ({"command": {"cmd": []}}, "command.cmd must be a non-empty JSON array of strings"),
        ({"command": {"cmd": ["a\0b"]}}, "(no NUL)"),
        ({"command": {"cmd": ["ls"], "env": {"A=B": "1"}}}, "command.env must be a JSON object"),
        ({**CMD, "retry_on_exit_codes": [0]}, "retry_on_exit_codes must be a JSON array"),
        ({**CMD, "retry_on_exit_codes": 3}, "exit codes from 1 to 255"),
        ([1], "the body must be a JSON object, got an array"),
        ({**TASK, **CMD}, "exactly one of 'task' and 'command'"),
        ({**TASK, "image": "x"}, "unknown field(s) ['image']"),
    ],
)
def test_a_bad_field_is_refused_naming_it(body: Any, says: str) -> None:
    with pytest.raises(Problem) as err:
        parse(body)
    assert err.value.status == 400
    assert says in err.value.detail


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({**TASK, "machine": {"region": "ams"}}, "option-unsupported", "BALLOONS_FLY_REGION"),
    ],
)
def test_an_option_the_service_does_not_offer_is_a_422(body: Any, code: str, says: str) -> None:
    with pytest.raises(Problem) as err:
        parse(body)
    assert (err.value.status, err.value.code) == (422, code)
    assert says in err.value.detail


def test_a_callback_is_read_into_the_common_fields() -> None:
    job = parse({**TASK, "callback": {"url": "https://x"}})
    assert job.common.callback is not None and job.common.callback.url == "https://x"
    assert parse(TASK).common.callback is None


def test_good_bodies_are_read_with_their_bytes_and_options() -> None:
    job = parse(
        {
            **TASK,
            "args": [{"$bytes": "aGk="}],
            "kwargs": {"k": [{"$bytes": ""}]},
            "pool": "p-1",
            "timeout": 2.5,
            "retries": 3,
            "at": "2030-01-01T12:00:00+02:00",
            "machine": {"cpus": 2, "memory_mb": 512},
            "labels": {"team": "core"},
            "input": {"x": 1},
        }
    )
    assert isinstance(job, TaskJob)
    assert (job.args, job.kwargs) == ([b"hi"], {"k": [b""]})
    c = job.common
    assert (c.pool, c.timeout, c.retries, c.cpus, c.memory_mb) == ("p-1", 2.5, 3, 2, 512)
    assert c.at == dt.datetime(2030, 1, 1, 10, 0, tzinfo=dt.UTC)
    assert (c.labels, c.input, c.has_input) == ({"team": "core"}, {"x": 1}, True)
    cmd = parse({"command": {"cmd": ["echo", "hi"], "env": {"A": "1"}, "image": "img:1"},
                 "retry_on_exit_codes": [3, 4], "delay": 0})  # fmt: skip
    assert isinstance(cmd, CommandJob)
    assert (cmd.command.cmd, cmd.command.env, cmd.command.image) == (["echo", "hi"],
                                                                    {"A": "1"}, "img:1")  # fmt: skip
    assert cmd.retry_on_exit_codes == (3, 4) and cmd.common.delay == 0.0


def test_a_result_is_written_as_json_whatever_it_holds() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    deep = _nested(MAX_DEPTH + 5)
    got = encode_value(
        {
            1: b"\x00\xff",
            "t": (1, 2),
            "s": frozenset({3}),
            "nan": math.nan,
            "inf": -math.inf,
            "when": dt.date(2030, 1, 2),
            "at": dt.datetime(2030, 1, 2, 3, 4, tzinfo=dt.UTC),
            "thing": Thing(),
            "mv": memoryview(b"ab"),
        }
    )
    assert got == {
        "1": {"$bytes": "AP8="},
        "t": [1, 2],
        "s": [3],
        "nan": None,
        "inf": None,
        "when": "2030-01-02",
        "at": "2030-01-02T03:04:00+00:00",
        "thing": {"$repr": "<thing>"},
        "mv": {"$bytes": "YWI="},
    }
    text = repr(encode_value(deep))
    assert "{'$repr': '...'}" in text
