"""The service's error shape: RFC 9457 problem details, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("starlette")

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from balloons.errors import BalloonsError
from balloons.service.problems import MEDIA_TYPE, Problem, handle_problem
from tests.asgiserver import ServerThread


async def _busy(request: Request) -> Response:
    raise Problem(429, "rate-limited", "too many submits", retry_after=2.2, job_id="j1")


async def _clash(request: Request) -> Response:
    raise Problem(409, "attempt-superseded", "attempt 1 was superseded", extra={"status": 1})


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    app = Starlette(
        routes=[Route("/busy", _busy), Route("/clash", _clash)],
        exception_handlers={Problem: handle_problem},
    )
    with ServerThread(app) as served, httpx.Client(base_url=served.url, timeout=10) as c:
        yield c


def test_a_problem_is_served_as_problem_json_with_retry_after(client: httpx.Client) -> None:
    r = client.get("/busy")
    assert r.status_code == 429
    assert r.headers["content-type"] == MEDIA_TYPE
    assert r.headers["retry-after"] == "3"
    assert r.json() == {
        "type": "urn:balloons:problem:rate-limited",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "too many submits",
        "code": "rate-limited",
        "job_id": "j1",
    }


def test_extra_members_never_override_the_standard_ones(client: httpx.Client) -> None:
    r = client.get("/clash")
    assert r.status_code == 409
    assert r.json()["status"] == 409
    assert "retry-after" not in r.headers


def test_a_problem_is_a_balloons_error() -> None:
    assert isinstance(Problem(404, "not-found", "no job"), BalloonsError)


@pytest.mark.parametrize(
    ("status", "code", "named"),
    [(200, "ok", "200"), (999, "x", "999"), (400, "Bad Code", "'Bad Code'"), (400, "", "''")],
)
def test_a_malformed_problem_is_refused_naming_the_value(
    status: int, code: str, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        Problem(status, code, "detail")
