"""``POST /fib/`` submits a job, ``GET /jobs/<id>/`` reports it (``?wait=S`` waits for it)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import balloons

from . import tasks

MAX_WAIT = 30.0  # the longest a request may wait for a result


@csrf_exempt  # a JSON API for scripts; a form-based view keeps Django's CSRF check
@require_POST
def fib(request: HttpRequest) -> JsonResponse:
    try:
        n = json.loads(request.body)["n"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "expected a JSON object with an integer 'n'"}, status=400)
    if not isinstance(n, int) or isinstance(n, bool):
        return JsonResponse({"error": f"'n' must be an integer, got {n!r}"}, status=400)
    job = tasks.fibonacci.submit(n)
    return JsonResponse({"id": job.id}, status=202)


@require_GET
def job(request: HttpRequest, job_id: str) -> JsonResponse:
    try:
        handle = tasks.app.job(job_id)
    except balloons.JobNotFound:  # not a job id at all
        return JsonResponse({"error": f"malformed job id {job_id!r}"}, status=400)
    try:
        wait = min(max(float(request.GET.get("wait", "0")), 0.0), MAX_WAIT)
    except ValueError:
        return JsonResponse({"error": "'wait' must be a number of seconds"}, status=400)
    body: dict[str, Any] = {"id": handle.id}
    try:
        body.update(status="SUCCEEDED", result=handle.result(timeout=wait))
    except balloons.JobNotFound:
        return JsonResponse({"error": f"no job {job_id}"}, status=404)
    except balloons.ResultTimeout:
        body.update(status=handle.status().value)
    except balloons.JobFailed as exc:
        body.update(status=exc.status, reason=exc.reason, error=str(exc))
    return JsonResponse(body)
