"""The job service's API keys: scopes, digests only in Redis, revocation, the bootstrap key,
and the ``balloons keys`` commands; against a real service and Valkey."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

pytest.importorskip("starlette")

from balloons.errors import ConfigError
from balloons.service.auth import Gate, Keys, digest
from tests import tasks
from tests.servicehttp import TOKEN, serving

JOB = "/v1/jobs/default.01jd3x9k2m8vq4t7w0c5r6y1zh"


def _code(resp: httpx.Response) -> tuple[int, str]:
    assert resp.headers["content-type"] == "application/problem+json", resp.text
    return resp.status_code, resp.json()["code"]


def test_requests_need_a_known_key_with_the_scope() -> None:
    with serving() as s:
        reader = s.key("reader", "jobs:read")
        writer = s.key("writer", "jobs:write")
        with httpx.Client(base_url=s.url) as anon:
            r = anon.get("/v1/jobs")
            assert _code(r) == (401, "unauthenticated")
            assert r.headers["www-authenticate"] == 'Bearer realm="balloons"'
            assert _code(anon.get("/v1/jobs", headers={"authorization": "Basic x"}))[0] == 401
            assert (
                _code(anon.get("/v1/jobs", headers={"authorization": "Bearer bk_nope"}))[0] == 401
            )
            # The document and the health check need no key.
            assert anon.get("/v1/openapi.json").status_code == 200
            assert anon.get("/v1/health").json() == {"ok": True}
        body = {"task": "tests.tasks:add", "args": [1, 1], "delay": 3600}
        with s.client(reader) as c:
            assert c.get("/v1/jobs").status_code == 200
            assert c.get("/v1/tasks").status_code == 200
            assert _code(c.post("/v1/jobs", json=body)) == (403, "insufficient-scope")
            assert _code(c.post(f"{JOB}/cancel")) == (403, "insufficient-scope")
        with s.client(writer) as c:
            assert c.post("/v1/jobs", json=body).status_code == 201
            assert _code(c.get("/v1/jobs")) == (403, "insufficient-scope")
            assert _code(c.get(JOB)) == (403, "insufficient-scope")
        admin = s.key("root", "admin")
        with s.client(admin) as c:
            assert c.get("/v1/jobs").status_code == 200
            assert c.post("/v1/jobs", json=body).status_code == 201


def test_redis_keeps_only_digests_and_a_revoked_key_stops_working() -> None:
    keys = Keys(tasks.app.store, tasks.app.settings.namespace)
    with serving() as s:
        key = s.key("ci", "jobs:read", "jobs:write")
        dump = b"".join(
            k + b"".join(v for kv in tasks.app.store.redis.hgetall(k).items() for v in kv)
            for k in tasks.app.store.redis.keys("*")
        )
        assert key.encode() not in dump and digest(key).encode() in dump
        with s.client(key) as c:
            assert c.get("/v1/jobs").status_code == 200
            assert [k.name for k in keys.list()] == ["ci"]
            assert keys.list()[0].scopes == ("jobs:write", "jobs:read")
            assert keys.revoke("ci") == 1
            assert _code(c.get("/v1/jobs")) == (401, "unauthenticated")
        assert keys.revoke("ci") == 0
    keys.create("dup", ["admin"])
    with pytest.raises(ConfigError, match="exists"):
        keys.create("dup", ["admin"])
    with pytest.raises(ConfigError, match="unknown scope"):
        keys.create("x", ["jobs:all"])
    with pytest.raises(ConfigError, match="not valid"):
        keys.create("Bad Name", ["admin"])


def test_a_stored_key_entry_altered_in_redis_lets_nobody_in() -> None:
    r = tasks.app.store.redis
    keys_key = f"{tasks.app.settings.namespace}:service:keys"
    with serving() as s:
        key = s.key("victim", "jobs:read")
        for entry in (b"not json", b"[]", b'{"name": "victim", "scopes": ["root"]}',
                      b'{"name": 5, "scopes": ["admin"]}', b'{"name": "v", "scopes": []}',
                      b"[" * 100_000 + b"]" * 100_000):  # fmt: skip
            r.hset(keys_key, digest(key), entry)
            with s.client(key) as c:
                assert _code(c.get("/v1/jobs")) == (401, "unauthenticated"), entry
        r.hset(keys_key, "junk", b"\xff\xfe")
        names = [k.name for k in Keys(tasks.app.store, tasks.app.settings.namespace).list()]
        assert all(n.startswith("(unreadable") for n in names)
        r.delete(keys_key)
        r.set(keys_key, "wrong type")
        with s.client(key) as c:
            assert _code(c.get("/v1/jobs")) == (409, "record-invalid")


def test_the_bootstrap_token_is_an_admin_key_and_never_shown() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        Gate(Keys(tasks.app.store, "x"), "short")
    gate = Gate(Keys(tasks.app.store, "x"), TOKEN)
    assert TOKEN not in repr(gate)
    with serving(token=None) as s, s.client(TOKEN) as c:
        assert _code(c.get("/v1/jobs")) == (401, "unauthenticated")


@pytest.mark.slow
def test_the_keys_commands_print_a_key_once_and_list_and_revoke_it() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "balloons", "keys", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = run("create", "deploy", "--scope", "jobs:write,jobs:read")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("bk_") and len(key) > 40
    listed = run("list", "--json")
    assert key not in listed.stdout
    import json

    assert json.loads(listed.stdout)[0]["scopes"] == ["jobs:write", "jobs:read"]
    with serving() as s, s.client(key) as c:
        assert c.get("/v1/jobs").status_code == 200
    assert run("create", "deploy", "--scope", "admin").returncode != 0
    assert run("create", "x", "--scope", "nope").returncode == 2
    assert run("revoke", "deploy").returncode == 0
    gone = run("revoke", "deploy")
    assert gone.returncode != 0 and "no key named" in gone.stderr


def test_a_revoked_key_stops_working_once_the_cache_ttl_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service process remembers a key it looked up for ``CACHE_TTL`` (1 s) at most, on its
    own clock: a revoke (and a new key) takes effect by then, whatever was cached."""
    import asyncio
    import time
    import types

    from balloons.service import auth
    from balloons.service.auth import CACHE_TTL, Gate
    from balloons.service.problems import Problem

    now = [1000.0]
    monkeypatch.setattr(
        auth, "time", types.SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    )
    keys = Keys(tasks.app.store, tasks.app.settings.namespace)
    key = keys.create("cached", ["jobs:read"])
    gate = Gate(keys, None)
    assert gate.cache_ttl == CACHE_TTL == 1.0

    def check(k: str) -> object:
        async def go() -> object:
            try:
                return (await gate.check(f"Bearer {k}", "jobs:read")).name
            except Problem as exc:
                return exc.status
            finally:
                await tasks.app.store.aclose()

        return asyncio.run(go())

    assert check(key) == "cached"
    assert keys.revoke("cached") == 1
    now[0] += CACHE_TTL * 0.9
    assert check(key) == "cached"  # remembered, within the TTL
    now[0] += CACHE_TTL * 0.1
    assert check(key) == 401  # looked up again: revoked
    later = keys.create("later", ["jobs:read"])
    assert check(later) == "later"
    keys.revoke("later")
