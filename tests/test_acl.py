"""A Redis ACL user as production hardens one: its keys limited to the namespace
(``~balloons:*``) and no ``@dangerous`` command (``INFO``, ``SORT_RO``, ``KEYS``, ``CONFIG``,
``FLUSHALL``, ...). Jobs run on real machines, the supervisor steps and sweeps, and the CLI,
the dashboard and ``/metrics`` read, all with that user only."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
from click.testing import CliRunner

import balloons
from balloons.cli import main as cli
from balloons.dashboard import create_app
from tests import tasks
from tests.asgiserver import ServerThread
from tests.authvalkey import AuthValkey

PASSWORD = "acl-admin-pw-" + "5e1f"
USER, USER_PASSWORD = "jobs", "acl-jobs-pw-" + "77a0"
RULES = "resetkeys ~balloons:* resetchannels &* +@all -@dangerous"
TOKEN = "acl-dashboard-token-" + "q" * 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthValkey]:
    srv = AuthValkey(tmp_path_factory.mktemp("acl"), PASSWORD, [(USER, USER_PASSWORD)], RULES)
    srv.start()
    yield srv
    srv.stop()


def _url(server: AuthValkey) -> str:
    return f"redis://{USER}:{USER_PASSWORD}@127.0.0.1:{server.port}/0"


def test_the_user_is_as_restricted_as_meant(server: AuthValkey) -> None:
    r = redis.Redis.from_url(_url(server))
    try:
        for command in (("INFO",), ("KEYS", "*"), ("GET", "other:key")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.execute_command(*command)
    finally:
        r.close()


@pytest.mark.machines
def test_jobs_the_supervisor_cli_and_dashboard_work_with_a_restricted_user(
    server: AuthValkey, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(server)
    app = balloons.App(redis_url=url, secret=secret)
    pool = "acl"
    app.pool(pool, max_machines=2)
    add = balloons.Task(app, tasks.add.fn, tasks.add.name, tasks.add.opts).options(pool=pool)
    chatty = balloons.Task(app, tasks.chatty.fn, tasks.chatty.name, tasks.chatty.opts).options(
        pool=pool
    )
    try:
        jobs = [add.submit(i, 1) for i in range(4)]
        assert [j.result(timeout=60) for j in jobs] == [1, 2, 3, 4]
        logged = chatty.submit(3, 2)
        logged.result(timeout=60)
        assert len(logged.logs()) >= 3
        report = app.supervisor(orphan_min_age=0).step(gc=True)
        assert report.errors == [], report.errors
        assert {info.id for info in app.jobs(limit=10)} >= {j.id for j in jobs}
        assert app.costs() is not None

        monkeypatch.setenv("BALLOONS_REDIS_URL", url)
        monkeypatch.setenv("BALLOONS_SECRET", secret)
        for args in (["jobs"], ["status", jobs[0].id], ["logs", logged.id], ["pools"],
                     ["machines", "--all"], ["cost"], ["gc", "--dry-run"],
                     ["supervise", "--once"]):  # fmt: skip
            out = CliRunner().invoke(cli, args)
            assert out.exit_code == 0, (args, out.output)

        served = ServerThread(create_app(app, token=TOKEN))
        served.start()
        try:
            headers = {"authorization": f"Bearer {TOKEN}"}
            base = f"http://127.0.0.1:{served.port}"
            with httpx.Client(base_url=base, headers=headers, timeout=30) as web:
                for path in ("/jobs", f"/jobs/{jobs[0].id}", "/pools", "/cost", "/charts",
                             "/metrics"):  # fmt: skip
                    page = web.get(path)
                    assert page.status_code == 200, (path, page.text[:500])
                metrics = web.get("/metrics").text
                # The pool's figures, and its machines' states read without SORT_RO.
                assert f'pool="{pool}"' in metrics and "balloons_machines" in metrics, metrics
        finally:
            served.stop()
    finally:
        app.close()
