"""Compatibility tags, the pure parts: the key id, the code version (named, the Fly image, the
task modules' source) as the client and a machine each work it out, and the note a job's info
carries when a machine of another key left it."""

from __future__ import annotations

from pathlib import Path

import pytest

import balloons
from balloons import compat
from balloons.backends.fly import FlyBackend
from balloons.config import Settings
from balloons.errors import ConfigError
from balloons.info import JobStatus
from balloons.machine.handoff import machine_version
from balloons.store.records import job_info
from tests import tasks

SECRET = b"s" * 32


def test_the_key_id_names_a_key_without_revealing_it() -> None:
    kid = compat.key_id(SECRET)
    assert len(kid) == 12 and int(kid, 16) >= 0
    assert kid == compat.key_id(SECRET) != compat.key_id(b"t" * 32)
    assert kid not in SECRET.hex() and kid not in SECRET.decode()
    tag = compat.tag(SECRET, "v1")
    assert compat.TAG_RE.match(tag) and tag.startswith(kid + ".")
    assert tag != compat.tag(SECRET, "v2")


def test_the_source_version_follows_the_task_modules(tmp_path: Path) -> None:
    one, two = tmp_path / "one.py", tmp_path / "two.py"
    one.write_text("x = 1\n")
    two.write_text("y = 2\n")
    v = compat.source_version([str(one), str(two)])
    assert v.startswith(compat.SOURCE_PREFIX)
    assert v == compat.source_version([str(two), str(one), str(one)])  # a set, in order
    one.write_text("x = 3\n")
    assert compat.source_version([str(one), str(two)]) != v
    assert compat.source_version([str(tmp_path / "gone.py")])  # unreadable: still a version


def test_a_machine_works_out_the_version_its_app_names_else_its_image_else_its_source(
    tmp_path: Path,
) -> None:
    src = tmp_path / "tasks.py"
    src.write_text("pass\n")
    files = {"BALLOONS_VERSION_FILES": str(src)}
    image = {"FLY_IMAGE_REF": "registry.fly.io/app:deployment-01"}
    assert machine_version({**files, **image, "BALLOONS_VERSION": "v7"}) == "v7"
    assert machine_version({**files, **image}) == image["FLY_IMAGE_REF"]
    assert machine_version(files) == compat.source_version([str(src)])
    assert machine_version({}) == ""


def test_the_client_gives_its_machines_what_makes_the_same_version(tmp_path: Path) -> None:
    named = compat.compat_of(SECRET, "v7", "img", ["tests.tasks:add"])
    assert named.env == {"BALLOONS_VERSION": "v7"} and named.tag == compat.tag(SECRET, "v7")
    fly = compat.compat_of(SECRET, None, "registry.fly.io/a:1", ["tests.tasks:add"])
    assert fly.env == {} and fly.version == "registry.fly.io/a:1"  # FLY_IMAGE_REF says it
    local = compat.compat_of(SECRET, None, None, [tasks.add.name, "no.such:thing"])
    assert local.env["BALLOONS_VERSION_FILES"].endswith("tests/tasks.py")
    assert machine_version(local.env) == local.version
    assert local.conf == f" v:{local.tag[:12]} {local.tag[13:]}"


def test_the_version_setting_is_checked_and_the_fly_image_is_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert balloons.App(version="2024.1").settings.version == "2024.1"
    monkeypatch.setenv("BALLOONS_VERSION", "x" * 300)
    with pytest.raises(ConfigError, match="at most 256"):
        Settings.resolve({"BALLOONS_VERSION": "x" * 300})
    monkeypatch.delenv("BALLOONS_VERSION")
    backend = FlyBackend(token="t", app="a", image="registry.fly.io/a:deployment-9")
    app = balloons.App(backend=backend)
    assert app.compat().version == "registry.fly.io/a:deployment-9"


def test_a_jobs_info_says_when_a_machine_of_another_key_left_it() -> None:
    tag = compat.tag(SECRET, "v1")
    rec = {"status": b"QUEUED", "compat": tag.encode(), "passed": b"0123456789ab"}
    info = job_info("p.01jd3x9k2m8vq4t7w0c5r6y1zh", rec, {})
    assert info.status is JobStatus.QUEUED and info.compat == tag
    assert info.note is not None and "0123456789ab" in info.note and tag[:12] in info.note
    hostile = {"status": b"QUEUED", "compat": b"<b>x</b>", "passed": b"\xff" * 12}
    info = job_info("p.01jd3x9k2m8vq4t7w0c5r6y1zh", hostile, {})
    assert info.compat is None and info.passed_by is None and info.note is None
