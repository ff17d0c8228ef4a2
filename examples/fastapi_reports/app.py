"""The FastAPI front end: ``POST /count`` submits a job, ``GET /jobs/{id}`` reports it, and
``GET /jobs/{id}/result?wait=S`` waits for its result without blocking the event loop.

Run it from the repository root::

    .venv/bin/python -m uvicorn examples.fastapi_reports.app:api

The lifespan runs a supervisor as an asyncio task of the server's loop (for the jobs nobody
waits on) and closes the app's connections before the loop ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import balloons

from . import tasks

SUPERVISOR_INTERVAL = 5.0  # seconds between the supervisor's rounds
MAX_WAIT = 30.0  # the longest a request may wait for a result


@contextlib.asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    supervisor = tasks.app.supervisor(interval=SUPERVISOR_INTERVAL)
    running = api.state.supervisor = supervisor.start_async()  # an asyncio.Task of this loop
    try:
        yield
    finally:
        supervisor.stop()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await tasks.app.aclose()  # this loop's connections, then the app's


api = FastAPI(title="balloons FastAPI example", lifespan=lifespan)


class CountRequest(BaseModel):
    text: str


class ShoutRequest(BaseModel):
    text: str


def _job(job_id: str) -> balloons.Job[Any]:
    try:
        return tasks.app.job(job_id)
    except balloons.JobNotFound:  # not a job id at all
        raise HTTPException(400, f"malformed job id {job_id!r}") from None


@api.post("/count", status_code=202)
async def count(req: CountRequest) -> dict[str, str]:
    job = await tasks.word_count.submit_async(req.text)
    return {"id": job.id}


@api.post("/shout", status_code=202)
async def shout(req: ShoutRequest) -> dict[str, str]:
    job = await tasks.shout.submit_async(req.text)
    return {"id": job.id}


@api.get("/jobs/{job_id}")
async def status(job_id: str) -> dict[str, Any]:
    job = _job(job_id)
    try:
        info = await job.info_async()
    except balloons.JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    return {"id": job.id, "status": info.status.value, "progress": await job.progress_async()}


@api.get("/jobs/{job_id}/result")
async def result(job_id: str, wait: float = 0.0) -> dict[str, Any]:
    job = _job(job_id)
    try:
        value = await job.result_async(timeout=min(max(wait, 0.0), MAX_WAIT))
    except balloons.JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    except balloons.ResultTimeout:
        raise HTTPException(409, f"job {job_id} has not ended yet") from None
    except balloons.JobFailed as exc:
        return {"id": job.id, "status": exc.status, "reason": exc.reason, "error": str(exc)}
    return {"id": job.id, "status": "SUCCEEDED", "result": value}
