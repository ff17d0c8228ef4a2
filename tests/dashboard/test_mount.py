"""The dashboard mounted inside other apps: the Flask example (WSGI) and a Starlette app (ASGI)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from werkzeug.serving import make_server

from balloons.dashboard import create_app
from tests import tasks
from tests.dashboard.conftest import TOKEN, ServerThread

pytestmark = pytest.mark.machines


@pytest.fixture
def flask_server() -> Iterator[str]:
    from examples.flask_email.app import create_app as create_flask_app

    flask_app = create_flask_app({"BALLOONS_DASHBOARD_TOKEN": TOKEN})
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


def log_in_and_check(base: str, prefix: str) -> None:
    job = tasks.add.submit(6, 7)
    job.result(timeout=30)
    with httpx.Client(base_url=base, timeout=10) as c:
        refused = c.get(f"{prefix}/jobs", headers={"accept": "text/html"})
        assert refused.status_code == 303
        assert refused.headers["location"].startswith(f"{base}{prefix}/login?next=")
        ok = c.post(f"{prefix}/login", data={"token": TOKEN}, headers={"origin": base})
        assert ok.status_code == 303 and ok.headers["location"] == f"{prefix}/jobs"
        assert f"Path={prefix}" in ok.headers["set-cookie"]
        page = c.get(f"{prefix}/jobs").text
        assert job.id in page
        assert f'href="{base}{prefix}/jobs/{job.id}"' in page
        assert f'src="{base}{prefix}/static/live.js"' in page
        assert c.get(f"{prefix}/static/live.js").status_code == 200
        with c.stream("GET", f"{prefix}/jobs/{job.id}/live") as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("event: ")]
        assert lines == ["event: update", "event: end"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf
        retried = c.post(
            f"{prefix}/jobs/{job.id}/retry", data={"csrf": csrf.group(1)}, headers={"origin": base}
        )
        assert retried.status_code == 303
        assert retried.headers["location"].startswith(f"{prefix}/jobs/default.")
        metrics = c.get(f"{prefix}/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert "balloons_jobs_ended_total{" in metrics.text


def test_mounted_in_the_flask_example_through_wsgi(flask_server: str) -> None:
    log_in_and_check(flask_server, "/balloons")
    with httpx.Client(base_url=flask_server) as c:
        assert c.get("/status/garbage").status_code == 400  # the example's own routes still work


def test_mounted_in_a_starlette_app() -> None:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("outer app")

    outer = Starlette(
        routes=[Route("/", hello), Mount("/ops/balloons", create_app(tasks.app, token=TOKEN))]
    )
    served = ServerThread(outer)
    served.start()
    try:
        base = f"http://127.0.0.1:{served.port}"
        log_in_and_check(base, "/ops/balloons")
        assert httpx.get(base + "/").text == "outer app"
    finally:
        served.stop()
